"""What the networks learned inside: D's features and G's object maps (paper §6.2, §6.3.1, Figure 5, 6).

* :func:`guided_relus`, :func:`guided_backprop`, :func:`top_responses`:
  guided backpropagation (Springenberg et al. 2014) through D's LeakyReLUs,
  for the images and positions where the first features of D's last conv
  layer respond most (Fig. 5), beside the same for a random-filter D
  (:func:`random_discriminator`), with numbers for what the figure shows
  (:func:`response_purity`, :func:`map_correlation`).
* :func:`block_features`, :func:`fit_region_classifier`, :func:`forget`:
  §6.3.1 "forgetting to draw" a concept. A logistic regression on G's
  second-highest conv layer predicts "inside the concept's region" per
  position; every feature map with a positive weight is zeroed at all
  positions and the same z are rendered again. The paper boxed windows by
  hand; here a region comes from an automatic mask (:func:`hue_mask`), and a
  control drops as many random maps.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .latent import generate
from .models import Discriminator, Generator

__all__ = [
    "guided_relus",
    "guided_backprop",
    "top_responses",
    "Responses",
    "random_discriminator",
    "response_purity",
    "feature_purities",
    "chance_purity",
    "edge_magnitude",
    "map_correlation",
    "saliency_image",
    "saliency_comparison",
    "hue_mask",
    "brightness_mask",
    "block_features",
    "drop_maps",
    "RegionClassifier",
    "fit_region_classifier",
    "ForgetResult",
    "forget",
]


# ----------------------------------------------------------------- guided backprop

@contextmanager
def guided_relus(model: nn.Module) -> Iterator[int]:
    """Make every (Leaky)ReLU of ``model`` pass gradients the guided-backprop way, for the duration.

    A hooked unit passes ``max(grad, 0)`` where its forward input was
    positive and zero elsewhere: the gradient is zeroed where the forward
    was negative (ordinary ReLU backprop; LeakyReLU would pass ``slope *
    grad``) AND where the incoming gradient is negative (the "deconvnet"
    rule). In-place activations are switched off meanwhile, since backward
    hooks need the module's own output. Yields the number of hooked modules.
    """
    hooked = [m for m in model.modules() if isinstance(m, (nn.LeakyReLU, nn.ReLU))]
    if not hooked:
        raise ValueError("guided backprop needs (Leaky)ReLU modules in the model; found none")
    handles, inplace = [], []

    def fwd(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        mod._gbp_mask = inp[0].detach() > 0

    def bwd(mod: nn.Module, grad_in: tuple, grad_out: tuple):
        return (grad_out[0].clamp(min=0) * mod._gbp_mask,)

    try:
        for m in hooked:
            inplace.append(m.inplace)
            m.inplace = False
            handles.append(m.register_forward_hook(fwd))
            handles.append(m.register_full_backward_hook(bwd))
        yield len(hooked)
    finally:
        for h in handles:
            h.remove()
        for m, ip in zip(hooked, inplace):
            m.inplace = ip
            if hasattr(m, "_gbp_mask"):
                del m._gbp_mask


def _layer_output(D: Discriminator, x: torch.Tensor, layer: int) -> torch.Tensor:
    h = D._input(x, None)
    blocks = list(D.blocks)
    stop = layer % len(blocks)
    for i, block in enumerate(blocks):
        h = block(h)
        if i == stop:
            return h
    raise AssertionError("unreachable")


def guided_backprop(D: Discriminator, images: torch.Tensor, channels: Sequence[int],
                    positions: Sequence[tuple[int, int]], layer: int = -1) -> torch.Tensor:
    """d unit / d image under guided backprop, one unit per image: (N, C, H, W).

    Unit n is channel ``channels[n]`` at spatial ``positions[n]`` of block
    ``layer``'s output (default: D's last conv layer).
    """
    if not (len(images) == len(channels) == len(positions)):
        raise ValueError("one channel and one position per image")
    D.eval()
    x = images.detach().float().clone().requires_grad_(True)
    with guided_relus(D):
        h = _layer_output(D, x, layer)
        n = torch.arange(len(x))
        ch = torch.as_tensor(list(channels))
        ys = torch.as_tensor([p[0] for p in positions])
        xs = torch.as_tensor([p[1] for p in positions])
        h[n, ch, ys, xs].sum().backward()
    return x.grad.detach()


@dataclass
class Responses:
    """Where the chosen features of a layer respond most: per feature, the top-k images and positions."""

    channels: list[int]
    index: torch.Tensor  # (features, k) image indices
    position: torch.Tensor  # (features, k, 2) (row, col) of the maximal response
    value: torch.Tensor  # (features, k) activation values


@torch.no_grad()
def top_responses(D: Discriminator, images: torch.Tensor, channels: Sequence[int] = range(6), k: int = 8,
                  layer: int = -1, batch_size: int = 256) -> Responses:
    """For each channel ("axis-aligned" feature) the ``k`` images whose maximal response is largest."""
    D.eval()
    maps = torch.cat([_layer_output(D, c.float(), layer)[:, list(channels)] for c in images.split(batch_size)])
    n, f, h, w = maps.shape
    if k > n:
        raise ValueError(f"k={k} top responses asked from only {n} images")
    best, where = maps.flatten(2).max(2)  # (N, features)
    val, idx = best.topk(k, dim=0)  # (k, features)
    pos = where.gather(0, idx)
    position = torch.stack([pos // w, pos % w], -1)  # (k, features, 2)
    return Responses(list(channels), idx.T.contiguous(), position.transpose(0, 1).contiguous(), val.T.contiguous())


def random_discriminator(like: Discriminator, images: torch.Tensor, seed: int = 0, batches: int = 4,
                         batch_size: int = 128) -> Discriminator:
    """A D of the same architecture with random (§4 init) filters; BatchNorm statistics set on ``images``.

    The statistics are the only thing taken from data, so its activations
    have the trained D's scale while its filters know nothing.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        D = Discriminator(like.cfg)
    for m in D.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    D.train()
    with torch.no_grad():
        for c in images[: batches * batch_size].split(batch_size):
            D(c.float())
    return D.eval()


