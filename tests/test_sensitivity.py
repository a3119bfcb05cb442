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


def test_the_book_yardstick_ranks_disturbed_images_worse(tmp_path, monkeypatch):
    """FID and KID in the book profile's Fashion-MNIST features rise with every step of every disturbance,
    and a visibly noisy generator (an untrained DCGAN) scores far above the real-data floor."""
    from dcgan.metrics import evaluate
    from dcgan.models import ModelConfig, build_models
    from dcgan.paths import data_root

    if not (data_root() / "fashion-mnist").exists():
        pytest.skip(f"the offline data is not in {data_root()} (make data)")
    monkeypatch.setenv("DCGAN_RUNS", str(tmp_path / "runs"))  # the classifier as a fresh machine trains it
    rows = disturbance_study("fashion-mnist", 32, "book", n=500, n_real=1000)
    for kind in LEVELS:
        fids = [r.fid for r in rows if r.disturbance == kind]
        kids = [r.kid for r in rows if r.disturbance == kind]
        assert len(fids) == len(LEVELS[kind]) + 1
        assert all(b > a for a, b in zip(fids, fids[1:])), f"FID does not rise with {kind}: {fids}"
        assert all(b > a for a, b in zip(kids, kids[1:])), f"KID does not rise with {kind}: {kids}"
    floor = rows[0].fid
    torch.manual_seed(0)
    G, _ = build_models(ModelConfig(image_size=32, channels=1, ngf=32, ndf=32))
    with torch.no_grad():
        noisy = G.eval()(torch.randn(500, G.cfg.nz))
    got = evaluate(noisy, "fashion-mnist", 32, "book", n_real=1000)
    assert got["fid"] > 10 * max(floor, 1.0), (got["fid"], floor)
