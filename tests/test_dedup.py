"""Tests for dcgan.dedup (paper §4.1.1 semantic hashing): codes, grouping, planting, measuring, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from dcgan import dedup as D


def blobs(n: int, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 images (a few Gaussian blobs each), so the hash has structure to learn."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.zeros((n, channels, size, size), dtype=np.float32)
    for i in range(n):
        for _ in range(3):
            cy, cx, s = g.uniform(0.1, 0.9), g.uniform(0.1, 0.9), g.uniform(0.05, 0.2)
            amp = g.uniform(0.3, 1.0, size=channels)[:, None, None]
            out[i] += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return torch.from_numpy(np.clip(out * 200, 0, 255).astype(np.uint8))


def random_codes(n: int, seed: int = 0) -> np.ndarray:
    """Clustered codes: a few centres and copies with 0-3 bits flipped (so every radius has pairs)."""
    g = np.random.default_rng(seed)
    centres = g.integers(0, 2, size=(n // 4, 128)).astype(bool)
    bits = centres[g.integers(0, len(centres), size=n)].copy()
    for row in bits:
        row[g.integers(0, 128, size=g.integers(0, 4))] ^= True
    return D.pack_bits(bits)


def brute_pairs(codes: np.ndarray, radius: int) -> set[tuple[int, int]]:
    bits = D.unpack_bits(codes)
    return {(i, j) for i, j in itertools.combinations(range(len(bits)), 2) if (bits[i] != bits[j]).sum() <= radius}


# ---------------------------------------------------------------- codes and grouping

def test_pack_unpack_and_hamming_match_bits():
    g = np.random.default_rng(1)
    bits = g.integers(0, 2, size=(50, 128)).astype(bool)
    codes = D.pack_bits(bits)
    assert codes.shape == (50, 2) and codes.dtype == np.uint64
    np.testing.assert_array_equal(D.unpack_bits(codes), bits)
    d = D.hamming(codes[:, None], codes[None])
    np.testing.assert_array_equal(d, (bits[:, None] != bits[None]).sum(-1))


@pytest.mark.parametrize("radius", [0, 1, 2, 3])
def test_duplicate_pairs_equal_brute_force(radius):
    codes = random_codes(120, seed=radius)
    got = {tuple(p) for p in D.duplicate_pairs(codes, radius).tolist()}
    assert got == brute_pairs(codes, radius)
    assert len(got) > 0


def test_group_exact_and_radius():
    bits = np.zeros((5, 128), dtype=bool)
    bits[1, 0] = True  # 1 bit from code 0
    bits[2, :2] = True  # 1 bit from code 1, 2 bits from code 0
    bits[3] = True  # far from everything
    bits[4] = bits[0]  # exact copy of code 0
    codes = D.pack_bits(bits)
    exact = D.group(codes, 0)
    assert exact[0] == exact[4] and len(set(exact.tolist())) == 4
    r1 = D.group(codes, 1)  # chain 0-1-2 joins through code 1 (connected components)
    assert r1[0] == r1[1] == r1[2] == r1[4] != r1[3]
    assert D.group(codes[:0], 0).shape == (0,)
    assert D.duplicate_pairs(codes[:1], 2).shape == (0, 2)


def test_pairs_from_labels_and_guard():
    labels = np.array([3, 1, 3, 3, 2, 1])
    got = {tuple(p) for p in D.pairs_from_labels(labels).tolist()}
    assert got == {(0, 2), (0, 3), (2, 3), (1, 5)}
    with pytest.raises(ValueError, match="too coarse"):
        D.pairs_from_labels(np.zeros(100, dtype=int), max_pairs=10)


def test_bad_codes_and_radius():
    with pytest.raises(ValueError, match="packed"):
        D.group(np.zeros((3, 16), dtype=np.uint8))
    with pytest.raises(ValueError, match="radius"):
        D.duplicate_pairs(random_codes(8), radius=-1)
    with pytest.raises(ValueError, match="lower the radius"):  # every pair of a large set: refused, not hours
        D.duplicate_pairs(random_codes(D.BRUTE_MAX + 1), radius=16)


def test_exact_byte_groups():
    x = blobs(4)
    x = torch.cat([x, x[1:2]])
    labels = D.exact_byte_groups(x)
    assert labels[1] == labels[4] and len(set(labels.tolist())) == 4


# ---------------------------------------------------------------- input and bad input

def test_prepare_grayscale_is_replicated_to_3072():
    x = blobs(3, channels=1, size=64)
    p = D.prepare(x)
    assert p.shape == (3, 3072) and p.min() >= -1 and p.max() <= 1
    p3 = p.view(3, 3, 32, 32)
    torch.testing.assert_close(p3[:, 0], p3[:, 2])


def test_prepare_takes_the_centre_crop():
    x = torch.zeros(1, 3, 32, 48, dtype=torch.uint8)
    x[..., 8:40] = 255  # the centre 32x32 square is white; the side bands are black
    assert torch.all(D.prepare(x) == 1.0)


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(2, 4, 32, 32, dtype=torch.uint8), "4.*RGBA"),
    (torch.zeros(2, 2, 32, 32, dtype=torch.uint8), "channels"),
    (torch.zeros(2, 3, 28, 28, dtype=torch.uint8), "28x28.*image_size=32"),
    (torch.zeros(3, 32, 32, dtype=torch.uint8), "batch"),
    (torch.zeros(0, 3, 32, 32, dtype=torch.uint8), "empty data set"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.int32), "uint8"),
])
def test_prepare_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        D.prepare(bad)


def test_autoencoder_rejects_wrong_input_width():
    ae = D.Autoencoder(D.HashConfig())
    with pytest.raises(ValueError, match=r"\(N, 3072\).*prepare"):
        ae.encode(torch.zeros(2, 1024))


def test_fit_rejects_empty_and_single_image():
    with pytest.raises(ValueError, match="empty data set"):
        D.fit_hasher(torch.zeros(0, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="1 image cannot have duplicates"):
        D.fit_hasher(blobs(1))


def test_single_image_hashes_to_one_group():
    h = D.fit_hasher(blobs(8), D.HashConfig(epochs=1, batch_size=8))
    codes = h.hash(blobs(1, seed=5))
    assert codes.shape == (1, 2)
    assert D.group(codes).tolist() == [0]
    with pytest.raises(ValueError, match="empty data set"):
        h.hash(torch.zeros(0, 1, 32, 32, dtype=torch.uint8))


# ---------------------------------------------------------------- training

def test_hash_is_deterministic_per_seed_and_depends_on_it():
    x = blobs(64)
    cfg = D.HashConfig(epochs=2, batch_size=32, seed=7)
    a = D.fit_hasher(x, cfg)
    b = D.fit_hasher(x, cfg)
    np.testing.assert_array_equal(a.hash(x), b.hash(x))
    assert a.losses == b.losses
    c = D.fit_hasher(x, D.HashConfig(epochs=2, batch_size=32, seed=8))
    assert not np.array_equal(a.hash(x), c.hash(x))


def test_trained_hash_puts_noisy_copies_near_their_source():
    x = blobs(128)
    plants = D.plant_near_duplicates(x, 16, kinds=("noise",), seed=0)
    h = D.fit_hasher(plants.images, D.HashConfig(epochs=12, batch_size=48))
    assert h.losses[-1] < h.losses[0]
    codes = h.hash(plants.images)
    n = plants.n_original
    d_dup = D.hamming(codes[n:], codes[plants.truth[n:]])
    d_other = D.hamming(codes[:n:2], codes[1:n:2])
    assert np.median(d_dup) < np.median(d_other) / 2


# ---------------------------------------------------------------- planting and measuring

def test_plants_have_ground_truth_and_stay_close():
    x = blobs(20)
    p = D.plant_near_duplicates(x, 4, seed=3)
    assert p.images.shape == (20 + 4 * len(D.PLANT_KINDS), 3, 32, 32)
    assert p.n_original == 20 and p.kind[:20] == ["original"] * 20
    src = p.truth[20:]
    assert set(p.kind[20:]) == set(D.PLANT_KINDS)
    diff = (p.images[20:].float() - x[src].float()).abs().mean((1, 2, 3))
    assert torch.all(diff > 0) and torch.all(diff < 40)
    again = D.plant_near_duplicates(x, 4, seed=3)
    assert torch.equal(again.images, p.images)
    gray = D.plant_near_duplicates(blobs(6, channels=1), 2, seed=0)  # JPEG on one channel works too
    assert gray.images.shape == (6 + 2 * len(D.PLANT_KINDS), 1, 32, 32)
    with pytest.raises(ValueError, match="unknown plant kinds"):
        D.plant_near_duplicates(x, 2, kinds=("rotate",))
    with pytest.raises(ValueError, match="n_sources"):
        D.plant_near_duplicates(x, 21)


def test_pair_curve_counts_match_brute_force():
    codes = random_codes(90, seed=4)
    truth = np.arange(90) // 3  # triples are "true" groups
    ignore = np.arange(90) // 9
    thresholds = [0, 1, 2, 5, 40]
    c = D.pair_curve(D.hamming_distances(codes), truth, thresholds, ignore=ignore, block=16)
    bits = D.unpack_bits(codes)
    for k, t in enumerate(thresholds):
        flagged = tp = 0
        for i, j in itertools.combinations(range(90), 2):
            if ignore[i] == ignore[j] and truth[i] != truth[j]:
                continue
            if (bits[i] != bits[j]).sum() <= t:
                flagged += 1
                tp += truth[i] == truth[j]
        assert (c["flagged"][k], c["true_pos"][k]) == (flagged, tp)
    assert c["n_true"] == 30 * 3
    assert c["flagged"][0] == len(D.duplicate_pairs(codes, 0)) - sum(
        1 for i, j in D.duplicate_pairs(codes, 0).tolist() if ignore[i] == ignore[j] and truth[i] != truth[j])
    p, r = D.precision_recall(c)
    assert np.all((0 <= p) & (p <= 1)) and np.all(np.diff(r) >= 0)


def test_l2_distances_block():
    x = torch.rand(10, 3072, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x[3] = x[2] + 0.05  # a near duplicate: its small distance must survive the |a|^2 + |b|^2 - 2ab cancellation
    d = D.l2_distances(x)(2, 5)
    ref = ((x[2:5, None] - x[None, 2:]) ** 2).mean(-1).sqrt().numpy()
    off = ~np.eye(3, 8, dtype=bool)  # the zero diagonal is never used (pairs i < j) and is all rounding
    np.testing.assert_allclose(d[off], ref[off], rtol=1e-3, atol=2e-3)
    assert abs(d[0, 1] - 0.05) < 2e-3


# ---------------------------------------------------------------- the chapter's helpers

def test_pick_threshold_and_flagged_precision():
    curve = dict(thresholds=np.array([0, 1, 2, 3]), flagged=np.array([10, 20, 40, 80]),
                 true_pos=np.array([10, 20, 36, 40]), n_true=50)
    assert D.pick_threshold(curve, 0.99) == (1.0, 1)
    assert D.pick_threshold(curve, 0.9) == (2.0, 2)
    assert D.pick_threshold(dict(curve, true_pos=np.zeros(4, int)), 0.99) == (0.0, 0)  # none qualifies
    truth = np.array([0, 0, 1, 2, 2])
    ignore = np.array([0, 0, 0, 1, 1])
    out = D.flagged_precision(np.array([[0, 1], [1, 2], [2, 3], [3, 4]]), truth, ignore)
    assert (out["flagged"], out["true_pos"], out["n_true"]) == (3, 2, 2)  # (1, 2) is ignored: same family


def test_variant_pairs():
    attrs = dict(base=["a", "a", "a", "a", "b"], skin_tone=["none", "dark", "none", "dark", "none"],
                 vendor=["g", "g", "t", "t", "g"])
    v = D.variant_pairs(attrs)
    assert {tuple(p) for p in v["skin_tone"].tolist()} == {(0, 1), (2, 3)}
    assert {tuple(p) for p in v["vendor"].tolist()} == {(0, 2), (1, 3)}


def test_pair_grid_shapes_and_frames():
    x = blobs(6, channels=1)
    g = D.pair_grid(x, np.array([[0, 1], [2, 3], [4, 5]]), correct=np.array([True, False, True]))
    assert g.shape[0] == 3 and g.shape[1] > 2 * 32 and g.shape[2] > 3 * 32
    tile = 32 + 2 * 2  # framed tile; make_grid pads 2 px around it
    red = g[:, 2, 2 + (tile + 2) * 1]  # top-left frame pixel of the second (false) pair
    assert red[0] > 0.8 and red[1] < 0.2
    with pytest.raises(ValueError, match="no pairs"):
        D.pair_grid(x, np.zeros((0, 2), dtype=int))


def test_plant_study_small_end_to_end():
    x = blobs(40)
    s = D.plant_study(x, 4, D.HashConfig(epochs=1, batch_size=16), radii=range(0, 129, 16),
                      l2_thresholds=[0.0, 10.0], ignore=np.arange(40) // 2)
    n_all = 40 + 4 * len(D.PLANT_KINDS)
    assert s.codes.shape == (n_all, 2) and len(s.plant_hamming) == n_all - 40
    assert s.hash_curve["n_true"] == 4 * 15  # groups of 6: a source and its 5 copies
    assert s.hash_curve["true_pos"][-1] == s.l2_curve["true_pos"][-1] == 60  # radius 128 / huge L2 flag all
    assert s.exact["true_pos"] == int(s.plant_exact.sum())
    kinds = s.per_kind_recall(128, 10.0)
    assert set(kinds) == set(D.PLANT_KINDS) and all(v["hash"] == 1.0 for v in kinds.values())


def test_synthetic_codes_duplicate_structure():
    c = D.synthetic_codes(4000, seed=0)
    assert c.shape == (4000, 2) and c.dtype == np.uint64
    n0, n2 = len(np.unique(D.group(c, 0))), len(np.unique(D.group(c, 2)))
    assert n2 == 2800  # every copy is within 2 bits of its source; sources are far apart
    assert 2800 < n0 < 4000


def test_split_halves_keeps_groups_together_and_balanced():
    p = D.plant_near_duplicates(blobs(21), 6, seed=2)
    half = D.split_halves(p, seed=0)
    assert half.shape == (len(p.truth),) and set(half.tolist()) == {0, 1}
    np.testing.assert_array_equal(half, half[p.truth])  # every copy on its source's side
    sourced = np.unique(p.truth[21:])
    assert (half[sourced] == 0).sum() == (half[sourced] == 1).sum() == 3
    assert abs(int((half[:21] == 0).sum()) - int((half[:21] == 1).sum())) <= 1
    np.testing.assert_array_equal(D.split_halves(p, seed=0), half)


def test_score_at_counts_and_intervals():
    curve = dict(thresholds=np.array([0, 1, 2]), flagged=np.array([0, 20, 40]), true_pos=np.array([0, 20, 36]),
                 n_true=50)
    s = D.score_at(curve, 2)
    assert (s["flagged"], s["true_pos"], s["precision"], s["recall"]) == (40, 36, 0.9, 0.72)
    assert s["fp_rate"] == pytest.approx(0.1) and s["fp_rate_ci"][0] < 0.1 < s["fp_rate_ci"][1]
    assert s["precision_ci"][0] < 0.9 < s["precision_ci"][1]
    assert s["fp_rate_ci"] == pytest.approx((1 - s["precision_ci"][1], 1 - s["precision_ci"][0]))
    s1 = D.score_at(curve, 1)
    assert s1["fp_rate"] == 0 and s1["fp_rate_ci"][0] == 0 and 0.1 < s1["fp_rate_ci"][1] < 0.2  # 0 of 20: not < 1%
    assert np.isnan(D.score_at(curve, 0)["fp_rate"])


def test_held_out_chooses_on_one_half_and_scores_the_other():
    x = blobs(40)
    s = D.plant_study(x, 8, D.HashConfig(epochs=1, batch_size=16), radii=range(0, 129, 8),
                      l2_thresholds=np.round(np.linspace(0, 1, 21), 3))
    assert s.halves[0]["hash"]["n_true"] == s.halves[1]["hash"]["n_true"] == 4 * 15
    h = D.held_out(s, 0.99)
    assert h.score_half == 1
    assert h.radius == D.pick_threshold(s.halves[0]["hash"], 0.99)[0]  # chosen on half 0 only
    assert h.hash == D.score_at(s.halves[1]["hash"], h.radius)  # scored on half 1 only
    assert len(h.recall_by_group["hash"]) == 4 and h.recall_by_group["hash"].mean() == pytest.approx(h.hash["recall"])
    assert h.recall_by_group["l2"].mean() == pytest.approx(h.l2["recall"])
    other = D.held_out(s, 0.99, select_half=1)
    assert other.score_half == 0 and other.hash == D.score_at(s.halves[0]["hash"], other.radius)
    kinds = s.per_kind_recall(128, 1.0, half=1)
    assert all(v["hash"] == 1.0 for v in kinds.values())


def test_duplicate_pairs_beyond_radius_15_compares_every_pair():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**63, size=(40, 2), dtype=np.uint64)
    flips = rng.integers(0, 2**63, size=(40, 2), dtype=np.uint64) & rng.integers(0, 2**63, size=(40, 2), dtype=np.uint64)
    codes = np.concatenate([base, base ^ flips])  # copies some 30 bits away from their source
    d = D.hamming(codes[:, None], codes[None, :])
    for radius in (12, 15, 16, 40):  # multi-index hashing up to 15, every pair beyond: the same definition
        i, j = np.nonzero(np.triu(d <= radius, 1))
        want = np.stack([i, j], 1)
        assert np.array_equal(D.duplicate_pairs(codes, radius), want), radius
    with pytest.raises(ValueError, match="0..128"):
        D.duplicate_pairs(codes, 129)