def response_purity(labels: torch.Tensor, responses: Responses) -> float:
    """Mean over features of the share of its top-k images that carry its most common label.

    High when a feature responds to one kind of image; a random feature's top
    images are about as mixed as the data (compare with :func:`chance_purity`).
    """
    return float(feature_purities(labels, responses).mean())


def feature_purities(labels: torch.Tensor, responses: Responses) -> np.ndarray:
    """Per feature: the share of its top-k images that carry its most common label (features, )."""
    lab = labels[responses.index]  # (features, k)
    return np.array([torch.bincount(r).max().item() / len(r) for r in lab])


def chance_purity(labels: torch.Tensor, k: int, draws: int = 2000, seed: int = 0) -> float:
    """Expected :func:`response_purity` of ``k`` images drawn at random."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(labels), (draws, k), generator=g)
    lab = labels[idx]
    return float(np.mean([torch.bincount(r).max().item() / k for r in lab]))



def saliency_image(grad: torch.Tensor) -> torch.Tensor:
    """A guided-backprop gradient as a displayable image: centred, scaled by its own spread, in [0, 1]."""
    g = grad - grad.mean(dim=(1, 2, 3), keepdim=True)
    s = g.flatten(1).std(1).clamp_min(1e-12)[:, None, None, None]
    return (0.5 + 0.15 * g / s).clamp(0, 1)


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation, per item, of two batches of saliency magnitudes (|grad| summed over channels)."""
    ma, mb = a.abs().sum(1).flatten(1), b.abs().sum(1).flatten(1)
    ma, mb = ma - ma.mean(1, keepdim=True), mb - mb.mean(1, keepdim=True)
    return (ma * mb).sum(1) / (ma.norm(dim=1) * mb.norm(dim=1)).clamp_min(1e-12)


