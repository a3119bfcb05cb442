"""Tests for dcgan.memorisation (§4.1, issue 22): the lower tail of the nearest-neighbour distances decides
"samples are not memorised", so a generator that copies a share of its samples fails however far its other
samples are."""

import numpy as np
import pytest
import torch

from dcgan import memorisation as M
from dcgan import report
from dcgan.report import NOT_REPRODUCED, REPRODUCED, WITHIN_NOISE
from dcgan.results import ResultsRecorder, load_results

DIM, N_TRAIN, N = 48, 4000, 500


def _nearest(q: torch.Tensor, train: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
    d = torch.cdist(q, train)
    if skip is not None:
        d[torch.arange(len(q)), skip] = float("inf")  # a training image's nearest *other* training image
    return d.min(1).values


def _planted(copy_share: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NN distances of samples, training and test images of one distribution; ``copy_share`` of the samples
    are exact training images, the rest fresh draws (a generator as good as held-out data otherwise)."""
    g = torch.Generator().manual_seed(seed)
    train, test = torch.randn(N_TRAIN, DIM, generator=g), torch.randn(N, DIM, generator=g)
    fake = torch.randn(N, DIM, generator=g)
    k = round(copy_share * N)
    fake[:k] = train[torch.randperm(N_TRAIN, generator=g)[:k]]
    pick = torch.randperm(N_TRAIN, generator=g)[:N]
    return _nearest(fake, train), _nearest(train[pick], train, skip=pick), _nearest(test, train)


def test_copying_generator_fails_and_fresh_samples_pass():
    nc = M.near_copies(*_planted(0.15))
    assert nc.k_sample >= 0.15 * N and nc.diff_ci[0] > 0  # the copies are found, beyond the test images' share
    assert nc.verdict() == NOT_REPRODUCED
    nc = M.near_copies(*_planted(0.0))
    assert nc.sample_share < 0.05 and nc.test_share < 0.05  # about 1 %: the 1st percentile of train-to-train
    assert nc.diff_ci[0] <= 0 < nc.diff_ci[1] < M.MARGIN / 100
    assert nc.verdict() == REPRODUCED


def test_median_ratio_cannot_see_a_copied_tenth():
    """The old rule: the median sample distance over the median test distance, passed above 0.9."""
    d_fake, _, d_test = _planted(0.15)
    assert (d_fake.median() / d_test.median()).item() > 0.9  # what the median says: not memorised
    assert M.near_copies(*_planted(0.15)).verdict() == NOT_REPRODUCED  # what the lower tail says


def test_intervals_and_threshold():
    d_fake, d_train, d_test = _planted(0.0)
    nc = M.near_copies(d_fake, d_train, d_test, quantile=0.01)
    assert nc.threshold == pytest.approx(float(np.quantile(d_train.numpy(), 0.01)))
    assert nc.k_sample == int((d_fake < nc.threshold).sum()) and nc.n_sample == N
    from scipy.stats import binomtest

    ci = binomtest(nc.k_sample, N).proportion_ci(0.95, "exact")
    assert nc.sample_ci == pytest.approx((ci.low, ci.high))  # Clopper-Pearson
    assert nc.sample_ci[0] <= nc.sample_share <= nc.sample_ci[1]
    assert nc.diff_ci[0] <= nc.diff <= nc.diff_ci[1]


def test_few_samples_are_within_noise():
    d_fake, d_train, d_test = (d[:40] for d in _planted(0.0))
    assert M.near_copies(d_fake, d_train, d_test).verdict() == WITHIN_NOISE  # 40 samples cannot rule out 3 %


def test_refuses_bad_input():
    with pytest.raises(ValueError, match="quantile"):
        M.near_copies(torch.ones(3), torch.ones(3), torch.ones(3), quantile=1.5)
    with pytest.raises(ValueError, match="empty"):
        M.near_copies(torch.ones(0), torch.ones(3), torch.ones(3))


@pytest.mark.parametrize("copy_share, want", [(0.15, NOT_REPRODUCED), (0.0, REPRODUCED)])
def test_claim_judges_the_lower_tail(tmp_path, copy_share, want):
    """What chapter 02 records (the median ratio as description, the near-copy shares) decides the claim."""
    res = ResultsRecorder("02_training", "book", 0, tmp_path)
    for k in ("", "_fid", "_precision", "_recall"):
        res.record(f"fashion-mnist-32_gate{k}", 1 if not k else 0.5, dataset="fashion-mnist")
    d_fake, d_train, d_test = _planted(copy_share)
    res.record("fashion-mnist-32_nn_ratio", (d_fake.median() / d_test.median()).item(), dataset="fashion-mnist-32")
    M.near_copies(d_fake, d_train, d_test).record(res, "fashion-mnist-32", dataset="fashion-mnist-32")
    claim = next(c for c in report.CLAIMS if c.id == "not-memorised-fashion")
    assert claim.rule.measures[0].at == M.MARGIN  # claims.yaml's margin is the module's
    row = next(r for r in report.claim_rows(load_results(tmp_path)) if r["id"] == "not-memorised-fashion")
    assert row["verdict"] == want
    assert "near-copies" in row["ours"] and "held-out" in row["ours"]


def test_rule_text_says_the_rule_the_report_applies():
    from dcgan.report import no_excess_verdict

    text = M.rule_text(2.5)
    assert "excess of 2.5 points" in text and "above 0" in text
    assert no_excess_verdict(-1.0, 2.4, 2.5) == REPRODUCED and no_excess_verdict(-1.0, 2.6, 2.5) == WITHIN_NOISE
    assert no_excess_verdict(0.1, 2.0, 2.5) == NOT_REPRODUCED
    assert not set("'\"") & set(text)  # glued as text into chapter 02: its repr must need no escapes
