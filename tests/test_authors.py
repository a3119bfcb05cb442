"""dcgan.authors: the released SVHN DCGAN, its file's integrity, and proof of the conversion by measured properties.

The conversion is not compared with itself: every orientation choice (kernel flip, transposed-conv padding,
colour order, in/out channel axes, the dense layers' unit order) is judged by properties of the nets it
produces. A wrong variant of G is run against the right D and must fail G's property; a wrong variant of D
is run with the right G and must fail D's.
"""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dcgan import authors as A
from dcgan import features as fe
from dcgan.models import ModelConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def arrays():
    return A.load_arrays()


@pytest.fixture(scope="module")
def right(arrays):
    torch.manual_seed(0)
    return A.convert_generator(arrays), A.convert_discriminator(arrays)


@pytest.fixture(scope="module")
def right_check(right):
    return A.conversion_check(*right, n=256)


# ---------------------------------------------------------------- the file

def test_weights_checksum_matches_file_and_provenance():
    got = hashlib.sha256(A.WEIGHTS.read_bytes()).hexdigest()
    assert got == A.SHA256
    prov = (A.WEIGHTS.parent / "PROVENANCE.md").read_text()
    assert A.SHA256 in prov and A.SOURCE["commit"] in prov and A.SOURCE["folder"] in prov
    lic = (A.WEIGHTS.parent / "LICENSE-dcgan_code").read_text()
    assert "MIT License" in lic and "Copyright (c) 2015 Alec Radford" in lic


def test_weights_ship_as_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    block = text.split("[tool.setuptools.package-data]")[1].split("\n[")[0]
    for pattern in ("weights/*.npz", "weights/*.md", "weights/LICENSE-*"):
        assert pattern in block
    import fnmatch
    # every shipped file, the committed classifiers' folder included
    names = [p.relative_to(ROOT / "dcgan").as_posix() for p in (ROOT / "dcgan" / "weights").rglob("*") if p.is_file()]
    assert any(n.startswith("weights/classifiers/") for n in names)
    assert all(any(fnmatch.fnmatch(n, pat) for pat in re.findall(r'"(weights/[^"]+)"', block)) for n in names), names


def test_load_arrays_shapes(arrays):
    assert len(arrays) == 18
    assert {k: v.shape for k, v in arrays.items()} == {**A.G_SHAPES, **A.D_SHAPES}
    assert all(v.dtype == np.float32 for v in arrays.values())


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    bad = tmp_path / "w.npz"
    data = bytearray(A.WEIGHTS.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256 .* does not match"):
        A.load_arrays(bad)
    with pytest.raises(FileNotFoundError, match="missing"):
        A.load_arrays(tmp_path / "absent.npz")


def test_loading_never_unpickles(tmp_path):
    # An archive holding an object array (which only a pickle can restore), with its own checksum passed in:
    # the checksum passes, and np.load(allow_pickle=False) refuses the object array.
    p = tmp_path / "objects.npz"
    arrays = dict(np.load(A.WEIGHTS, allow_pickle=False))
    arrays["gw"] = np.array([{"not": "weights"}], dtype=object)
    np.savez(p, **arrays)
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="allow_pickle"):
        A.load_arrays(p, sha256=sha)


def test_wrong_names_or_shapes_are_errors(tmp_path, arrays):
    p = tmp_path / "short.npz"
    np.savez(p, **{k: v for k, v in arrays.items() if k != "dwy"})
    with pytest.raises(ValueError, match="expected"):
        A.load_arrays(p, sha256=hashlib.sha256(p.read_bytes()).hexdigest())
    with pytest.raises(KeyError, match="gwx"):
        A.convert_generator({k: v for k, v in arrays.items() if k != "gwx"})
    # a transposed deconv kernel (the Conv2d layout) does not fit: an error, not a silent mis-read
    swapped = {**arrays, "gw2": np.ascontiguousarray(arrays["gw2"].transpose(1, 0, 2, 3))}
    with pytest.raises(ValueError, match="gw2"):
        A.convert_generator(swapped)


# ---------------------------------------------------------------- the architecture

