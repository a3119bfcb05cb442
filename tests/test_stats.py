"""Tests for dcgan.stats: bootstrap intervals over test images, paired differences, draws, verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from dcgan import stats
from dcgan.results import ResultsRecorder


def test_bootstrap_ci_matches_binomial_width_and_is_seeded():
    rng = np.random.default_rng(0)
    correct = rng.random(4000) < 0.8
    lo, hi = stats.bootstrap_ci(correct, seed=1)
    p = correct.mean()
    assert lo < p < hi
    half = 1.96 * np.sqrt(p * (1 - p) / correct.size)  # normal approximation of the binomial
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert stats.bootstrap_ci(correct, seed=1) == (lo, hi)
    assert stats.bootstrap_ci(correct, seed=2) != (lo, hi)


def test_bootstrap_ci_degenerate_and_errors():
    assert stats.bootstrap_ci(np.ones(50)) == (1.0, 1.0)
    with pytest.raises(ValueError, match="empty"):
        stats.bootstrap_ci([])
    with pytest.raises(ValueError, match="non-finite"):
        stats.bootstrap_ci([1.0, np.nan])
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_ci([1, 0], level=1.5)


def test_paired_interval_is_narrower_than_unpaired():
    # two classifiers that agree on most images: the paired interval of their difference is narrow
    rng = np.random.default_rng(0)
    a = rng.random(3000) < 0.85
    b = a.copy()
    flip = rng.choice(3000, 60, replace=False)
    b[flip] = ~b[flip]
    lo, hi = stats.paired_diff_ci(a, b)
    d = a.mean() - b.mean()
    assert lo <= d <= hi
    la, ha = stats.bootstrap_ci(a, seed=5)
    lb, hb = stats.bootstrap_ci(b, seed=6)
    assert hi - lo < 0.5 * ((ha - la) + (hb - lb)) / 2
    with pytest.raises(ValueError, match="same images"):
        stats.paired_diff_ci(a, b[:10])


def test_paired_difference_detects_a_real_gap():
    rng = np.random.default_rng(1)
    b = rng.random(5000) < 0.8
    a = b | (rng.random(5000) < 0.2)  # a is right wherever b is, and on some more images
    lo, hi = stats.paired_diff_ci(a, b)
    assert lo > 0
    assert stats.verdict(lo, hi) == "holds"


def test_draws_ci_is_mean_pm_196_std():
    v = [0.20, 0.22, 0.24]
    lo, hi = stats.draws_ci(v)
    assert (lo + hi) / 2 == pytest.approx(0.22)
    assert (hi - lo) / 2 == pytest.approx(1.96 * np.std(v))


def test_verdict_words():
    assert stats.verdict(0.1, 0.3) == "holds"
    assert stats.verdict(-0.3, -0.1) == "does not hold"
    assert stats.verdict(-0.1, 0.2) == "inconclusive (within noise)"
    with pytest.raises(ValueError, match="reversed"):
        stats.verdict(0.2, 0.1)


def test_record_ci_writes_three_results(tmp_path):
    res = ResultsRecorder("04_x", "smoke", 0, directory=tmp_path)
    v, lo, hi = stats.record_ci(res, "acc", 91.234, (90.1111, 92.5), dataset="d", unit="%", claim="§5.1",
                                paper=82.8, note="main")
    assert (v, lo, hi) == (91.23, 90.11, 92.5)
    r = res.results
    assert r["acc"].paper == 82.8 and r["acc"].note == "main"
    assert r["acc_ci_lo"].unit == r["acc_ci_hi"].unit == "%"
    assert r["acc_ci_lo"].dataset == "d" and r["acc_ci_hi"].claim == "§5.1"
    assert r["acc_ci_lo"].paper is None
