"""dcgan.sensitivity: the yardstick ranks visibly worse images worse (Heusel et al.'s disturbance study)."""

from __future__ import annotations

import pytest
import torch

from dcgan.sensitivity import DISTURBANCES, LEVELS, disturb, disturbance_study


def test_disturbances_keep_shape_and_range_and_grow_with_the_level():
    g = torch.Generator().manual_seed(0)
    # smooth images (upsampled 4x4 noise), so that a displacement (swirl) changes more as it grows
    x = torch.nn.functional.interpolate(torch.rand(4, 3, 4, 4, generator=g) * 2 - 1, size=32, mode="bilinear")
    for kind, levels in LEVELS.items():
        change = []
        for level in levels:
            y = disturb(x, kind, level)
            assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1, kind
            assert torch.equal(y, disturb(x, kind, level)), f"{kind} is seeded"
            change.append((y - x).abs().mean().item())
        assert change == sorted(change) and change[0] > 0, (kind, change)
    with pytest.raises(ValueError, match="unknown disturbance 'fog'; known: noise, blur"):
        disturb(x, "fog", 1.0)
    assert set(DISTURBANCES) == set(LEVELS) == {"noise", "blur", "rectangles", "swirl"}


@pytest.mark.parametrize("dataset, channels", [("fashion-mnist", 1), ("mnist-10k", 1), ("emoji", 3)])
def test_the_book_yardstick_ranks_disturbed_images_worse(tmp_path, monkeypatch, dataset, channels):
    """FID and KID in each book-profile domain classifier's features rise with every step of every disturbance,
    and a visibly noisy generator (an untrained DCGAN) scores far above the real-data floor."""
    from dcgan.metrics import evaluate
    from dcgan.models import ModelConfig, build_models
    from dcgan.paths import data_root

    if not (data_root() / dataset).exists():
        pytest.skip(f"the offline data is not in {data_root()} (make data)")
    # a fresh runs folder: the classifier a fresh machine gets (the committed one, dcgan/weights/classifiers)
    monkeypatch.setenv("DCGAN_RUNS", str(tmp_path / "runs"))
    rows = disturbance_study(dataset, 32, "book", n=500, n_real=700)
    for kind in LEVELS:
        fids = [r.fid for r in rows if r.disturbance == kind]
        kids = [r.kid for r in rows if r.disturbance == kind]
        assert len(fids) == len(LEVELS[kind]) + 1
        assert all(b > a for a, b in zip(fids, fids[1:])), f"FID does not rise with {kind}: {fids}"
        assert all(b > a for a, b in zip(kids, kids[1:])), f"KID does not rise with {kind}: {kids}"
    floor = rows[0].fid
    torch.manual_seed(0)
    G, _ = build_models(ModelConfig(image_size=32, channels=channels, ngf=32, ndf=32))
    with torch.no_grad():
        noisy = G.eval()(torch.randn(500, G.cfg.nz))
    got = evaluate(noisy, dataset, 32, "book", n_real=700)
    assert got["fid"] > 10 * max(floor, 1.0), (got["fid"], floor)
