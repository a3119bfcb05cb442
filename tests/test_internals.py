"""Tests for dcgan.internals (§6.2 guided backprop, §6.3.1 forgetting)."""

import numpy as np
import pytest
import torch
from torch import nn

from dcgan import internals as I
from dcgan.models import Discriminator, Generator, ModelConfig


def test_guided_backprop_masks_negative_forward_and_negative_gradient():
    # y = w2 . leaky(W1 x): W1 = I, so leaky's input is x itself.
    net = nn.Sequential(nn.Linear(4, 4, bias=False), nn.LeakyReLU(0.2, inplace=True), nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(4))
        net[2].weight.copy_(torch.tensor([[1.0, -1.0, 1.0, -1.0]]))
    x = torch.tensor([[1.0, 1.0, -1.0, -1.0]], requires_grad=True)
    net(x).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([[1.0, -1.0, 0.2, -0.2]]))  # ordinary LeakyReLU backprop
    x.grad = None
    with I.guided_relus(net) as n:
        assert n == 1 and net[1].inplace is False
        net(x).sum().backward()
    # kept only where forward > 0 and incoming grad > 0
    assert torch.equal(x.grad, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert net[1].inplace is True and not net[1]._forward_hooks and not net[1]._backward_hooks
    x.grad = None
    net(x).sum().backward()  # hooks are gone afterwards
    assert torch.allclose(x.grad, torch.tensor([[1.0, -1.0, 0.2, -0.2]]))
    with pytest.raises(ValueError, match="ReLU modules"):
        with I.guided_relus(nn.Linear(2, 2)):
            pass


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=8, ndf=8)
    return Generator(cfg).eval(), Discriminator(cfg).eval()


def test_top_responses_and_guided_backprop_on_d(tiny):
    _, D = tiny
    x = torch.rand(20, 3, 32, 32) * 2 - 1
    r = I.top_responses(D, x, channels=range(3), k=4)
    assert r.index.shape == (3, 4) and r.position.shape == (3, 4, 2)
    acts = D.activations(x)[-1]
    for f in range(3):  # the first top response really is the channel's maximum over all images and positions
        i, (py, px) = r.index[f, 0], r.position[f, 0]
        assert torch.isclose(acts[i, f, py, px], acts[:, f].max())
        assert (r.value[f, :-1] >= r.value[f, 1:]).all()
    imgs = x[r.index[0]]
    gb = I.guided_backprop(D, imgs, [0] * 4, r.position[0].tolist())
    assert gb.shape == imgs.shape and gb.abs().sum() > 0
    assert all(m.inplace for m in D.modules() if isinstance(m, nn.LeakyReLU))
    Dr = I.random_discriminator(D, x, seed=1)
    assert not torch.equal(Dr.blocks[0][0].weight, D.blocks[0][0].weight)
    c = I.map_correlation(gb, gb)
    assert torch.allclose(c, torch.ones(4))
    labels = torch.tensor([0] * 10 + [1] * 10)
    assert 0.5 <= I.response_purity(labels, r) <= 1.0
    per = I.feature_purities(labels, r)
    assert per.shape == (3,) and per.mean() == pytest.approx(I.response_purity(labels, r))
    assert abs(I.chance_purity(labels, 1) - 1.0) < 1e-9


def test_region_classifier_and_forgetting(tiny):
    G, _ = tiny
    z = torch.rand(40, 8) * 2 - 1
    feats = I.block_features(G, z)
    assert feats.shape == (40, 16, 8, 8)  # blocks[-2] of a 32x32 G: 8x8 maps of ngf*2 channels
    # A synthetic "concept": positions where map 3 is active (so the classifier must find map 3).
    mask = torch.nn.functional.interpolate((feats[:, 3:4] > feats[:, 3].median()).float(), size=32)[:, 0] > 0.5
    rc = I.fit_region_classifier(feats[:30], mask[:30], feats[30:], mask[30:])
    assert rc.accuracy > 0.9 and 3 in rc.positive_maps
    out = I.drop_maps(G, z[:4], [3])
    assert out.shape == (4, 3, 32, 32)
    assert not torch.allclose(out, G(z[:4]))
    with pytest.raises(ValueError, match="no feature"):
        I.fit_region_classifier(feats[:5], torch.zeros(5, 32, 32, dtype=torch.bool), feats[:5], mask[:5])
    res = I.forget(G, z, rc.positive_maps, lambda x: x.mean(1) > 0, control_draws=2)
    assert res.before.shape == res.after.shape == (40, 3, 32, 32)
    assert 0 <= res.concept_before <= 1 and res.change_inside >= 0 and res.control_outside >= 0
    assert res.shares["before"].shape == (40,) and res.shares["before"].mean() == pytest.approx(res.concept_before)
    d, lo, hi = res.removed_minus_control(seed=0)
    assert d == pytest.approx(res.removed - res.removed_control) and lo <= d <= hi
    with pytest.raises(ValueError, match="no feature maps"):
        I.forget(G, z, [], lambda x: x.mean(1) > 0)


def test_hue_mask_finds_yellow():
    img = torch.full((1, 3, 4, 4), -1.0)
    img[0, :, :2] = torch.tensor([1.0, 0.6, -1.0])[:, None, None]  # orange-yellow (hue ~40 degrees)
    m = I.hue_mask(img, (30, 60))
    assert m[0, :2].all() and not m[0, 2:].any()
    with pytest.raises(ValueError, match="RGB"):
        I.hue_mask(torch.zeros(1, 1, 4, 4), (30, 60))


def test_saliency_comparison_pairs_each_d_with_the_other(tiny):
    _, D = tiny
    x = torch.rand(20, 3, 32, 32) * 2 - 1
    Dr = I.random_discriminator(D, x, seed=1)
    out = I.saliency_comparison(D, Dr, x, range(3), 4)
    for tag, net, other in (("trained", D, Dr), ("random", Dr, D)):
        o = out[tag]
        r = I.top_responses(net, x, range(3), 4)
        assert torch.equal(o["resp"].index, r.index) and torch.equal(o["imgs"], x[r.index.flatten()])
        chans, pos = [c for c in r.channels for _ in range(4)], r.position.flatten(0, 1).tolist()
        assert torch.allclose(o["grad_other"], I.guided_backprop(other, o["imgs"], chans, pos))
        assert o["edge_corr"] == pytest.approx(float(I.map_correlation(o["grad"], I.edge_magnitude(o["imgs"])).mean()))
    same = I.saliency_comparison(D, D, x, range(3), 4)  # one D against itself: identical saliency
    assert same["trained_vs_random"] == pytest.approx(1.0)
