"""Tests for dcgan.models: shapes, activations, init statistics, the §3 guidelines, ablation switches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dcgan.models import (
    Discriminator,
    Generator,
    ModelConfig,
    build_models,
    check_guidelines,
    count_parameters,
    layer_table,
    sample_noise,
)


@pytest.mark.parametrize("size", [16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_shapes_every_size_and_channel_count(size, channels):
    cfg = ModelConfig(image_size=size, channels=channels, nz=10, ngf=4, ndf=4)
    g, d = build_models(cfg)
    z = sample_noise(cfg, 3, torch.Generator().manual_seed(0))
    x = g(z)
    assert x.shape == (3, channels, size, size) and x.abs().max() <= 1
    assert d(x).shape == (3,)
    ga = g.activations(z)
    assert len(ga) == cfg.n_layers + 1 and ga[0].shape[-1] == 4 and torch.equal(ga[-1], x)
    assert [a.shape[-1] for a in ga[:-1]] == [4 * 2**i for i in range(cfg.n_layers)]
    da = d.activations(x)
    assert [a.shape[1:] for a in da] == [(w, size // 2 ** (i + 1), size // 2 ** (i + 1)) for i, w in enumerate(cfg.d_widths())]
    assert da[-1].shape[-1] == 4


def test_top_width_512_vs_1024():
    assert ModelConfig(image_size=64, ngf=64).g_widths() == [512, 256, 128, 64]  # common re-implementations
    assert ModelConfig(image_size=64, ngf=128).g_widths() == [1024, 512, 256, 128]  # paper Figure 1
    g = Generator(ModelConfig(image_size=64, ngf=128))
    assert [r["output"] for r in layer_table(g, torch.zeros(1, 100)) if "Conv" in r["layer"]] == [
        (1024, 4, 4), (512, 8, 8), (256, 16, 16), (128, 32, 32), (3, 64, 64)]


def test_parameter_counts_match_layer_table():
    cfg = ModelConfig(image_size=64)
    g, d = build_models(cfg)
    assert count_parameters(g) == sum(r["params"] for r in layer_table(g, torch.zeros(1, 100)))
    assert count_parameters(d) == sum(r["params"] for r in layer_table(d, torch.zeros(1, 3, 64, 64)))
    # conv weights, no biases; BN scale+shift: 100*512*16 + 512*256*16 + 256*128*16 + 128*64*16 + 64*3*16
    assert count_parameters(g) == 3_576_704
    assert count_parameters(d) == 2_765_568


def test_init_statistics():
    torch.manual_seed(0)
    g, d = build_models(ModelConfig(image_size=64))
    w = torch.cat([m.weight.flatten() for m in list(g.modules()) + list(d.modules())
                   if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 5e-4  # §4: N(0, 0.02)
    bn = [m for m in list(g.modules()) + list(d.modules()) if isinstance(m, nn.BatchNorm2d)]
    gamma = torch.cat([m.weight for m in bn])
    assert abs(gamma.mean().item() - 1) < 5e-3 and abs(gamma.std().item() - 0.02) < 5e-3
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in bn)
    no_affine = Generator(ModelConfig(image_size=32, bn_affine=False))
    assert all(m.weight is None for m in no_affine.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("size", [32, 64])
def test_paper_guidelines_hold_by_default(size):
    res = check_guidelines(*build_models(ModelConfig(image_size=size)))
    assert len(res) == 4 and all(ok for ok, _ in res.values()), res


@pytest.mark.parametrize(
    "switch, broken",
    [({"pooling": True}, 1), ({"fc_hidden": 16}, 2), ({"bn_everywhere": True}, 3), ({"batchnorm": False}, 3),
     ({"d_activation": "relu"}, 4)],
)
def test_each_ablation_breaks_exactly_its_guideline(switch, broken):
    cfg = ModelConfig(image_size=32, ngf=8, ndf=8, **switch)
    g, d = build_models(cfg)
    res = check_guidelines(g, d)
    assert [ok for ok, _ in res.values()] == [i != broken for i in range(1, 5)]
    z = sample_noise(cfg, 2)
    assert d(g(z)).shape == (2,)  # still trains end to end


def test_z_distributions():
    gen = torch.Generator().manual_seed(0)
    u = sample_noise(ModelConfig(), 4000, gen)
    assert u.min() >= -1 and u.max() <= 1 and abs(u.std().item() - 3 ** -0.5) < 0.01
    n = sample_noise(ModelConfig(z_dist="normal"), 4000, gen)
    assert n.abs().max() > 2 and abs(n.std().item() - 1) < 0.01


def test_conditional_nets_and_errors():
    cfg = ModelConfig(image_size=16, channels=1, nz=8, ngf=4, ndf=4, n_classes=10)
    g, d = build_models(cfg)
    y = torch.arange(5)
    x = g(torch.randn(5, 8), y)
    assert d(x, y).shape == (5,)
    with pytest.raises(ValueError, match="pass y"):
        g(torch.randn(5, 8))
    with pytest.raises(ValueError, match="unconditional"):
        Generator(ModelConfig(image_size=16))(torch.randn(1, 100), y[:1])
    with pytest.raises(ValueError, match="expects images of shape"):
        Discriminator(ModelConfig(image_size=32))(torch.zeros(1, 3, 64, 64))
    for bad in (12, 8, 48):
        with pytest.raises(ValueError, match="power of two"):
            ModelConfig(image_size=bad)
