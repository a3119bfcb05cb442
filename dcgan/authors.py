"""The authors' released SVHN DCGAN (paper §5.2) as this library's ``Generator`` and ``Discriminator``.

Radford, Metz and Chintala released the weights of their SVHN DCGAN (Newmu/dcgan_code, MIT licence):
18 float32 arrays, committed here as ``dcgan/weights/authors_svhn_dcgan.npz`` with their licence, source
and SHA-256 (``dcgan/weights/PROVENANCE.md``). :func:`load_arrays` checks the checksum and reads them
with ``allow_pickle=False``; :func:`convert_generator` / :func:`convert_discriminator` put them into
``dcgan.models``' nets (config :func:`authors_config`), so the feature, latent-space, internals and
metrics code run on the paper's own model unchanged.

What the conversion has to get right (each choice is an :class:`Orientation` field, so the tests can
build every wrong variant and show that a measured property fails for it):

* **flip**: Theano's ``dnn_conv`` (and ``deconv``, its input gradient) *convolve*, PyTorch correlates:
  every 5x5 kernel is flipped in both spatial axes.
* **padding**: ``dnn_conv(..., subsample=2, border_mode=2)`` is ``Conv2d(k5, s2, p2)``; ``deconv`` with the
  same arguments is its adjoint, ``ConvTranspose2d(k5, s2, p2, output_padding=1)`` (``kernel_size=5``).
* **channel axes**: a deconv kernel ``(256, 128, 5, 5)`` is laid out (input, output) like PyTorch's
  ``ConvTranspose2d.weight``; conv kernels are (output, input) like ``Conv2d.weight``.
* **the dense layers**: G's ``T.dot(Z, gw)`` reshaped to (256, 4, 4) is a ``ConvTranspose2d(100, 256, 4)``
  on a 1x1 input with ``gw.reshape(100, 256, 4, 4)`` (channel-major), and its BatchNorm normalises each
  of the 4096 units (``g_unit_bn``); D's ``T.dot(flatten(h3), dwy)`` is a ``Conv2d(256, 1, 4)``.
* **colour**: ``svhn/load.py`` transposes the ``.mat`` array to (N, C, H, W) without reordering, so
  channel 0 is red, as in ``dcgan.data``; pixels are scaled ``x / 127.5 - 1`` as ours.
* **BatchNorm statistics**: the authors' nets normalise with each batch's statistics (epsilon 1e-8) and
  keep no running averages. G's are estimated here from its own samples (:func:`estimate_batchnorm`),
  D's from G's samples; the feature protocol re-estimates D's on the target's training images
  (``features.recalibrate_batchnorm``), as their analysis script does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .models import Discriminator, Generator, ModelConfig

__all__ = [
    "WEIGHTS",
    "SHA256",
    "SOURCE",
    "G_SHAPES",
    "D_SHAPES",
    "Orientation",
    "RIGHT",
    "authors_config",
    "load_arrays",
    "convert_generator",
    "convert_discriminator",
    "estimate_batchnorm",
    "authors_models",
    "as_svhn_like",
    "with_orientation",
    "batch_logits",
    "shuffle_pixels",
    "ConversionCheck",
    "conversion_check",
    "SVHN_CHANNEL_MEANS",
    "feature_protocol",
    "stroke_mask",
    "digit_attribute_tests",
    "DIGIT_ARITHMETIC",
]

WEIGHTS = Path(__file__).parent / "weights" / "authors_svhn_dcgan.npz"
SHA256 = "628418817589c8fd9d1213d1201bd390d71a1f7aa5498e0abc108878e1a8c330"
SOURCE = {
    "repository": "Newmu/dcgan_code",
    "commit": "ee12b2d15a3856794b8dae77d1eb263c67c36e47",
    "folder": "models/svhn_unsup_all_conv_dcgan_100z_gaussian_lr_0.0005_64mb",
    "files": "200_gen_params.jl_01.npy ... _10.npy, 200_discrim_params.jl_01.npy ... _08.npy",
    "licence": "MIT, copyright (c) 2015 Alec Radford (dcgan/weights/LICENSE-dcgan_code)",
}
# The arrays in the order of the authors' gen_params / discrim_params lists, with their shapes.
G_SHAPES = {
    "gw": (100, 4096), "gg": (4096,), "gb": (4096,),
    "gw2": (256, 128, 5, 5), "gg2": (128,), "gb2": (128,),
    "gw3": (128, 64, 5, 5), "gg3": (64,), "gb3": (64,),
    "gwx": (64, 3, 5, 5),
}
D_SHAPES = {
    "dw": (64, 3, 5, 5),
    "dw2": (128, 64, 5, 5), "dg2": (128,), "db2": (128,),
    "dw3": (256, 128, 5, 5), "dg3": (256,), "db3": (256,),
    "dwy": (4096, 1),
}


@dataclass(frozen=True)
class Orientation:
    """How the authors' arrays are read. :data:`RIGHT` is the reading established in ``tests/test_authors.py``.

    ``flip``: flip every 5x5 kernel spatially (Theano convolves, PyTorch correlates). ``shift``: move every
    kernel's window by this many pixels (a padding off by one is the same map as a window shifted by one).
    ``bgr``: reverse the colour channels of G's output and D's input. ``dense``: the order of the 4096 units
    of the dense layers, ``"chw"`` (Theano's C-order reshape to (256, 4, 4)) or ``"hwc"``. ``io``:
    ``"swapped"`` reads every weight's memory with its first two axes exchanged (a kernel taken for the
    other layout, forced into the expected shape).
    """

    flip: bool = True
    shift: int = 0
    bgr: bool = False
    dense: str = "chw"
    io: str = "in_out"

    def __post_init__(self) -> None:
        if self.dense not in ("chw", "hwc"):
            raise ValueError(f"dense must be 'chw' or 'hwc', got {self.dense!r}")
        if self.io not in ("in_out", "swapped"):
            raise ValueError(f"io must be 'in_out' or 'swapped', got {self.io!r}")
        if abs(self.shift) > 2:
            raise ValueError(f"shift must be within -2..2 pixels of a 5x5 kernel, got {self.shift}")


RIGHT = Orientation()


def authors_config() -> ModelConfig:
    """The released SVHN nets: 32x32x3, z of 100 from N(0, 1), G 256-128-64 and D 64-128-256 channels, 5x5 kernels."""
    return ModelConfig(image_size=32, channels=3, nz=100, ngf=64, ndf=64, z_dist="normal",
                       kernel_size=5, g_unit_bn=True, bn_eps=1e-8)


def load_arrays(path: str | Path = WEIGHTS, sha256: str = SHA256) -> dict[str, np.ndarray]:
    """The 18 arrays, after checking the file's SHA-256; ``allow_pickle=False`` (nothing is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the authors' SVHN weights are missing (they ship with the package; "
                                "see dcgan/weights/PROVENANCE.md)")
    with open(path, "rb") as f:
        got = hashlib.file_digest(f, "sha256").hexdigest()
    if got != sha256:
        raise ValueError(f"{path}: SHA-256 {got} does not match the committed weights' {sha256}; the file was "
                         "changed or truncated: restore it from git (dcgan/weights/PROVENANCE.md)")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    want = {**G_SHAPES, **D_SHAPES}
    if set(arrays) != set(want):
        raise ValueError(f"{path}: arrays {sorted(arrays)}, expected {sorted(want)}")
    for k, shape in want.items():
        if arrays[k].shape != shape or arrays[k].dtype != np.float32:
            raise ValueError(f"{path}: {k} is {arrays[k].dtype} {arrays[k].shape}, expected float32 {shape}")
    return arrays


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).float()


