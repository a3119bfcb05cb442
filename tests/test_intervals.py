"""dcgan.intervals: Wilson, Newcombe and bootstrap intervals against known values."""

import math

import numpy as np
import pytest

from dcgan import intervals as I
from dcgan.intervals import bootstrap_diff_ci, newcombe_diff_ci, record_with_ci, t_mean_ci, wilson_ci
from dcgan.results import ResultsRecorder, load_results


def test_wilson_known_values():
    lo, hi = wilson_ci(81, 263)  # Newcombe (1998), table I: 0.2553 to 0.3662
    assert lo == pytest.approx(0.2553, abs=1e-4) and hi == pytest.approx(0.3662, abs=1e-4)
    assert wilson_ci(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_ci(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    assert wilson_ci(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_ci(3, 2)


def test_newcombe_known_values():
    d, lo, hi = newcombe_diff_ci(56, 70, 48, 80)  # Newcombe (1998b), example (a): 0.0524 to 0.3339
    assert d == pytest.approx(0.2) and lo == pytest.approx(0.0524, abs=1e-4) and hi == pytest.approx(0.3339, abs=1e-4)
    d, lo, hi = newcombe_diff_ci(3, 3, 0, 3)
    assert d == 1.0 and lo > 0  # all three runs unstable against none: beyond noise
    d, lo, hi = newcombe_diff_ci(2, 3, 0, 3)
    assert lo < 0 < hi  # two of three: within noise at n = 3


def test_bootstrap_paired_is_tighter_when_units_share_noise():
    rng = np.random.default_rng(0)
    unit = rng.normal(0, 5, 200)  # per-unit difficulty, shared by both conditions
    a, b = unit + 1.0 + rng.normal(0, 0.5, 200), unit + rng.normal(0, 0.5, 200)
    d, lo, hi = bootstrap_diff_ci(a, b, paired=True)
    assert lo < d < hi and 0 < lo and d == pytest.approx(1.0, abs=0.2)
    _, ulo, uhi = bootstrap_diff_ci(a, b, paired=False)
    assert ulo < 0 < uhi  # the same numbers, unpaired: within noise
    assert bootstrap_diff_ci(a, b, seed=3) == bootstrap_diff_ci(a, b, seed=3)  # seeded
    with pytest.raises(ValueError, match="same length"):
        bootstrap_diff_ci([1, 2], [1], paired=True)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_diff_ci([], [1], paired=False)


def test_record_with_ci_follows_the_registry_convention(tmp_path):
    res = ResultsRecorder("06_x", "smoke", 0, tmp_path)
    v = record_with_ci(res, "emoji_arith_latent_minus_pixel", 12.345, 1.234, 20.0, digits=1, dataset="emoji",
                       unit="points", claim="§6.3.2")
    assert v == 12.3
    got = {r.name: (r.value, r.unit, r.claim) for r in load_results(tmp_path)}
    assert got == {"emoji_arith_latent_minus_pixel": (12.3, "points", "§6.3.2"),
                   "emoji_arith_latent_minus_pixel_ci_lo": (1.2, "points", "§6.3.2"),
                   "emoji_arith_latent_minus_pixel_ci_hi": (20.0, "points", "§6.3.2")}


def test_bootstrap_mean_ci():
    from dcgan.intervals import bootstrap_mean_ci

    m, lo, hi = bootstrap_mean_ci([0.0, 1.0] * 50)
    assert m == 0.5 and 0.38 < lo < 0.45 and 0.55 < hi < 0.62
    assert bootstrap_mean_ci([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_mean_ci([])


def test_bootstrap_stat_ci_resamples_units_together():
    from dcgan.intervals import bootstrap_stat_ci

    a = np.arange(1.0, 51.0)
    v, lo, hi = bootstrap_stat_ci(lambda x, y: (x - y).mean(), a, a - 2.0)
    assert (v, lo, hi) == (2.0, 2.0, 2.0)  # paired units: the shared spread cancels
    v, lo, hi = bootstrap_stat_ci(lambda x, y: x.mean() / y.mean(), a, 2 * a)
    assert v == lo == hi == pytest.approx(0.5)
    with pytest.raises(ValueError, match="equal length"):
        bootstrap_stat_ci(np.mean, [1.0, 2.0], [1.0])


def test_t_mean_ci_over_seeds():
    m, lo, hi = t_mean_ci([1.0, 2.0, 3.0])
    # mean 2, sd 1, n 3: half-width t(0.975, 2) / sqrt(3) = 4.303 / 1.732
    assert m == 2.0 and hi - m == pytest.approx(4.3027 / 3 ** 0.5, rel=1e-4) and m - lo == pytest.approx(hi - m)
    assert t_mean_ci([5.0, 5.0]) == (5.0, 5.0, 5.0)
    with pytest.raises(ValueError, match="two values"):
        t_mean_ci([1.0])

# ---- intervals over test images and label draws (chapters 04/05; were in tests/test_stats.py)

def test_bootstrap_mean_ci_of_hits_matches_binomial_width_and_is_seeded():
    from dcgan.intervals import bootstrap_mean_ci

    rng = np.random.default_rng(0)
    correct = rng.random(4000) < 0.8
    p, lo, hi = bootstrap_mean_ci(correct, n_boot=1000, seed=1)
    assert lo < p < hi and p == correct.mean()
    half = 1.96 * np.sqrt(p * (1 - p) / correct.size)  # normal approximation of the binomial
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert bootstrap_mean_ci(correct, n_boot=1000, seed=1) == (p, lo, hi)
    assert bootstrap_mean_ci(correct, n_boot=1000, seed=2) != (p, lo, hi)


def test_paired_interval_of_two_classifiers_is_narrower_than_their_own():
    # two classifiers that agree on most test images: the paired interval of their difference is narrow
    from dcgan.intervals import bootstrap_mean_ci

    rng = np.random.default_rng(0)
    a = rng.random(3000) < 0.85
    b = a.copy()
    flip = rng.choice(3000, 60, replace=False)
    b[flip] = ~b[flip]
    d, lo, hi = bootstrap_diff_ci(a, b, n_boot=1000)
    assert lo <= d <= hi and d == pytest.approx(a.mean() - b.mean())
    _, la, ha = bootstrap_mean_ci(a, n_boot=1000, seed=5)
    _, lb, hb = bootstrap_mean_ci(b, n_boot=1000, seed=6)
    assert hi - lo < 0.5 * ((ha - la) + (hb - lb)) / 2


def test_paired_difference_detects_a_real_gap():
    from dcgan.report import REPRODUCED, interval_verdict

    rng = np.random.default_rng(1)
    b = rng.random(5000) < 0.8
    a = b | (rng.random(5000) < 0.2)  # a is right wherever b is, and on some more images
    d, lo, hi = bootstrap_diff_ci(a, b, n_boot=1000)
    assert lo > 0 and interval_verdict(lo, hi) == REPRODUCED


def test_draws_ci_is_mean_pm_196_std():
    from dcgan.intervals import draws_ci

    v = [0.20, 0.22, 0.24]
    m, lo, hi = draws_ci(v)
    assert m == pytest.approx(0.22) and (lo + hi) / 2 == pytest.approx(0.22)
    assert (hi - lo) / 2 == pytest.approx(1.96 * np.std(v), rel=1e-4)
    assert draws_ci([0.3]) == (0.3, 0.3, 0.3)
    with pytest.raises(ValueError, match="at least one"):
        draws_ci([])
    with pytest.raises(ValueError, match="non-finite"):
        draws_ci([0.1, np.nan])


def test_welch_diff_ci_matches_the_formula_and_widens_with_few_seeds():
    from scipy.stats import t as student

    a, b = [12.0, 14.5, 13.1], [10.2, 11.0]
    d, lo, hi = I.welch_diff_ci(a, b)
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 2
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 1)  # Welch-Satterthwaite
    half = student.ppf(0.975, df) * np.sqrt(va + vb)
    assert d == pytest.approx(np.mean(a) - np.mean(b))
    assert (lo, hi) == pytest.approx((d - half, d + half))
    # the same means from more seeds: a narrower interval that now excludes zero
    _, lo6, hi6 = I.welch_diff_ci(a * 4, b * 6)
    assert lo < 0 < lo6 and hi6 - lo6 < hi - lo
    assert all(np.isnan(x) for x in I.welch_diff_ci([1.0], [2.0, 3.0])[1:])  # one seed: no interval
    with pytest.raises(ValueError, match="both sides"):
        I.welch_diff_ci([], [1.0])


def test_welch_diff_ci_is_scipys_and_silent_when_seeds_agree_to_rounding():
    """Chapter 09 under the paper profile's toy scale printed scipy's "catastrophic cancellation" warning into the
    book (two seeds whose errors agreed to float rounding); the interval is scipy's, without the warning."""
    import warnings

    from scipy.stats import ttest_ind

    rng = np.random.default_rng(0)
    a, b = rng.normal(5, 1, 4), rng.normal(3, 2, 3)
    ci = ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert I.welch_diff_ci(a, b)[1:] == pytest.approx((ci.low, ci.high))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails
        d, lo, hi = I.welch_diff_ci([92.4, 92.4 + 1e-14], [90.53, 90.53 - 1e-14])
        assert d == pytest.approx(1.87) and np.isnan(lo) and np.isnan(hi)  # no spread on either side
        d, lo, hi = I.welch_diff_ci([92.4, 92.4 + 1e-14], [90.0, 91.0, 92.0])  # one side constant: still an interval
        assert lo < d < hi


def test_spread_interval_is_twice_the_combined_spread_and_none_without_one():
    from dcgan.intervals import spread_interval

    lo, hi = spread_interval(5.0, 3.0, 4.0)  # hypot(3, 4) = 5
    assert (lo, hi) == pytest.approx((-5.0, 15.0))
    assert spread_interval(5.0, 0.0, 2.0) == pytest.approx((1.0, 9.0))  # one side's spread alone
    assert spread_interval(5.0, 0.0, 0.0) is None  # single seeds on both sides: no interval
    assert spread_interval(5.0, None, None) is None
    assert spread_interval(float("nan"), 1.0, 1.0) is None


def test_welch_summary_ci_is_welch_diff_ci_from_the_summaries():
    """The ablation rule rebuilds chapter 08's Welch interval from the recorded means, spreads and seed counts
    (at 97.5 % for its two looks): at 95 % it must be the chapter's own interval."""
    from dcgan.intervals import welch_diff_ci, welch_summary_ci

    a, b = np.array([31.0, 35.5, 29.2, 40.1]), np.array([27.3, 26.1, 30.4])
    summary = (a.mean(), a.std(ddof=1), len(a), b.mean(), b.std(ddof=1), len(b))
    assert welch_summary_ci(*summary) == pytest.approx(welch_diff_ci(a, b))
    assert welch_summary_ci(*summary, level=0.975) == pytest.approx(welch_diff_ci(a, b, level=0.975))
    d, lo, hi = welch_summary_ci(*summary, level=0.975)
    assert lo < welch_diff_ci(a, b)[1] and hi > welch_diff_ci(a, b)[2]  # wider than the 95 % one
    assert all(map(math.isnan, welch_summary_ci(1.0, 0.5, 1, 0.0, 0.5, 3)[1:]))  # one seed on a side: none


# ------------------------------------------------------------------ nested bootstrap over GAN seeds (issue 22)

def test_nested_bootstrap_widens_when_seeds_disagree():
    rng = np.random.default_rng(1)
    units = [rng.normal(0, 1, 400) for _ in range(3)]
    agree = I.nested_bootstrap(units, n_boot=1000)
    disagree = I.nested_bootstrap([u + shift for u, shift in zip(units, (-2.0, 0.0, 2.0))], n_boot=1000)
    assert disagree[0] == pytest.approx(agree[0])  # the shifts cancel in the mean over seeds
    assert disagree[2] - disagree[1] > 5 * (agree[2] - agree[1])


def test_nested_bootstrap_of_identical_seeds_is_the_pooled_bootstrap():
    x = np.random.default_rng(2).normal(0, 1, 300)
    m, lo, hi = I.nested_bootstrap([x, x, x], n_boot=4000)
    pm, plo, phi = I.bootstrap_mean_ci(np.tile(x, 3), n_boot=4000)
    assert m == pytest.approx(pm)
    assert hi - lo == pytest.approx(phi - plo, rel=0.1)
    # and not the width of one seed's units alone (which is sqrt(3) times wider)
    assert hi - lo < 0.75 * np.subtract(*I.bootstrap_mean_ci(x, n_boot=4000)[2:0:-1])


def test_nested_bootstrap_point_is_mean_of_seed_statistics_and_paired_unpaired_forms():
    a = [np.array([1.0, 2.0, 3.0]), np.array([5.0, 5.0])]
    assert I.nested_bootstrap(a, n_boot=10)[0] == pytest.approx((2.0 + 5.0) / 2)
    # a tuple per seed: two groups resampled independently, default stat the difference of their means
    pairs = [(np.array([3.0, 3.0]), np.array([1.0, 1.0, 1.0])), (np.array([4.0]), np.array([0.0]))]
    assert I.nested_bootstrap(pairs, n_boot=200) == (pytest.approx(3.0), pytest.approx(2.0), pytest.approx(4.0))
    # a custom statistic on rows resampled together (a ratio of means)
    rows = [np.column_stack([np.full(5, 2.0), np.full(5, 4.0)])] * 3
    m, lo, hi = I.nested_bootstrap(rows, stat=lambda r: r[:, 0].mean() / r[:, 1].mean(), n_boot=20)
    assert (m, lo, hi) == (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5))
    with pytest.raises(ValueError):
        I.nested_bootstrap([])
    with pytest.raises(ValueError):
        I.nested_bootstrap([np.array([1.0]), np.array([])])


def test_nested_bootstrap_coverage_on_synthetic_seeds():
    # Seeds whose true means scatter around mu (sd 1) and units around their seed's mean (sd 3): the interval
    # should cover mu about 95% of the time with many seeds, and far more often than the pooled bootstrap,
    # which ignores the seed-to-seed spread, with three.
    rng = np.random.default_rng(3)
    mu, trials = 10.0, 150

    def cover(k: int) -> tuple[float, float]:
        nested = pooled = 0
        for t in range(trials):
            seeds = [rng.normal(mu + rng.normal(0, 1), 3, 50) for _ in range(k)]
            _, lo, hi = I.nested_bootstrap(seeds, n_boot=300, seed=t)
            nested += lo <= mu <= hi
            _, lo, hi = I.bootstrap_mean_ci(np.concatenate(seeds), n_boot=300, seed=t)
            pooled += lo <= mu <= hi
        return nested / trials, pooled / trials

    many, _ = cover(20)
    assert 0.85 <= many <= 1.0
    nested3, pooled3 = cover(3)
    assert nested3 > pooled3 + 0.15


def test_record_over_seeds_writes_each_seed_and_the_interval(tmp_path):
    res = ResultsRecorder("99_test", "smoke", 0, tmp_path)
    I.record_over_seeds(res, "x_rate", {0: 0.1, 1: 0.2, 2: 0.3}, 0.2, 0.1, 0.3, dataset="d", claim="c")
    names = set(res.results)
    assert {"x_rate", "x_rate_ci_lo", "x_rate_ci_hi", "x_rate_s0", "x_rate_s1", "x_rate_s2"} <= names
    assert "over 3 GAN seeds" in res.results["x_rate"].note
    assert I.seeds_phrase([0]) == "over 1 GAN seed"
    I.record_over_seeds(res, "y_rate", {0: 1.0, 3: 2.0}, 1.5, dataset="d")  # no interval: mean and seeds only
    assert "y_rate_ci_lo" not in res.results and res.results["y_rate_s3"].value == 2.0
    assert res.results["y_rate"].value == 1.5