def test_authors_config_builds_their_shapes(right):
    G, D = right
    cfg = A.authors_config()
    assert cfg.kernel_size == 5 and cfg.g_unit_bn and cfg.z_dist == "normal"
    z = torch.randn(3, 100)
    acts = G.eval().activations(z)
    assert [tuple(a.shape[1:]) for a in acts] == [(256, 4, 4), (128, 8, 8), (64, 16, 16), (3, 32, 32)]
    assert [tuple(a.shape[1:]) for a in D.eval().activations(acts[-1])] == [(64, 16, 16), (128, 8, 8), (256, 4, 4)]
    assert sum(p.numel() for p in G.parameters()) == sum(int(np.prod(s)) for s in A.G_SHAPES.values())
    assert sum(p.numel() for p in D.parameters()) == sum(int(np.prod(s)) for s in A.D_SHAPES.values())
    # the §5 features of the authors' script: conv1-3 max-pooled to 4x4 each, 16 * (64 + 128 + 256)
    assert fe.feature_dim(cfg) == 7168


# ---------------------------------------------------------------- the conversion, by measured properties

def test_right_reading_has_every_property(right_check):
    c = right_check
    assert c.d_ok, c  # D calls structureless images fake
    assert c.g_ok, c  # D scores G's samples far above their shuffled pixels; the samples are bluer than red


G_VARIANTS = {
    "kernels unflipped": dict(flip=False),
    "padding off by one (+1)": dict(shift=1),
    "padding off by one (-1)": dict(shift=-1),
    "RGB read as BGR": dict(bgr=True),
    "in/out channel axes swapped": dict(io="swapped"),
    "dense units in (4, 4, C) order": dict(dense="hwc"),
}
D_VARIANTS = {
    "kernels unflipped": dict(flip=False),
    "padding off by one (+1)": dict(shift=1),
    "padding off by one (-1)": dict(shift=-1),
    "in/out channel axes swapped": dict(io="swapped"),
    "dense units in (4, 4, C) order": dict(dense="hwc"),
}


@pytest.mark.parametrize("name", list(G_VARIANTS))
def test_wrong_generator_fails_its_property(arrays, right, right_check, name):
    G_wrong = A.convert_generator(arrays, A.with_orientation(**G_VARIANTS[name]))
    c = A.conversion_check(G_wrong, right[1], n=256)
    assert not c.g_ok, (name, c)
    assert right_check.g_ok


@pytest.mark.parametrize("name", list(D_VARIANTS))
def test_wrong_discriminator_fails_its_property(arrays, right, right_check, name):
    D_wrong = A.convert_discriminator(arrays, A.with_orientation(**D_VARIANTS[name]))
    c = A.conversion_check(right[0], D_wrong, n=256)
    assert not c.d_ok, (name, c)
    assert right_check.d_ok


def test_bgr_variant_fails_the_colour_property_only(arrays, right):
    # Swapping colour channels keeps structure (D cannot tell; its margin stays) but makes red the brighter channel.
    c = A.conversion_check(A.convert_generator(arrays, A.with_orientation(bgr=True)), right[1], n=256)
    assert c.margin[1] > A.MIN_MARGIN and c.blue_minus_red[2] < 0


def test_orientation_rejects_unknown_readings():
    with pytest.raises(ValueError, match="dense"):
        A.Orientation(dense="whc")
    with pytest.raises(ValueError, match="io"):
        A.Orientation(io="out_in")
    with pytest.raises(ValueError, match="shift"):
        A.Orientation(shift=3)


def test_models_config_extension_keeps_defaults_out_of_the_dict():
    d = ModelConfig().to_dict()
    assert "kernel_size" not in d and "g_unit_bn" not in d and "bn_eps" not in d
    cfg = A.authors_config()
    assert ModelConfig(**cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="kernel_size"):
        ModelConfig(kernel_size=3)
    with pytest.raises(ValueError, match="bn_eps"):
        ModelConfig(bn_eps=0)