def _io(w: torch.Tensor, o: Orientation) -> torch.Tensor:
    if o.io == "in_out":
        return w
    return w.reshape(w.shape[1], w.shape[0], *w.shape[2:]).transpose(0, 1).contiguous()


def _kernel(w: np.ndarray, o: Orientation) -> torch.Tensor:
    """A Theano 5x5 kernel as a PyTorch one: flipped (convolution -> correlation), optionally mis-read."""
    k = _io(_t(w), o)
    if o.flip:
        k = k.flip(-1, -2)
    if o.shift:  # the window moved by `shift` pixels, zeros shifted in
        k = torch.roll(k, (o.shift, o.shift), (-2, -1))
        s = o.shift
        if s > 0:
            k[..., :s, :] = 0
            k[..., :, :s] = 0
        else:
            k[..., s:, :] = 0
            k[..., :, s:] = 0
    return k.contiguous()


def _units(v: torch.Tensor, o: Orientation, c: int = 256) -> torch.Tensor:
    """A dense layer's 4096 units (last axis) in (C, 4, 4) order."""
    if o.dense == "chw":
        return v.reshape(*v.shape[:-1], c, 4, 4)
    return v.reshape(*v.shape[:-1], 4, 4, c).movedim(-1, -3)


def _check(arrays: dict[str, np.ndarray], shapes: dict[str, tuple]) -> None:
    for k, shape in shapes.items():
        if k not in arrays:
            raise KeyError(f"array {k!r} missing: the authors' arrays are {sorted(shapes)}")
        if tuple(arrays[k].shape) != shape:
            raise ValueError(f"array {k!r} has shape {tuple(arrays[k].shape)}, expected {shape}")


