"""How sure is a number: 95 % intervals for the book's accuracies and for the differences between them.

Two sources of noise, two intervals:

* the **test images**: an accuracy on 10,000 test images would differ on another 10,000. A
  percentile bootstrap over the test images (:func:`bootstrap_ci`) resamples them with replacement.
  A *comparison* of two classifiers scored on the same images is resampled **paired**
  (:func:`paired_diff_ci`): both see the same resampled images, so what they share (easy and hard
  images) cancels and the interval of the difference is much narrower than two separate ones.
* the **label draws** (§5.2 draws its 1000 labels several times): mean +- 1.96 standard deviations
  over the draws (:func:`draws_ci`), as the authors' ``svhn_semisup_analysis.py`` reports.

:func:`verdict` turns an interval of a difference into words: "holds" when it lies above zero,
"does not hold" when below, "inconclusive (within noise)" when it contains zero.
:func:`record_ci` records a value with its interval in the results registry as three results
(``name``, ``name_ci_lo``, ``name_ci_hi``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["bootstrap_ci", "paired_diff_ci", "draws_ci", "verdict", "record_ci"]


def _check(values, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} holds non-finite values")
    return v


def bootstrap_ci(correct, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                 block: int = 100) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(correct)`` over the test images.

    ``correct``: one value per test image (1/0 for right/wrong, or a fraction, e.g. the share of
    label draws that got the image right). ``n_boot`` resamples of the images with replacement,
    drawn with ``seed`` (the same seed resamples the same images for every classifier).
    Returns ``(lo, hi)`` in the unit of ``correct`` (a fraction for 0/1 values).
    """
    v = _check(correct, "correct")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 10:
        raise ValueError(f"n_boot must be >= 10, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = v.size
    means = np.empty(n_boot)
    for i in range(0, n_boot, block):  # a block of resamples at a time bounds the index matrix's memory
        b = min(block, n_boot - i)
        means[i : i + b] = v[rng.integers(0, n, size=(b, n))].mean(1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


def paired_diff_ci(correct_a, correct_b, *, n_boot: int = 1000, level: float = 0.95,
                   seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap interval of ``mean(correct_a) - mean(correct_b)`` on the same test images.

    Both classifiers are scored on the same resampled images (the resampling is of the per-image
    differences), so the interval measures the difference, not the two accuracies' own noise.
    """
    a, b = _check(correct_a, "correct_a"), _check(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in length ({a.size} vs {b.size}): score both on the same images")
    return bootstrap_ci(a - b, n_boot=n_boot, level=level, seed=seed)


def draws_ci(values, z: float = 1.96) -> tuple[float, float]:
    """``mean -+ z * std`` over label draws (population std, as ``np.std`` in the authors' script)."""
    v = _check(values, "values")
    m, s = float(v.mean()), float(v.std())
    return m - z * s, m + z * s


def verdict(lo: float, hi: float, *, holds: str = "holds", fails: str = "does not hold",
            noise: str = "inconclusive (within noise)") -> str:
    """Words for a claim "the difference is > 0" given its interval ``(lo, hi)``."""
    if lo > hi:
        raise ValueError(f"interval ({lo}, {hi}) is reversed")
    if lo > 0:
        return holds
    if hi < 0:
        return fails
    return noise


def record_ci(res, name: str, value: float, ci: tuple[float, float], *, digits: int = 2, **kw) -> tuple[float, float, float]:
    """Record ``name`` and its interval as ``name_ci_lo`` / ``name_ci_hi`` (same unit, data set, claim).

    ``res`` is the chapter's :class:`dcgan.results.ResultsRecorder`; ``kw`` goes to every
    ``res.record`` (``dataset``, ``unit``, ``claim``, ...; ``paper`` and ``note`` only to ``name``).
    Returns the three recorded (rounded) values.
    """
    lo, hi = ci
    common = {k: v for k, v in kw.items() if k not in ("paper", "note")}
    v = res.record(name, round(float(value), digits), **kw)
    note = f"95% interval of {name}"
    lo = res.record(f"{name}_ci_lo", round(float(lo), digits), note=note, **common)
    hi = res.record(f"{name}_ci_hi", round(float(hi), digits), note=note, **common)
    return v, lo, hi