def edge_magnitude(images: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the grey image, (N, 1, H, W): where the image has edges."""
    g = images.float().mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None]
    gx = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), kx)
    gy = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), kx.transpose(2, 3))
    return (gx**2 + gy**2).sqrt()



def saliency_comparison(D: Discriminator, D_random: Discriminator, images: torch.Tensor, channels: Sequence[int],
                        k: int) -> dict:
    """Fig. 5 for a trained D beside a random-filter one, and the numbers the figure stands for.

    For each D (``"trained"``, ``"random"``): its top ``k`` responses per channel over ``images``
    (:func:`top_responses`), those images, guided backpropagation of each response through that D
    (``grad``) and through the other D for the same units (``grad_other``), and the mean correlation of
    its saliency with the images' edges (``edge_corr``). ``trained_vs_random``: the mean correlation of
    the two Ds' saliency for the trained D's units.
    """
    out: dict = {}
    for tag, net, other in (("trained", D, D_random), ("random", D_random, D)):
        r = top_responses(net, images, channels, k)
        imgs = images[r.index.flatten()]
        chans = [c for c in r.channels for _ in range(k)]
        pos = r.position.flatten(0, 1).tolist()
        g = guided_backprop(net, imgs, chans, pos)
        out[tag] = dict(resp=r, imgs=imgs, grad=g, grad_other=guided_backprop(other, imgs, chans, pos),
                        edge_corr=float(map_correlation(g, edge_magnitude(imgs)).mean()))
    out["trained_vs_random"] = float(map_correlation(out["trained"]["grad"], out["trained"]["grad_other"]).mean())
    return out


# ----------------------------------------------------------------- forgetting (§6.3.1)

def hue_mask(images: torch.Tensor, hue: tuple[float, float], min_sat: float = 0.4, min_val: float = 0.4) -> torch.Tensor:
    """Pixels whose HSV hue lies in ``hue`` (degrees, wraps if lo > hi) and that are saturated and bright: (N, H, W) bool.

    E.g. ``hue=(35, 60)`` is emoji yellow (faces, default skin).
    """
    from matplotlib.colors import rgb_to_hsv

    if images.shape[1] != 3:
        raise ValueError(f"hue_mask needs RGB images (N, 3, H, W), got {tuple(images.shape)}")
    rgb = ((images.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    hsv = torch.from_numpy(rgb_to_hsv(rgb))
    h = hsv[..., 0] * 360
    lo, hi = hue
    inside = (h >= lo) & (h <= hi) if lo <= hi else (h >= lo) | (h <= hi)
    return inside & (hsv[..., 1] >= min_sat) & (hsv[..., 2] >= min_val)


def brightness_mask(images: torch.Tensor, threshold: float) -> torch.Tensor:
    """Pixels whose mean over channels (in [-1, 1]) exceeds ``threshold``: (N, H, W) bool.

    A region for generators whose samples have no saturated colour (a barely trained G).
    """
    return images.float().mean(1) > threshold


@torch.no_grad()
def block_features(G: Generator, z: torch.Tensor, block: int = -2, batch_size: int = 256) -> torch.Tensor:
    """The output of ``G.blocks[block]`` (default the second-highest conv layer) for each z, via a forward hook."""
    G.eval()
    got: list[torch.Tensor] = []
    h = G.blocks[block].register_forward_hook(lambda m, i, o: got.append(o.detach().clone()))
    try:
        for c in z.split(batch_size):
            G(c)
    finally:
        h.remove()
    return torch.cat(got)


@torch.no_grad()
def drop_maps(G: Generator, z: torch.Tensor, maps: Sequence[int], block: int = -2, batch_size: int = 256) -> torch.Tensor:
    """G(z) with feature maps ``maps`` of ``G.blocks[block]`` set to zero at every position."""
    G.eval()
    idx = torch.as_tensor(list(maps), dtype=torch.long)

    def zero(m, i, o):
        o = o.clone()
        o[:, idx] = 0
        return o

    h = G.blocks[block].register_forward_hook(zero)
    try:
        return torch.cat([G(c) for c in z.split(batch_size)])
    finally:
        h.remove()


@dataclass
class RegionClassifier:
    """Logistic regression: G feature vector at a position -> inside the concept's region?"""

    weights: np.ndarray  # (channels,) in standardised units; sign as in raw units
    model: object
    accuracy: float  # balanced accuracy on held-out samples' positions
    n_positive: int
    n_negative: int

    @property
    def positive_maps(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.weights > 0)]