def _put(module: nn.Module, name: str, value: torch.Tensor) -> None:
    p = getattr(module, name)
    if p.shape != value.shape:
        raise ValueError(f"{type(module).__name__}.{name}: converted shape {tuple(value.shape)} does not fit "
                         f"{tuple(p.shape)}")
    with torch.no_grad():
        p.copy_(value)


def convert_generator(arrays: dict[str, np.ndarray], orientation: Orientation = RIGHT) -> Generator:
    """The authors' G as a :class:`~dcgan.models.Generator` (BatchNorm running statistics not yet estimated)."""
    _check(arrays, G_SHAPES)
    o = orientation
    G = Generator(authors_config())
    first = G.blocks[0]
    gw = _io(_t(arrays["gw"]), o)  # (100, 4096): z @ gw
    _put(first[0], "weight", _units(gw, o))
    bn0 = first[2]
    _put(bn0, "weight", _units(_t(arrays["gg"]), o).reshape(-1))
    _put(bn0, "bias", _units(_t(arrays["gb"]), o).reshape(-1))
    for block, (w, g, b) in zip(G.blocks[1:], [("gw2", "gg2", "gb2"), ("gw3", "gg3", "gb3")]):
        _put(block[0], "weight", _kernel(arrays[w], o))
        _put(block[1], "weight", _t(arrays[g]))
        _put(block[1], "bias", _t(arrays[b]))
    wx = _kernel(arrays["gwx"], o)  # (64, 3, 5, 5): (in, out)
    _put(G.out[0], "weight", wx.flip(1) if o.bgr else wx)
    return G


def convert_discriminator(arrays: dict[str, np.ndarray], orientation: Orientation = RIGHT) -> Discriminator:
    """The authors' D as a :class:`~dcgan.models.Discriminator` (returns the logit; their sigmoid is the loss's)."""
    _check(arrays, D_SHAPES)
    o = orientation
    D = Discriminator(authors_config())
    w = _kernel(arrays["dw"], o)  # (64, 3, 5, 5): (out, in)
    _put(D.blocks[0][0], "weight", w.flip(1) if o.bgr else w)
    for block, (w, g, b) in zip(D.blocks[1:], [("dw2", "dg2", "db2"), ("dw3", "dg3", "db3")]):
        _put(block[0], "weight", _kernel(arrays[w], o))
        _put(block[1], "weight", _t(arrays[g]))
        _put(block[1], "bias", _t(arrays[b]))
    wy = _io(_t(arrays["dwy"]), o)  # (4096, 1): flatten(h3) @ wy
    _put(D.head[0], "weight", _units(wy.T, o))
    return D