def test_estimate_batchnorm_averages_batch_statistics():
    G = A.convert_generator(A.load_arrays())
    zs = [torch.randn(64, 100, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    A.estimate_batchnorm(G, zs)
    bn = G.blocks[1][1]
    first = copy.deepcopy(G.blocks[0]).train()  # in training the first BN used each batch's own statistics
    with torch.no_grad():
        pre = [G.blocks[1][0](first(z[:, :, None, None])) for z in zs]
    want = torch.stack([p.mean((0, 2, 3)) for p in pre]).mean(0)
    assert torch.allclose(bn.running_mean, want, atol=1e-4)
    assert not G.training
    with pytest.raises(ValueError, match="at least one batch"):
        A.estimate_batchnorm(G, [torch.randn(1, 100)])


def test_as_svhn_like():
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    y = A.as_svhn_like(x)
    assert y.shape == (5, 3, 32, 32) and y.dtype == torch.uint8
    assert torch.equal(y[:, 0], y[:, 2])
    with pytest.raises(ValueError, match="uint8"):
        A.as_svhn_like(x.float())
    with pytest.raises(ValueError, match="N, 1 or 3"):
        A.as_svhn_like(x[0])


def test_converted_nets_round_trip_through_the_checkpoint_format(tmp_path, right):
    # The extended config travels with the weights: a converted G saved as a dcgan-net file loads as the same net.
    from dcgan.checkpoints import _net_file, atomic_save, load_generator

    G = A.convert_generator(A.load_arrays())
    A.estimate_batchnorm(G, [torch.randn(32, 100, generator=torch.Generator().manual_seed(i)) for i in range(2)])
    atomic_save(_net_file(G, G.cfg), tmp_path / "G.pt")
    G2 = load_generator(tmp_path / "G.pt")
    assert G2.cfg == A.authors_config()
    z = torch.randn(4, 100)
    with torch.no_grad():
        assert torch.equal(G.eval()(z), G2(z))


def test_stroke_mask_follows_the_digit_whatever_its_polarity():
    x = torch.full((2, 3, 32, 32), -0.5)
    x[0, :, 8:24, 14:18] = 0.8  # a light bar on a dark plate
    x[1] = 0.6
    x[1, :, 8:24, 14:18] = -0.7  # a dark bar on a light plate
    m = A.stroke_mask(x, 0.3)
    assert m[:, 8:24, 14:18].all() and m.float().mean() == 64 / 1024
    with pytest.raises(ValueError, match="N, C, H, W"):
        A.stroke_mask(x[0], 0.3)


def test_digit_attribute_judges_read_polarity_and_tone():
    x = torch.full((2, 3, 32, 32), -0.5)
    x[0, :, 8:24, 14:18] = 0.8  # light digit on dark
    x[1] = 0.6
    x[1, :, 8:24, 14:18] = -0.7  # dark digit on light
    x[0, 0] += 0.3  # the first plate warm (red up), the second cool (blue up)
    x[1, 2] += 0.3
    selectors, judges = A.digit_attribute_tests(tone_level=0.0)
    for tests in (selectors, judges):
        assert tests["polarity"].predict(x) == ["light on dark", "dark on light"]
        assert tests["tone"].predict(x) == ["warm", "cool"]


def test_transposed_convs_are_the_adjoints_of_the_authors_strided_convs(right):
    # Theano's deconv is the input-gradient of dnn_conv(subsample=2, border_mode=2): G's upsampling layers must be
    # exactly the adjoints of Conv2d(k5, s2, p2) with the same kernel, <convT(y), x> = <y, conv(x)> for all x, y.
    import torch.nn.functional as F

    G = right[0]
    for up in (G.blocks[1][0], G.blocks[2][0], G.out[0]):
        w = up.weight.detach()  # (in, out, 5, 5)
        y = torch.randn(2, w.shape[0], 4, 4, dtype=torch.float64)
        x = torch.randn(2, w.shape[1], 8, 8, dtype=torch.float64)
        lhs = (F.conv_transpose2d(y, w.double(), stride=up.stride, padding=up.padding,
                                  output_padding=up.output_padding) * x).sum()
        rhs = (y * F.conv2d(x, w.double(), stride=2, padding=2)).sum()
        assert torch.allclose(lhs, rhs), up
        assert up.kernel_size == (5, 5) and up.padding == (2, 2) and up.output_padding == (1, 1)


def test_feature_protocol_pairs_the_label_draws_across_representations():
    # Every representation sees the same label draws (same seed, same pool labels): two copies of one
    # representation get the same errors draw for draw, so differences between representations pair per draw.
    g = torch.Generator().manual_seed(0)
    y = np.arange(120) % 4
    imgs = (torch.rand(120, 1, 8, 8, generator=g) * 60).to(torch.uint8)
    imgs[:, 0, 0, :4] = torch.as_tensor(y * 50, dtype=torch.uint8)[:, None]  # a class signal in the pixels
    flat = lambda x: x.float().flatten(1).numpy()
    feats = {"pixels": flat, "copy": lambda x: flat(x).copy()}
    out = A.feature_protocol(feats, imgs[:80], y[:80], imgs[80:100], y[80:100], imgs[100:], y[100:], Cs=[1e-3, 1e-2],
                             select_draws=1, test_draws=3, per_class=5, seed=0)
    assert set(out) == {"pixels", "copy"}
    assert np.array_equal(out["pixels"].test_errors, out["copy"].test_errors)
    assert out["pixels"].test_errors.mean() < 50  # the signal is found: the draws are real fits, not chance
