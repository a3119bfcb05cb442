"""Does a generator copy its training images? The lower tail of the nearest-neighbour distances (paper §4.1).

§4.1 argues from samples that a DCGAN trained one epoch with a small learning rate does not memorise.
Chapter 02 measures it: the distance of every sample to its nearest training image, against the same
distance for held-out test images. A median of those distances (or the ratio of two medians) cannot see a
generator that copies a tenth of its samples and draws the rest well; the copies sit in the *lower tail*.
So :func:`near_copies` counts *near-copies*: samples closer to a training image than the 1st percentile of
the training images' own distances to their nearest other training image. Held-out test images give the
reference share (about 1 % when they are drawn like the training images): a generator that copies makes
more of its samples near-copies than that. Each share carries its exact binomial (Clopper-Pearson) 95 %
interval, and their difference the Newcombe interval (:func:`dcgan.intervals.newcombe_diff_ci`).

The claim "samples are not memorised" (``dcgan/claims.yaml``, rule ``no_excess`` of
:mod:`dcgan.report`) is judged on that difference, samples minus test images, in points:
*not reproduced* when its interval lies above 0 (more near-copies than new real images, beyond noise);
*reproduced* when it does not and its upper bound is under :data:`MARGIN` (3 points: the test could
see a generator that copies 3 % of its samples more than real data would); *inconclusive (within noise)*
otherwise (too few samples to rule such a share out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["NearCopies", "near_copies", "rule_text", "QUANTILE", "MARGIN"]

QUANTILE = 0.01  # near-copy: closer than this quantile of the train-to-train nearest-neighbour distances
MARGIN = 3.0  # points: the excess share of near-copies the claim tolerates (its rule's margin)


def _as_np(d) -> np.ndarray:
    return (d.detach().cpu().numpy() if isinstance(d, torch.Tensor) else np.asarray(d)).astype(np.float64).ravel()


def _exact_ci(k: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson 95 % interval of ``k / n``."""
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class NearCopies:
    """Near-copies among samples and among held-out test images, below one distance ``threshold``."""

    threshold: float  # the QUANTILE of the train-to-train nearest-neighbour distances
    quantile: float
    k_sample: int
    n_sample: int
    k_test: int
    n_test: int
    sample_ci: tuple[float, float]  # Clopper-Pearson 95 % of k_sample / n_sample
    test_ci: tuple[float, float]
    diff_ci: tuple[float, float]  # Newcombe 95 % of the difference of the two shares

    @property
    def sample_share(self) -> float:
        return self.k_sample / self.n_sample

    @property
    def test_share(self) -> float:
        return self.k_test / self.n_test

    @property
    def diff(self) -> float:
        return self.sample_share - self.test_share

    def verdict(self, margin: float = MARGIN) -> str:
        """The claim's verdict by the results page's rule (:func:`dcgan.report._no_excess`), in points."""
        from .report import no_excess_verdict

        return no_excess_verdict(100 * self.diff_ci[0], 100 * self.diff_ci[1], margin)

    def record(self, res, name: str, *, dataset: str) -> None:
        """Record ``<name>_nn_copies`` (samples), ``<name>_nn_copies_test`` and ``<name>_nn_copies_minus_test``
        in percent / points with their 95 % intervals, and the distance threshold, in a ResultsRecorder."""
        from .intervals import record_with_ci

        what = f"closer to a training image than the {100 * self.quantile:g} % quantile of train-to-train distances"
        record_with_ci(res, f"{name}_nn_copies", 100 * self.sample_share, *(100 * c for c in self.sample_ci), digits=2,
                       dataset=dataset, unit="%", claim="§4.1",
                       note=f"near-copies: {self.k_sample}/{self.n_sample} samples {what}; Clopper-Pearson interval")
        record_with_ci(res, f"{name}_nn_copies_test", 100 * self.test_share, *(100 * c for c in self.test_ci),
                       digits=2, dataset=dataset, unit="%", claim="§4.1",
                       note=f"{self.k_test}/{self.n_test} held-out test images {what}; Clopper-Pearson interval")
        record_with_ci(res, f"{name}_nn_copies_minus_test", 100 * self.diff, *(100 * c for c in self.diff_ci), digits=2,
                       dataset=dataset, unit="points", claim="§4.1",
                       note="share of near-copies among samples minus among held-out test images; Newcombe interval")
        res.record(f"{name}_nn_copy_threshold", round(self.threshold, 4), dataset=dataset, unit="L2 (pixels in [-1,1])",
                   claim="§4.1", note=f"the {100 * self.quantile:g} % quantile of train-to-train NN distances")


def rule_text(margin: float = MARGIN) -> str:
    """The claim's rule in words, for the chapter's prose (the rule itself is :func:`dcgan.report.no_excess_verdict`)."""
    # no quotes or apostrophes: the chapter glues it as text, whose repr would escape them
    return (f"the claim that samples are not memorised is not reproduced when the share of near-copies among the samples "
            f"exceeds the share among test images beyond noise (the 95% Newcombe interval of the difference lies above 0), "
            f"reproduced when it does not and the interval rules out an excess of {margin:g} points, and "
            f"inconclusive (within noise) otherwise")


def near_copies(d_sample, d_train, d_test, quantile: float = QUANTILE) -> NearCopies:
    """Near-copies among samples and held-out test images.

    ``d_sample``, ``d_train``, ``d_test``: each sample's, training image's (to its nearest *other* training
    image) and test image's distance to its nearest training image. The threshold is the ``quantile`` of
    ``d_train``; a distance strictly below it is a near-copy (an exact copy, at 0, always is).
    """
    from .intervals import newcombe_diff_ci

    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    s, t, te = _as_np(d_sample), _as_np(d_train), _as_np(d_test)
    if not (len(s) and len(t) and len(te)):
        raise ValueError(f"near_copies needs distances on every side, got {len(s)} samples, {len(t)} training "
                         f"and {len(te)} test images (one is empty)")
    threshold = float(np.quantile(t, quantile))
    ks, kt = int((s < threshold).sum()), int((te < threshold).sum())
    _, lo, hi = newcombe_diff_ci(ks, len(s), kt, len(te))
    return NearCopies(threshold, quantile, ks, len(s), kt, len(te), _exact_ci(ks, len(s)), _exact_ci(kt, len(te)),
                      (lo, hi))