@torch.no_grad()
def estimate_batchnorm(net: nn.Module, batches, *, call=None) -> nn.Module:
    """``net``'s BatchNorm running statistics set to the average of per-batch statistics over ``batches``.

    The authors' nets normalise with each batch's statistics and keep no averages; averaging the
    per-batch means and variances (``momentum=None``) is what their analysis script does for D
    (``infer_bnorm_stats``). ``call(net, batch)`` runs one batch (default ``net(batch)``). Returns ``net`` in
    eval mode.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    n = 0
    for b in batches:
        if len(b) < 2:
            continue
        (call or (lambda m, x: m(x)))(net, b)
        n += 1
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    if bns and n == 0:
        raise ValueError("estimate_batchnorm needs at least one batch of two or more inputs")
    return net.eval()


def authors_models(orientation: Orientation = RIGHT, *, n_bn: int = 2048, batch_size: int = 128, seed: int = 0,
                   path: str | Path = WEIGHTS) -> tuple[Generator, Discriminator]:
    """The released G and D, converted, in eval mode, with BatchNorm statistics.

    G's statistics are averaged over ``n_bn / batch_size`` batches of its own samples (z ~ N(0, 1), the
    authors' batch of 128); D's over the same batches of G's samples (the only SVHN-like images the
    book has offline; the §5 protocol re-estimates D's on the target's training images).
    """
    arrays = load_arrays(path)
    G = convert_generator(arrays, orientation)
    D = convert_discriminator(arrays, orientation)
    gen = torch.Generator().manual_seed(seed)
    zs = [torch.randn(batch_size, G.cfg.nz, generator=gen) for _ in range(max(1, n_bn // batch_size))]
    estimate_batchnorm(G, zs)
    with torch.no_grad():
        xs = [G(z) for z in zs]
    estimate_batchnorm(D, xs)
    return G, D


def as_svhn_like(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Grey uint8 digits (N, 1, H, W) as the authors' D takes SVHN: ``size`` x ``size``, three equal channels, uint8.

    (Scaling to [-1, 1] is ``x / 127.5 - 1`` as in their script, done by the feature code.)
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (as dcgan.data stores them), got {images.dtype}")
    x = images
    if x.shape[-1] != size or x.shape[-2] != size:
        from .data import resize_uint8
        x = resize_uint8(x, size)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


def with_orientation(o: Orientation = RIGHT, **changes) -> Orientation:
    """``o`` with fields changed (a wrong variant of :data:`RIGHT` for the tests)."""
    return replace(o, **changes)


# SVHN's per-channel means (R, G, B in [0, 1]) over its training split, the normalisation constants commonly used
# for it: blue is the brightest channel, red the darkest. The paper profile measures them on the real files.
SVHN_CHANNEL_MEANS = (0.4377, 0.4438, 0.4728)
# Thresholds of the conversion check (logits of D): a trained D calls structureless images fake, and scores
# its G's samples well above their own pixels shuffled. Right reading: about -12 and +7 (tests/test_authors.py).
NOISE_MAX_LOGIT = -3.0
MIN_MARGIN = 3.0


@torch.no_grad()
def batch_logits(D: Discriminator, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """D's logits with every batch normalised by its own statistics, as the authors' D ran in training.

    Runs on a copy (train-mode BatchNorm would otherwise update ``D``'s running statistics).
    """
    import copy

    Dc = copy.deepcopy(D).train()
    return torch.cat([Dc(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def shuffle_pixels(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Each image's pixel positions permuted (one permutation for all channels): the colours kept, no structure."""
    n, c, h, w = images.shape
    gen = torch.Generator().manual_seed(seed)
    perm = torch.argsort(torch.rand(n, h * w, generator=gen), 1)
    flat = images.flatten(2)
    return torch.gather(flat, 2, perm[:, None, :].expand(n, c, -1)).view_as(images)


@dataclass
class ConversionCheck:
    """Properties a right reading of the released nets has (each with a 95 % interval, bootstrap over samples).

    ``noise_logit``: D's mean logit on G's samples with their pixels shuffled (a trained D calls them
    fake: below :data:`NOISE_MAX_LOGIT`). ``margin``: D's mean logit on G's samples minus on their
    shuffled copies (the two nets agree that the samples have the structure of SVHN images: above
    :data:`MIN_MARGIN`). ``blue_minus_red``: the samples' mean blue minus mean red in [0, 1] (SVHN's images
    are bluer than red, :data:`SVHN_CHANNEL_MEANS`: above 0).
    """

    noise_logit: tuple[float, float, float]
    margin: tuple[float, float, float]
    blue_minus_red: tuple[float, float, float]

    @property
    def d_ok(self) -> bool:
        return self.noise_logit[2] < NOISE_MAX_LOGIT

    @property
    def g_ok(self) -> bool:
        return self.margin[1] > MIN_MARGIN and self.blue_minus_red[1] > 0

    @property
    def ok(self) -> bool:
        return self.d_ok and self.g_ok

    def rows(self) -> list[tuple[str, tuple[float, float, float], str]]:
        return [("D's logit on shuffled-pixel images", self.noise_logit, f"< {NOISE_MAX_LOGIT:g}"),
                ("D's logit on samples minus on shuffled", self.margin, f"> {MIN_MARGIN:g}"),
                ("samples' blue minus red", self.blue_minus_red, "> 0")]


def _mean_ci(v: torch.Tensor, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    v = v.double().numpy()
    rng = np.random.default_rng(seed)
    boots = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
    return float(v.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


@torch.no_grad()
def conversion_check(G: Generator, D: Discriminator, n: int = 512, seed: int = 0, batch_size: int = 128
                     ) -> ConversionCheck:
    """:class:`ConversionCheck` of a converted pair on ``n`` samples, both nets in the authors' batch mode."""
    import copy

    z = torch.randn(n, G.cfg.nz, generator=torch.Generator().manual_seed(seed))
    Gc = copy.deepcopy(G).train()
    x = torch.cat([Gc(z[i:i + batch_size]) for i in range(0, n, batch_size)])
    noise = shuffle_pixels(x, seed)
    d_x, d_noise = batch_logits(D, x, batch_size), batch_logits(D, noise, batch_size)
    rgb = (x + 1) / 2
    return ConversionCheck(_mean_ci(d_noise, seed=seed), _mean_ci(d_x - d_noise, seed=seed),
                           _mean_ci(rgb[:, 2].mean((1, 2)) - rgb[:, 0].mean((1, 2)), seed=seed))


def feature_protocol(featurizers: dict, pool: torch.Tensor, y_pool, val: torch.Tensor, y_val, test: torch.Tensor,
                     y_test, *, Cs=None, select_draws: int = 10, test_draws: int = 100, per_class: int = 100,
                     seed: int = 0, timer=None) -> dict:
    """§5.2 by the authors' analysis script (``features.authors_svhn_protocol``) for several representations.

    ``featurizers`` maps a name to a function of uint8 images -> features (each gets the images it was
    made for: wrap them beforehand, e.g. :func:`as_svhn_like` for the authors' D). Every representation's
    pool, validation and test features are computed once; the label draws are the same for all (same
    seed, same pool labels), so their per-draw test errors are paired. Returns ``{name: DrawsResult}``.
    """
    import contextlib

    from .features import AUTHORS_CS, authors_svhn_protocol

    y_pool, y_val, y_test = (np.asarray(v) for v in (y_pool, y_val, y_test))
    step = timer or (lambda name: contextlib.nullcontext())
    out = {}
    for name, fn in featurizers.items():
        with step(f"features: {name}"):
            Xp, Xv, Xt = fn(pool), fn(val), fn(test)
        with step(f"L2-SVM, the authors' protocol: {name}"):
            out[name] = authors_svhn_protocol(lambda i: Xp[i], y_pool, Xv, y_val, Xt, y_test,
                                              Cs=AUTHORS_CS if Cs is None else Cs, select_draws=select_draws,
                                              test_draws=test_draws, per_class=per_class, seed=seed)
    return out


def stroke_mask(images: torch.Tensor, threshold: float) -> torch.Tensor:
    """Where a house number's strokes are: pixels whose grey level (in [-1, 1]) differs from the image's median grey
    by more than ``threshold``, (N, H, W) bool.

    A digit covers less of an SVHN crop than its background, so the median grey is the background's and the
    strokes are the pixels far from it, whichever the polarity (light on dark or dark on light). The threshold
    is fixed (not per image), so strokes that fade leave the mask.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    g = images.float().mean(1)
    med = g.flatten(1).median(1).values[:, None, None]
    return (g - med).abs() > threshold


# §6.3.2 on house numbers: light digit on a warm plate - light digit on a cool plate + dark digit on a cool plate
# = dark digit on a warm plate (A - B + C; the attributes where A and B differ take A's value).
DIGIT_ARITHMETIC = (
    {"polarity": "light on dark", "tone": "warm"},
    {"polarity": "light on dark", "tone": "cool"},
    {"polarity": "dark on light", "tone": "cool"},
)


def _two(p: torch.Tensor) -> np.ndarray:
    p = p.double().clamp(0, 1).numpy()
    return np.stack([p, 1 - p], 1)


def digit_attribute_tests(tone_level: float, scale: float = 0.05):
    """Selectors and judges of two attributes of a house number, as ``dcgan.latent.AttributeTest`` pairs.

    * **polarity** ("light on dark" / "dark on light"). Selector: on the 8x8 mean-pooled grey image, the mean
      signed deviation from the median of the quarter of cells farthest from it (the strokes, coarsely:
      above the median for light strokes). Judge, at full resolution: the grey histogram's skew, mean minus
      median (strokes cover less of the crop than the background, so light strokes pull the mean above the
      median).
    * **tone** ("warm" / "cool"): red minus blue, against ``tone_level`` (the median over a pool of samples,
      which are blue on the whole as SVHN is). Selector: the mean of R - B over the 8x8 pooled image.
      Judge: the median over the full-resolution pixels.

    The selectors choose exemplars (on coarse pixels, soft scores); the judges, other statistics of the
    full image, decide what an output shows (hard decisions). Returns ``(selectors, judges)``, dicts of
    :class:`~dcgan.latent.AttributeTest` keyed by attribute name.
    """
    import torch.nn.functional as F

    from .latent import AttributeTest

    def pooled(x):
        return F.adaptive_avg_pool2d(x.float(), 8)

    def pol_select(x):
        d = pooled(x).mean(1).flatten(1)
        d = d - d.median(1, keepdim=True).values
        far = d.abs() >= d.abs().quantile(0.75, dim=1, keepdim=True)
        return _two(torch.sigmoid((d * far).sum(1) / far.sum(1) / scale))

    def pol_judge(x):
        g = x.float().mean(1).flatten(1)
        return _two((g.mean(1) > g.median(1).values).double())

    def tone_select(x):
        p = pooled(x)
        return _two(torch.sigmoid(((p[:, 0] - p[:, 2]).mean((1, 2)) - tone_level) / scale))

    def tone_judge(x):
        d = (x[:, 0].float() - x[:, 2].float()).flatten(1)
        return _two((d.median(1).values > tone_level).double())

    pol, tone = ["light on dark", "dark on light"], ["warm", "cool"]
    selectors = {"polarity": AttributeTest("polarity", pol, pol_select), "tone": AttributeTest("tone", tone, tone_select)}
    judges = {"polarity": AttributeTest("polarity", pol, pol_judge), "tone": AttributeTest("tone", tone, tone_judge)}
    return selectors, judges