def _position_data(feats: torch.Tensor, masks: torch.Tensor, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-position feature vectors and labels (region covers more than ``threshold`` of the cell)."""
    n, c, h, w = feats.shape
    frac = F.adaptive_avg_pool2d(masks.float()[:, None], (h, w))[:, 0]  # (N, h, w)
    x = feats.permute(0, 2, 3, 1).reshape(-1, c).numpy()
    y = (frac.reshape(-1) > threshold).numpy()
    return x, y


def fit_region_classifier(feats: torch.Tensor, masks: torch.Tensor, test_feats: torch.Tensor,
                          test_masks: torch.Tensor, *, threshold: float = 0.5, C: float = 1.0) -> RegionClassifier:
    """Fit "inside the region vs the rest of the same image" on per-position features (N, C, h, w).

    Positive positions are cells of the feature map that the (image-size)
    mask covers by more than ``threshold``; all other positions of the same
    images are negatives. Classes are balanced by weight.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _position_data(feats, masks, threshold)
    if y.all() or not y.any():
        raise ValueError(
            f"the region masks cover {'every' if y.all() else 'no'} feature position; "
            "choose a concept (e.g. another hue range) that covers part of the images"
        )
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, class_weight="balanced"))
    clf.fit(x, y)
    xt, yt = _position_data(test_feats, test_masks, threshold)
    acc = float(balanced_accuracy_score(yt, clf.predict(xt))) if 0 < yt.sum() < len(yt) else float("nan")
    w = clf[-1].coef_[0]  # StandardScaler divides by a positive scale: signs match the raw features
    return RegionClassifier(w, clf, acc, int(y.sum()), int((~y).sum()))


@dataclass
class ForgetResult:
    """Before/after images and the §6.3.1 measurements (pixel values in [-1, 1])."""

    before: torch.Tensor
    after: torch.Tensor
    control: torch.Tensor  # the same z with as many random maps dropped (first control draw)
    dropped: list[int]
    concept_before: float  # mean share of pixels in the concept's region
    concept_after: float
    concept_control: float
    change_inside: float  # mean |after - before| inside the original region
    change_outside: float  # ... and outside it
    control_inside: float
    control_outside: float
    # per sample: region share before, after, and with random maps dropped (mean over the control draws)
    shares: dict[str, np.ndarray] | None = None

    def removed_minus_control(self, seed: int = 0) -> tuple[float, float, float]:
        """``removed - removed_control`` and its 95 % interval, bootstrapping the samples (paired: the same z
        is rendered under both treatments)."""
        from .intervals import bootstrap_stat_ci

        if self.shares is None:
            raise ValueError("this ForgetResult has no per-sample shares")
        s = self.shares
        return bootstrap_stat_ci(lambda b, a, c: (c.mean() - a.mean()) / max(b.mean(), 1e-12),
                                 s["before"], s["after"], s["control"], seed=seed)

    @property
    def removed(self) -> float:
        """Share of the concept's pixels that disappeared."""
        return 1.0 - self.concept_after / max(self.concept_before, 1e-12)

    @property
    def removed_control(self) -> float:
        return 1.0 - self.concept_control / max(self.concept_before, 1e-12)


def forget(G: Generator, z: torch.Tensor, maps: Sequence[int], mask_fn: Callable[[torch.Tensor], torch.Tensor],
           *, block: int = -2, control_draws: int = 5, seed: int = 0) -> ForgetResult:
    """Render ``z`` with and without ``maps`` and measure what vanished and what stayed.

    The control drops the same number of maps chosen at random (among all of
    the block's maps, ``control_draws`` times), so "the concept went away"
    can be told apart from "dropping that many maps breaks everything".
    """
    if not len(maps):
        raise ValueError("no feature maps to drop: the region classifier gave no map a positive weight")
    before = generate(G, z)
    after = drop_maps(G, z, maps, block)
    m0 = mask_fn(before)
    n_maps = G.cfg.g_widths()[block]
    g = torch.Generator().manual_seed(seed)
    controls = [drop_maps(G, z, torch.randperm(n_maps, generator=g)[: len(maps)].tolist(), block)
                for _ in range(control_draws)]

    def change(x: torch.Tensor) -> tuple[float, float]:
        d = (x - before).abs().mean(1)  # (N, H, W)
        inside = float(d[m0].mean()) if m0.any() else float("nan")
        outside = float(d[~m0].mean()) if (~m0).any() else float("nan")
        return inside, outside

    ci, co = change(after)
    ctrl = [change(c) for c in controls]
    share = lambda x: mask_fn(x).float().flatten(1).mean(1).numpy()  # noqa: E731  (per sample)
    shares = dict(before=share(before), after=share(after), control=np.mean([share(c) for c in controls], 0))
    return ForgetResult(
        before, after, controls[0], [int(i) for i in maps],
        float(shares["before"].mean()), float(shares["after"].mean()), float(shares["control"].mean()),
        ci, co, float(np.mean([c[0] for c in ctrl])), float(np.mean([c[1] for c in ctrl])), shares,
    )


