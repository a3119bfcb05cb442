"""95 % intervals for the chapters' comparative numbers (issue 12: no verdict without a difference beyond noise).

* :func:`wilson_ci`: a proportion k/n (precision, recall, a hit rate);
* :func:`newcombe_diff_ci`: the difference of two independent proportions
  (e.g. unstable runs of a variant vs. the reference), from the two Wilson intervals;
* :func:`bootstrap_diff_ci`: mean(a) - mean(b) by a percentile bootstrap,
  paired (the same trials, walks or test items under both conditions) or not;
  :func:`bootstrap_mean_ci`: a mean over independent units (e.g. planted groups);
  :func:`bootstrap_stat_ci`: any statistic of per-unit measurements (a ratio of means, say);
* :func:`t_mean_ci`: a mean over a few training seeds (Student t);
  :func:`welch_summary_ci`: the Welch interval of a difference of two such means from their summaries
  (mean, standard deviation, seeds), at any level (a rule that corrects for several looks needs 97.5 %).
* :func:`draws_ci`: a mean over repeated draws of a whole experiment (e.g. §5.2's label draws),
  mean +- 1.96 standard deviations over the draws, as the paper's authors report it.
* :func:`nested_bootstrap`: a statistic of several GAN seeds' models, each measured on its own units
  (test images, label draws, walks): seeds resampled, then units within each seed, so the interval
  holds the seed-to-seed spread as well as the units' (issue 22); :func:`record_over_seeds` writes it
  with each seed's value (``<name>_s<seed>``).

The convention of the results registry: a result ``X`` may come with
``X_ci_lo`` and ``X_ci_hi``; a comparison is recorded as ``<a>_minus_<b>``
(with its own ``_ci_lo``/``_ci_hi``). :func:`record_with_ci` writes all three.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

__all__ = ["Z95", "wilson_ci", "newcombe_diff_ci", "bootstrap_diff_ci", "bootstrap_mean_ci", "bootstrap_stat_ci",
           "t_mean_ci", "welch_diff_ci", "welch_summary_ci", "z_of", "spread_interval", "draws_ci", "record_with_ci",
           "nested_bootstrap", "record_over_seeds", "seeds_phrase"]

Z95 = 1.959963984540054


def wilson_ci(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n``; (0, 1) when ``n`` is 0 (nothing observed)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # Exact at the ends: the Wilson bounds for k = 0 or k = n are 0 and 1 up to rounding.
    return (0.0 if k == 0 else max(0.0, mid - half)), (1.0 if k == n else min(1.0, mid + half))


def newcombe_diff_ci(k1: float, n1: int, k2: float, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """``k1/n1 - k2/n2`` and its 95 % interval (Newcombe's hybrid score method, method 10), for independent samples."""
    if n1 == 0 or n2 == 0:
        raise ValueError("both proportions need at least one observation")
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_ci(k1, n1, z)
    l2, u2 = wilson_ci(k2, n2, z)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def bootstrap_diff_ci(a: Sequence[float], b: Sequence[float], paired: bool = True, n_boot: int = 4000,
                      seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` and its percentile-bootstrap interval.

    ``paired``: ``a[i]`` and ``b[i]`` were measured on the same unit (trial, walk,
    test image), so units are resampled together and their shared noise cancels;
    otherwise ``a`` and ``b`` are resampled independently. Seeded, so a chapter's
    interval is as reproducible as its other numbers.
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if len(a) == 0 or len(b) == 0:
        raise ValueError("bootstrap_diff_ci needs at least one value on each side")
    if paired and len(a) != len(b):
        raise ValueError(f"paired samples must have the same length, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    if paired:
        d = a - b
        boot = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    else:
        boot = (a[rng.integers(0, len(a), size=(n_boot, len(a)))].mean(1)
                - b[rng.integers(0, len(b), size=(n_boot, len(b)))].mean(1))
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return float(a.mean() - b.mean()), float(lo), float(hi)


def bootstrap_mean_ci(values: Sequence[float], n_boot: int = 4000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """``mean(values)`` and its percentile-bootstrap interval (units resampled with replacement; seeded)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if len(v) == 0:
        raise ValueError("bootstrap_mean_ci needs at least one value")
    boot = v[np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return float(v.mean()), float(lo), float(hi)


def bootstrap_stat_ci(stat: Callable[..., float], *arrays: Sequence[float], n_boot: int = 4000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """``stat(*arrays)`` and its percentile-bootstrap interval, resampling the units (rows shared by all
    ``arrays``, e.g. per-sample measurements under several treatments) together; for statistics that are
    not a plain mean, such as a ratio of means."""
    arrs = [np.asarray(a, dtype=np.float64) for a in arrays]
    if not arrs or len(arrs[0]) == 0 or any(len(a) != len(arrs[0]) for a in arrs):
        raise ValueError("bootstrap_stat_ci needs non-empty arrays of equal length")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(arrs[0]), size=(n_boot, len(arrs[0])))
    boot = np.array([stat(*(a[i] for a in arrs)) for i in idx])
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(boot, [tail, 100 - tail])
    return float(stat(*arrs)), float(lo), float(hi)


def t_mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """``mean(values)`` and its Student-t interval: for a handful of independent units (training seeds), where
    a bootstrap would understate the spread."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64).ravel()
    if len(v) < 2:
        raise ValueError("t_mean_ci needs at least two values (seeds)")
    half = t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def z_of(level: float) -> float:
    """The two-sided normal quantile of ``level`` (0.95 -> 1.96, 0.975 -> 2.24)."""
    from scipy.stats import norm

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(norm.ppf(0.5 + level / 2))


def welch_summary_ci(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int,
                     level: float = 0.95) -> tuple[float, float, float]:
    """``mean_a - mean_b`` and its Welch interval at ``level`` from the two sides' summaries (mean, sample
    standard deviation with ddof 1, number of seeds): :func:`welch_diff_ci` for results recorded without
    their seeds. NaN bounds when a side has fewer than two seeds or both spreads are zero."""
    from scipy.stats import t

    d = float(mean_a - mean_b)
    if n_a < 2 or n_b < 2:
        return d, math.nan, math.nan
    va, vb = sd_a ** 2 / n_a, sd_b ** 2 / n_b
    se2 = va + vb
    if not se2 > 0:
        return d, math.nan, math.nan
    df = se2 ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    half = float(t.ppf(0.5 + level / 2, df)) * math.sqrt(se2)
    return d, d - half, d + half


def welch_diff_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` and its Welch interval (unequal variances): two conditions trained with a handful
    of seeds each. With two or three seeds the interval is wide, as it should be; an interval that excludes
    zero is evidence, one that does not is *within noise*. NaN bounds when a side has fewer than two values
    or both spreads are zero."""
    from scipy.stats import t

    x, y = (np.asarray(v, dtype=np.float64).ravel() for v in (a, b))
    if len(x) == 0 or len(y) == 0:
        raise ValueError("welch_diff_ci needs values on both sides")
    d = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return d, math.nan, math.nan
    # Welch's formula written out (what scipy's ttest_ind(equal_var=False).confidence_interval computes): scipy's
    # version warns on stderr ("precision loss ... catastrophic cancellation") when a side's seeds agree to rounding
    va, vb = (_var(v) / len(v) for v in (x, y))
    se2 = va + vb
    if se2 == 0:
        return d, math.nan, math.nan
    df = se2 ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1))
    half = float(t.ppf(0.5 + level / 2, df)) * math.sqrt(se2)
    return d, d - half, d + half


def _var(v: np.ndarray) -> float:
    """The sample variance (ddof 1), exactly 0 when the values agree to rounding (a spread of float noise)."""
    return 0.0 if np.ptp(v) <= 1e-12 * max(1.0, float(np.abs(v).max())) else float(v.var(ddof=1))


def spread_interval(diff: float, sd_a: float, sd_b: float, k: float = 2.0) -> tuple[float, float] | None:
    """``diff -+ k x hypot(sd_a, sd_b)``: the fallback of :func:`welch_diff_ci` when a side has one seed.

    Two conditions' seed spreads (standard deviations, not standard errors), so conservative: the
    spread of a difference of two single runs, ``k`` times (2 for a 95 % look; a rule that corrects for
    several looks passes a larger ``k``). None when neither spread is known (> 0): then there is no
    interval and no verdict beyond "no interval".
    """
    sd = math.hypot(sd_a or 0.0, sd_b or 0.0)
    if not (sd > 0 and math.isfinite(diff)):
        return None
    return diff - k * sd, diff + k * sd


def draws_ci(values: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """``mean(values)`` and ``mean -+ z * std`` over repeated draws of an experiment.

    The spread of the draws themselves, not a standard error: what the authors' §5.2 analysis script
    (``svhn_semisup_analysis.py``) reports over its label draws. Population std (``np.std``).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if len(v) == 0:
        raise ValueError("draws_ci needs at least one value")
    if not np.isfinite(v).all():
        raise ValueError("draws_ci got a non-finite value")
    m, s = float(v.mean()), float(v.std())
    return m, m - z * s, m + z * s


def record_with_ci(res, name: str, value: float, lo: float, hi: float, *, digits: int | None = None, **kw) -> float:
    """Record ``name`` and ``name_ci_lo``/``name_ci_hi`` (same data set, unit and claim) in a ResultsRecorder."""
    r = (lambda v: round(float(v), digits)) if digits is not None else float
    note = kw.pop("note", "")
    v = res.record(name, r(value), note=note, **kw)
    res.record(f"{name}_ci_lo", r(lo), note=f"95% interval of {name}", **kw)
    res.record(f"{name}_ci_hi", r(hi), note=f"95% interval of {name}", **kw)
    return v


def _mean_or_diff(*xs: np.ndarray) -> float:
    """The default statistic: the mean of one array, or mean(first) - mean(second) of two."""
    if len(xs) == 1:
        return float(np.mean(xs[0]))
    if len(xs) == 2:
        return float(np.mean(xs[0]) - np.mean(xs[1]))
    raise ValueError("give a stat for more than two arrays per seed")


def nested_bootstrap(per_seed: Sequence, stat: Callable[..., float] | None = None, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """A statistic over several GAN seeds and its two-level percentile-bootstrap interval.

    ``per_seed[i]`` is seed i's units: an array whose rows are units (test images, label draws, walks), or a
    tuple of arrays that are resampled independently of each other (an unpaired comparison within the seed;
    rows of a 2-d array are resampled together: a paired one). ``stat(*arrays)`` -> float; default the mean
    of one array or the difference of the means of two. The point estimate is the mean over seeds of each
    seed's statistic. Each replicate draws the seeds with replacement, then resamples each drawn seed's
    units, and averages the statistic over the drawn seeds: the interval holds the seed-to-seed spread (the
    training noise a single model hides) as well as the units' sampling noise. With identical seeds it is
    the plain bootstrap of the pooled units; with few seeds the seed level's percentile interval is, like
    any bootstrap of few clusters, on the narrow side (tests/test_intervals.py measures its coverage).
    """
    seeds = [tuple(np.asarray(a, dtype=np.float64) for a in (u if isinstance(u, tuple) else (u,))) for u in per_seed]
    if not seeds:
        raise ValueError("nested_bootstrap needs at least one seed")
    if any(len(a) == 0 for u in seeds for a in u) or len({len(u) for u in seeds}) != 1:
        raise ValueError("every seed needs the same number of non-empty arrays")
    stat = stat or _mean_or_diff
    rng = np.random.default_rng(seed)
    k = len(seeds)
    boot = np.empty(n_boot)
    for b in range(n_boot):
        drawn = rng.integers(0, k, size=k)
        boot[b] = np.mean([stat(*(a[rng.integers(0, len(a), size=len(a))] for a in seeds[j])) for j in drawn])
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(boot, [tail, 100 - tail])
    return float(np.mean([stat(*u) for u in seeds])), float(lo), float(hi)


def seeds_phrase(seeds: Sequence[int]) -> str:
    """"over 3 GAN seeds" / "over 1 GAN seed": how a verdict sentence names what its number rests on."""
    return f"over {len(seeds)} GAN seed{'s' if len(seeds) != 1 else ''}"


def record_over_seeds(res, name: str, per_seed: dict[int, float], point: float, lo: float | None = None,
                      hi: float | None = None, *, digits: int | None = None, **kw) -> float:
    """Each seed's value as ``<name>_s<seed>`` and the across-seed ``point`` with its interval as ``name`` (with
    ``name_ci_lo``/``name_ci_hi``, :func:`record_with_ci`); the note lists the seeds' values. Without ``lo`` and
    ``hi`` (a number no verdict judges, such as a rate beside its difference) only the mean and the seeds'."""
    r = (lambda v: round(float(v), digits)) if digits is not None else float
    note = kw.pop("note", "")
    for s, v in per_seed.items():
        res.record(f"{name}_s{s}", r(v), note=f"GAN seed {s} of {name}", **kw)
    each = ", ".join(f"seed {s}: {float(v):.4g}" for s, v in per_seed.items())
    note = (f"{note}; " if note else "") + f"mean {seeds_phrase(list(per_seed))} ({each})"
    if lo is None or hi is None:
        return res.record(name, r(point), note=note, **kw)
    return record_with_ci(res, name, point, lo, hi, digits=digits, note=note, **kw)
