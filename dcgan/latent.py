"""Walking the latent space and latent vector arithmetic (paper §6.1, §6.3.2, Figures 4, 7, 8).

* :func:`lerp`, :func:`slerp`, :func:`walk` and :func:`interpolation_grid`:
  interpolation between a series of random z (Fig. 4).
* :func:`smoothness`: "smooth transitions" measured, not asserted: the change
  between consecutive frames of a walk against the change between random
  pairs, in pixels and in a classifier's feature space.
* :class:`AttributeTest` and :func:`fit_attribute_test`: small classifiers
  (logistic regression on simple image statistics or a classifier's
  features) that decide whether an image shows a concept, so exemplars are
  picked automatically and the arithmetic is scored unattended.
* :func:`vector_arithmetic`: Y = mean(z_A) - mean(z_B) + mean(z_C) from 3
  exemplars per concept, G(Y) plus 8 samples with uniform +-0.25 noise, the
  same arithmetic in pixel space beside it (Fig. 7), scored over many trials.
* :func:`attribute_direction` / :func:`direction_walk` / :func:`direction_hits`:
  an attribute axis from averaged samples, added along an interpolation
  (Fig. 8's "turn"), scored with and without it on the same walks.

The tests that *select* exemplars (and build the direction) are not the ones
that *judge* the results: a judge is fitted on other real images with another
model and other features (``fit_attribute_test(..., model="forest")``), so
an output cannot pass merely by looking like what the selector picked; the
pixel-space control goes through the same judge. :meth:`ArithmeticResult.differences`
and :func:`direction_hits` give the paired 95 % intervals of the comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .precision import autocast, device_of

__all__ = [
    "lerp",
    "slerp",
    "walk",
    "interpolation_grid",
    "generate",
    "smoothness",
    "colour_histogram",
    "pooled_pixels",
    "foreground_brightness",
    "concat_features",
    "classifier_features",
    "emoji_featurizers",
    "linear_recoverability",
    "AttributeTest",
    "group_split",
    "fit_attribute_test",
    "classifier_test",
    "face_labels",
    "FACE_ARITHMETIC",
    "concept_scores",
    "shows_concept",
    "target_concept",
    "ArithmeticResult",
    "arithmetic_vector",
    "pixel_arithmetic",
    "vector_arithmetic",
    "attribute_direction",
    "direction_walk",
    "direction_hits",
]

Featurizer = Callable[[torch.Tensor], np.ndarray]


# ----------------------------------------------------------------- interpolation

def _as_t(t, z: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
    return t.reshape(-1, *([1] * (z.dim() - 1))) if t.dim() else t


def lerp(z0: torch.Tensor, z1: torch.Tensor, t) -> torch.Tensor:
    """Linear interpolation ``(1 - t) z0 + t z1``; ``t`` a float or a 1-D tensor (one row per value)."""
    if z0.shape != z1.shape:
        raise ValueError(f"lerp endpoints differ in shape: {tuple(z0.shape)} vs {tuple(z1.shape)}")
    t = _as_t(t, z0)
    return (1 - t) * z0 + t * z1


def slerp(z0: torch.Tensor, z1: torch.Tensor, t, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation along the great circle from ``z0`` to ``z1`` (norms interpolated linearly).

    Keeps the path at a typical radius of the prior, unlike lerp, whose
    midpoints are shorter than any sample (White 2016). Falls back to lerp for
    (anti)parallel endpoints, where the great circle is undefined.
    """
    if z0.shape != z1.shape:
        raise ValueError(f"slerp endpoints differ in shape: {tuple(z0.shape)} vs {tuple(z1.shape)}")
    t = _as_t(t, z0)
    n0, n1 = z0.norm(dim=-1, keepdim=True), z1.norm(dim=-1, keepdim=True)
    u0, u1 = z0 / n0.clamp_min(eps), z1 / n1.clamp_min(eps)
    cos = (u0 * u1).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    if bool((so.abs() < 1e-4).all()):
        return lerp(z0, z1, t)
    dirn = (torch.sin((1 - t) * omega) * u0 + torch.sin(t * omega) * u1) / so.clamp_min(1e-12)
    out = dirn * ((1 - t) * n0 + t * n1)
    bad = so.abs() < 1e-4
    return torch.where(bad, lerp(z0, z1, t), out)


def walk(points: torch.Tensor, steps: int, mode: str = "slerp") -> torch.Tensor:
    """Frames through a series of latent points (K, nz): ``steps`` frames per segment, endpoints shared.

    Returns ((K - 1) * (steps - 1) + 1, nz); frame ``i * (steps - 1)`` is ``points[i]`` exactly.
    """
    if points.dim() != 2 or len(points) < 2:
        raise ValueError(f"walk needs at least two latent points as a (K, nz) tensor, got {tuple(points.shape)}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (both endpoints), got {steps}")
    fn = {"lerp": lerp, "slerp": slerp}.get(mode)
    if fn is None:
        raise ValueError(f"mode must be 'lerp' or 'slerp', got {mode!r}")
    t = torch.linspace(0, 1, steps, dtype=points.dtype)
    frames = [points[:1]]
    for a, b in zip(points[:-1], points[1:]):
        seg = fn(a.expand(steps, -1), b.expand(steps, -1), t)
        seg[-1] = b  # exact endpoint (no rounding drift between segments)
        frames.append(seg[1:])
    return torch.cat(frames)


def interpolation_grid(points: torch.Tensor, steps: int, mode: str = "slerp") -> torch.Tensor:
    """Fig. 4's layout: row i interpolates ``points[i]`` -> ``points[i + 1]`` in ``steps`` frames.

    Returns (K - 1, steps, nz): K random points make K - 1 rows, each row's end
    is the next row's start.
    """
    w = walk(points, steps, mode)
    rows = [w[i * (steps - 1) : i * (steps - 1) + steps] for i in range(len(points) - 1)]
    return torch.stack(rows)


@torch.no_grad()
def generate(G: nn.Module, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """G(z) in eval mode, in batches, fp32, on the device of ``z`` (G may live elsewhere); images in [-1, 1]."""
    G.eval()
    dev = next(G.parameters()).device
    flat = z.reshape(-1, z.shape[-1])
    out = torch.cat([G(c.to(dev)).float().to(z.device) for c in flat.split(batch_size)])
    return out.reshape(*z.shape[:-1], *out.shape[1:])


# ----------------------------------------------------------------- smoothness

def _pair_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root-mean-square difference per item (pixel or feature units)."""
    return (a - b).flatten(1).pow(2).mean(1).sqrt()


def smoothness(
    G: nn.Module,
    nz_sampler: Callable[[int], torch.Tensor],
    *,
    segments: int = 32,
    steps: int = 16,
    mode: str = "slerp",
    features: Featurizer | None = None,
    per_walk: bool = False,
) -> dict[str, float | np.ndarray]:
    """How gradually G's output changes along latent walks.

    ``segments`` walks between independent pairs of random z, ``steps`` frames
    each. For each space (``pixel`` and, given ``features``, ``feature``):

    * ``{space}_step``: mean distance between consecutive frames;
    * ``{space}_random``: mean distance between the images of random pairs;
    * ``{space}_step_ratio``: their ratio (1/(steps-1) if change were spread
      evenly along a straight path; ~1 if G jumped between memorised images);
    * ``{space}_max_jump``: mean over walks of the largest step divided by the
      walk's endpoint distance: 1/(steps-1) for an even change, ~1 for a cut;
    * ``{space}_cut_rate``: share of walks whose largest step carries more
      than half of the walk's endpoint distance;
    * with ``per_walk``, ``{space}_jumps``: each walk's largest step over its endpoint distance (an array), the
      units a bootstrap of ``max_jump`` and ``cut_rate`` resamples (several GAN seeds: chapter 06).
    """
    z0, z1 = nz_sampler(segments), nz_sampler(segments)
    t = torch.linspace(0, 1, steps)
    fn = {"lerp": lerp, "slerp": slerp}[mode]
    frames = torch.stack([fn(z0, z1, float(ti)) for ti in t], 1)  # (segments, steps, nz)
    imgs = generate(G, frames)  # (segments, steps, C, H, W)
    zr0, zr1 = nz_sampler(segments), nz_sampler(segments)
    r0, r1 = generate(G, zr0), generate(G, zr1)
    spaces: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"pixel": lambda x: x}
    if features is not None:
        spaces["feature"] = lambda x: torch.as_tensor(np.asarray(features(x)), dtype=torch.float32)
    out: dict[str, float] = {"steps": steps, "segments": segments}
    for name, f in spaces.items():
        v = f(imgs.flatten(0, 1))
        v = v.reshape(segments, steps, -1)
        step = _pair_dist(v[:, 1:].flatten(0, 1), v[:, :-1].flatten(0, 1)).reshape(segments, steps - 1)
        ends = _pair_dist(v[:, -1], v[:, 0]).clamp_min(1e-12)
        rnd = _pair_dist(f(r0), f(r1)).mean()
        out[f"{name}_step"] = float(step.mean())
        out[f"{name}_random"] = float(rnd)
        out[f"{name}_step_ratio"] = float(step.mean() / rnd)
        jump = step.max(1).values / ends
        out[f"{name}_max_jump"] = float(jump.mean())
        out[f"{name}_cut_rate"] = float((jump > 0.5).float().mean())
        if per_walk:
            out[f"{name}_jumps"] = jump.numpy().astype(np.float64)
    out["even_step_ratio"] = 1.0 / (steps - 1)
    return out


# ----------------------------------------------------------------- attribute tests

def _to01(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def colour_histogram(x: torch.Tensor, bins: int = 4) -> np.ndarray:
    """Joint RGB (or grey) histogram of each image, normalised to sum 1: (N, bins**C).

    Translation-invariant, so it judges colour content (skin tone, say) of a
    generated image wherever the object sits.
    """
    x = _to01(x)
    n, c = x.shape[:2]
    q = (x * bins).long().clamp_(max=bins - 1)  # (N, C, H, W)
    idx = torch.zeros_like(q[:, 0])
    for ch in range(c):
        idx = idx * bins + q[:, ch]
    idx = idx.flatten(1)
    idx = idx + torch.arange(n)[:, None] * bins**c  # one bincount for the whole batch
    h = torch.bincount(idx.flatten(), minlength=n * bins**c).reshape(n, bins**c).float()
    return (h / idx.shape[1]).numpy()


def pooled_pixels(x: torch.Tensor, size: int = 8) -> np.ndarray:
    """Images average-pooled to ``size`` x ``size``, flattened: coarse shape and layout."""
    return F.adaptive_avg_pool2d(x.float(), size).flatten(1).numpy()


def foreground_brightness(x: torch.Tensor, background: float = -0.8) -> np.ndarray:
    """Mean intensity of the pixels brighter than ``background`` (the garment on Fashion-MNIST's black), (N, 1)."""
    g = x.float().mean(1).flatten(1)
    fg = g > background
    val = (g * fg).sum(1) / fg.sum(1).clamp_min(1)
    return val[:, None].numpy()


def concat_features(*fns: Featurizer) -> Featurizer:
    """A featurizer that concatenates the given ones."""
    if not fns:
        raise ValueError("concat_features needs at least one featurizer")
    return lambda x: np.concatenate([np.asarray(f(x), dtype=np.float32) for f in fns], 1)


def classifier_features(net: nn.Module, batch_size: int = 256, bf16: bool = True) -> Featurizer:
    """``net.features`` (a domain classifier's penultimate layer) as a numpy featurizer.

    ``bf16``: bf16 autocast on the net's device, whatever the hardware (as the metrics run this
    classifier, :mod:`dcgan.metrics`); False: fp32.
    """
    if not hasattr(net, "features"):
        raise TypeError("classifier_features needs a network with a .features(x) method (dcgan.metrics.domain_classifier)")

    @torch.no_grad()
    def f(x: torch.Tensor) -> np.ndarray:
        net.eval()
        # bf16 autocast: ~3x faster convolutions on CPUs with AMX/AVX-512 bf16 and on GPUs
        with autocast("bf16" if bf16 else "fp32", device_of(net)):
            return torch.cat([net.features(c.float()).float().cpu() for c in x.split(batch_size)]).numpy()

    return f


def emoji_featurizers(clf: nn.Module) -> dict[str, dict[str, Featurizer]]:
    """The features of chapter 06's emoji attribute tests: ``{"selector": {attr: f}, "judge": {attr: f}}``.

    Selectors (logistic regressions that pick the exemplars and build the direction vector): *skin* from a
    6x6x6 colour histogram, *kind* from the domain classifier ``clf``'s penultimate features. Judges (random
    forests fitted on the other half of the training emoji, which score every output): *skin* and *kind*
    from 8x8 pooled pixels. No judge sees a representation any selector sees, so an output cannot pass a
    judge merely by carrying what a selector picked its exemplars on (the kind judge once shared the kind
    selector's 8x8 pooled pixels; :func:`linear_recoverability` and the tests check the separation).
    """
    return {"selector": {"skin": lambda x: colour_histogram(x, 6), "kind": classifier_features(clf)},
            "judge": {"skin": lambda x: pooled_pixels(x, 8), "kind": lambda x: pooled_pixels(x, 8)}}


def linear_recoverability(source: Featurizer, target: Featurizer, images: torch.Tensor, seed: int = 0) -> float:
    """How much of ``target(images)`` a linear map of ``source(images)`` recovers: the held-out R^2 (variance
    weighted over the target's dimensions) of a ridge regression fitted on a random half of the images and
    scored on the other. 1: the target is (linearly) a function of the source, e.g. one of its parts; near 0:
    the source says little about it. Needs more images than the source has dimensions for a fair fit."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    xs, xt = np.asarray(source(images), dtype=np.float64), np.asarray(target(images), dtype=np.float64)
    if len(xs) < 4:
        raise ValueError(f"linear_recoverability needs at least 4 images, got {len(xs)}")
    idx = np.random.default_rng(seed).permutation(len(xs))
    fit, held = idx[: len(idx) // 2], idx[len(idx) // 2:]
    model = Ridge(alpha=1e-6).fit(xs[fit], xt[fit])
    return float(r2_score(xt[held], model.predict(xs[held]), multioutput="variance_weighted"))


@dataclass
class AttributeTest:
    """Decides which of ``classes`` an image shows; ``accuracy`` is measured on held-out real images."""

    name: str
    classes: list[str]
    proba_fn: Callable[[torch.Tensor], np.ndarray]
    accuracy: float = float("nan")
    n_train: int = 0

    def proba(self, images: torch.Tensor) -> np.ndarray:
        """(N, len(classes)) class probabilities."""
        return np.asarray(self.proba_fn(images))

    def predict(self, images: torch.Tensor) -> list[str]:
        return [self.classes[i] for i in self.proba(images).argmax(1)]


def group_split(groups: Sequence, test_frac: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train/test indices with every group (e.g. an emoji's skin-tone and vendor variants) on one side."""
    if not 0 < test_frac < 1:
        raise ValueError(f"test_frac must be in (0, 1), got {test_frac}")
    g = np.asarray(groups)
    uniq = np.unique(g)
    if len(uniq) < 2:
        raise ValueError("group_split needs at least two groups")
    rng = np.random.default_rng(seed)
    test_groups = rng.choice(uniq, max(1, int(round(len(uniq) * test_frac))), replace=False)
    test = np.isin(g, test_groups)
    return np.flatnonzero(~test), np.flatnonzero(test)


def fit_attribute_test(
    name: str,
    featurize: Featurizer,
    train_images: torch.Tensor,
    train_labels: Sequence[str],
    test_images: torch.Tensor,
    test_labels: Sequence[str],
    *,
    C: float = 0.1,
    max_train: int | None = 3000,
    seed: int = 0,
    model: str = "logistic",
) -> AttributeTest:
    """An attribute test on ``featurize(images)``, fitted on real images.

    ``model="logistic"``: logistic regression on standardised features (the
    selectors); ``"forest"``: a random forest (another model family, for a
    judge that does not share the selector's decision surface). Labels are
    strings (e.g. "dark", "light", "none"); class-balanced weights, so a rare
    attribute is not ignored. The held-out accuracy is on ``test_images`` (use
    a split that keeps variants of one emoji together).
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if model not in ("logistic", "forest"):
        raise ValueError(f"model must be 'logistic' or 'forest', got {model!r}")

    if len(train_images) != len(train_labels) or len(test_images) != len(test_labels):
        raise ValueError("images and labels must have the same length")
    classes = sorted(set(train_labels))
    if len(classes) < 2:
        raise ValueError(f"attribute test {name!r} needs at least two classes in its training labels, got {classes}")
    idx = np.arange(len(train_labels))
    if max_train and len(idx) > max_train:
        idx = np.random.default_rng(seed).choice(idx, max_train, replace=False)
    xtr = featurize(train_images[torch.as_tensor(idx)])
    ytr = np.asarray([classes.index(train_labels[i]) for i in idx])
    if model == "logistic":
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=500, class_weight="balanced"))
    else:  # n_jobs=1: the book runs on shared CPUs
        clf = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, class_weight="balanced", n_jobs=1,
                                     random_state=seed)
    clf.fit(xtr, ytr)

    def proba(images: torch.Tensor) -> np.ndarray:
        p = np.zeros((len(images), len(classes)))
        p[:, clf.classes_] = clf.predict_proba(featurize(images))
        return p

    known = [i for i, l in enumerate(test_labels) if l in classes]
    acc = float("nan")
    if known:
        pred = proba(test_images[torch.as_tensor(known)]).argmax(1)
        acc = float(np.mean([classes[p] == test_labels[i] for p, i in zip(pred, known)]))
    return AttributeTest(name, classes, proba, acc, len(idx))


def classifier_test(name: str, net: nn.Module, classes: Sequence[str], batch_size: int = 256) -> AttributeTest:
    """A trained classifier (logits over ``classes``) as an attribute test."""

    @torch.no_grad()
    def proba(images: torch.Tensor) -> np.ndarray:
        net.eval()
        return torch.cat([net(c.float()).float().softmax(1).cpu() for c in images.split(batch_size)]).numpy()

    return AttributeTest(name, list(classes), proba)


Concept = Mapping[str, str]  # attribute-test name -> required class, e.g. {"skin": "dark", "kind": "hand"}


# The paper's face arithmetic (Fig. 7) in the labels of :func:`face_labels`: A - B + C should show the target.
FACE_ARITHMETIC = {
    "smile": ({"smile": "smiling", "sex": "woman"}, {"smile": "neutral", "sex": "woman"},
              {"smile": "neutral", "sex": "man"}),  # smiling woman - neutral woman + neutral man = smiling man
    "glasses": ({"glasses": "glasses", "sex": "man"}, {"glasses": "no glasses", "sex": "man"},
                {"glasses": "no glasses", "sex": "woman"}),  # man with glasses - man + woman = woman with glasses
}


def face_labels(attributes: Mapping[str, Sequence], idx: Sequence[int] | None = None,
                turned: float = 1 / 3) -> dict[str, list[str | None]]:
    """CelebA's labels as the concepts of the paper's face experiments (Fig. 7, Fig. 8), per image of ``idx``.

    ``smile`` (smiling / neutral, from ``Smiling``), ``sex`` (man / woman, ``Male``), ``glasses`` (glasses /
    no glasses, ``Eyeglasses``) and ``pose`` from the landmarks' ``yaw`` (see :func:`dcgan.data.load_dataset`):
    "left" for the ``turned`` share of images whose nose sits furthest left of the eyes' midpoint in the
    image, "right" for the share furthest right, None (no label) for the faces in between.
    """
    need = {"Smiling", "Male", "Eyeglasses", "yaw"} - set(attributes)
    if need:
        raise KeyError(f"the face experiments need CelebA's annotations ({', '.join(sorted(need))} missing): put "
                       "list_attr_celeba.txt and list_landmarks_align_celeba.txt beside img_align_celeba/")
    if not 0 < turned <= 0.5:
        raise ValueError(f"turned must be a share in (0, 0.5], got {turned}")
    idx = list(range(len(attributes["yaw"]))) if idx is None else [int(i) for i in idx]

    def two(col: str, yes: str, no: str) -> list[str | None]:
        return [yes if attributes[col][i] else no for i in idx]

    yaw = np.asarray([attributes["yaw"][i] for i in idx], dtype=float)
    lo, hi = np.quantile(yaw, [turned, 1 - turned]) if len(yaw) else (0.0, 0.0)
    pose = ["left" if y <= lo and y < hi else "right" if y >= hi and y > lo else None for y in yaw]
    return {"smile": two("Smiling", "smiling", "neutral"), "sex": two("Male", "man", "woman"),
            "glasses": two("Eyeglasses", "glasses", "no glasses"), "pose": pose}


def _check_concept(concept: Concept, tests: Mapping[str, AttributeTest]) -> None:
    for k, v in concept.items():
        if k not in tests:
            raise KeyError(f"concept uses attribute {k!r} but no such test; tests: {sorted(tests)}")
        if v not in tests[k].classes:
            raise ValueError(f"attribute {k!r} has classes {tests[k].classes}, not {v!r}")


def concept_scores(images: torch.Tensor, concept: Concept, tests: Mapping[str, AttributeTest],
                   probas: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Product over the concept's attributes of P(attribute = required class): (N,)."""
    _check_concept(concept, tests)
    s = np.ones(len(images))
    for k, v in concept.items():
        p = probas[k] if probas is not None else tests[k].proba(images)
        s = s * p[:, tests[k].classes.index(v)]
    return s


def shows_concept(images: torch.Tensor, concept: Concept, tests: Mapping[str, AttributeTest],
                  probas: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """True where every attribute test's top class is the concept's: (N,) bool."""
    _check_concept(concept, tests)
    ok = np.ones(len(images), dtype=bool)
    for k, v in concept.items():
        p = probas[k] if probas is not None else tests[k].proba(images)
        ok &= p.argmax(1) == tests[k].classes.index(v)
    return ok


def target_concept(a: Concept, b: Concept, c: Concept) -> dict[str, str]:
    """What A - B + C should show: C's attributes, except where A and B differ, which take A's value.

    ("smiling woman" - "neutral woman" + "neutral man" = "smiling man".)
    """
    if set(a) != set(b) or set(b) != set(c):
        raise ValueError(f"concepts A, B, C must name the same attributes, got {sorted(a)}, {sorted(b)}, {sorted(c)}")
    if a == b:
        raise ValueError("A and B are the same concept, so A - B + C carries no attribute change")
    return {k: (a[k] if a[k] != b[k] else c[k]) for k in a}


# ----------------------------------------------------------------- arithmetic

def arithmetic_vector(za: torch.Tensor, zb: torch.Tensor, zc: torch.Tensor) -> torch.Tensor:
    """Y = mean(z_A) - mean(z_B) + mean(z_C) (each (k, nz); a concept is the average of its exemplars)."""
    for name, z in (("A", za), ("B", zb), ("C", zc)):
        if z.dim() != 2 or len(z) == 0:
            raise ValueError(f"exemplars {name} must be a non-empty (k, nz) tensor, got {tuple(z.shape)}")
    return za.mean(0) - zb.mean(0) + zc.mean(0)


def pixel_arithmetic(xa: torch.Tensor, xb: torch.Tensor, xc: torch.Tensor) -> torch.Tensor:
    """The same arithmetic on the exemplars' images, clipped back to [-1, 1]."""
    return (xa.mean(0) - xb.mean(0) + xc.mean(0)).clamp(-1, 1)


@dataclass
class ArithmeticResult:
    """Per-trial images and scores of :func:`vector_arithmetic`."""

    target: dict[str, str]
    exemplars: list[dict[str, torch.Tensor]]  # per trial: {"A": images (3,C,H,W), "B": ..., "C": ...}
    latent_images: torch.Tensor  # (trials, 1 + n_noisy, C, H, W): G(Y) first
    pixel_images: torch.Tensor  # (trials, C, H, W)
    latent_hits: np.ndarray  # (trials, 1 + n_noisy) bool
    pixel_hits: np.ndarray  # (trials,) bool
    base_rate: float  # fraction of random samples that show the target
    pool_counts: dict[str, int] = field(default_factory=dict)  # candidates per concept in the pool
    base_hits: np.ndarray | None = None  # (pool,) bool: which random samples show the target

    def differences(self, seed: int = 0) -> dict[str, tuple[float, float, float]]:
        """(difference, 95 % low, high) in share points of outputs on target.

        ``latent_minus_pixel``: paired over trials (the same exemplars feed both);
        ``latent_minus_base``: trials against the random pool, resampled independently.
        """
        from .intervals import bootstrap_diff_ci

        per_trial = self.latent_hits.mean(1)
        pixel = self.pixel_hits.astype(float)
        out = {"latent_minus_pixel": bootstrap_diff_ci(per_trial, pixel, paired=True, seed=seed)}
        if self.base_hits is not None:
            base = self.base_hits.astype(float)
            out["latent_minus_base"] = bootstrap_diff_ci(per_trial, base, paired=False, seed=seed)
        return out

    @property
    def latent_rate(self) -> float:
        """Fraction of G(Y) and its noisy neighbours that show the target."""
        return float(self.latent_hits.mean())

    @property
    def latent_center_rate(self) -> float:
        """Fraction of trials whose G(Y) itself shows the target."""
        return float(self.latent_hits[:, 0].mean())

    @property
    def pixel_rate(self) -> float:
        return float(self.pixel_hits.mean())


def vector_arithmetic(
    G: nn.Module,
    z_pool: torch.Tensor,
    a: Concept,
    b: Concept,
    c: Concept,
    tests: Mapping[str, AttributeTest],
    *,
    k: int = 3,
    trials: int = 10,
    candidates: int = 12,
    n_noisy: int = 8,
    noise: float = 0.25,
    seed: int = 0,
    judge: Mapping[str, AttributeTest] | None = None,
) -> ArithmeticResult:
    """Fig. 7 as an unattended, scored experiment.

    Samples G(z_pool) and scores them with ``tests`` (the selectors); each
    concept's candidates are its ``candidates`` highest-scoring samples among
    those the tests say show it (all of them ranked by score if fewer pass).
    Each trial draws ``k`` exemplars per concept from the candidates, forms
    Y = A - B + C, and renders G(Y) plus ``n_noisy`` samples of Y + U(-noise,
    noise); the pixel-space arithmetic of the same exemplars is beside it.
    Every output, and the random pool for the base rate, is judged by
    ``judge`` (default: ``tests`` themselves) against :func:`target_concept`.
    """
    target = target_concept(a, b, c)
    judge = tests if judge is None else judge
    _check_concept(target, judge)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    x_pool = generate(G, z_pool)
    probas = {name: t.proba(x_pool) for name, t in tests.items()}
    pools, counts = {}, {}
    for key, concept in (("A", a), ("B", b), ("C", c)):
        score = concept_scores(x_pool, concept, tests, probas)
        ok = shows_concept(x_pool, concept, tests, probas)
        counts[key] = int(ok.sum())
        order = np.argsort(-score)
        passing = order[ok[order]]
        pool = passing[:candidates] if len(passing) >= k else order[:max(candidates, k)]
        pools[key] = pool
    base_hits = shows_concept(x_pool, target, judge, probas if judge is tests else None)
    ex_list, lat, pix = [], [], []
    for _ in range(trials):
        pick = {key: torch.as_tensor(rng.choice(p, k, replace=False)) for key, p in pools.items()}
        y = arithmetic_vector(z_pool[pick["A"]], z_pool[pick["B"]], z_pool[pick["C"]])
        u = (torch.rand(n_noisy, y.numel(), generator=gen) * 2 - 1) * noise
        zs = torch.cat([y[None], y[None] + u])
        lat.append(generate(G, zs))
        ex = {key: x_pool[idx] for key, idx in pick.items()}
        ex_list.append(ex)
        pix.append(pixel_arithmetic(ex["A"], ex["B"], ex["C"]))
    lat_t, pix_t = torch.stack(lat), torch.stack(pix)
    lh = shows_concept(lat_t.flatten(0, 1), target, judge).reshape(trials, 1 + n_noisy)
    ph = shows_concept(pix_t, target, judge)
    return ArithmeticResult(target, ex_list, lat_t, pix_t, lh, ph, float(base_hits.mean()), counts, base_hits)


# ----------------------------------------------------------------- direction ("turn") vector

def attribute_direction(z_pool: torch.Tensor, scores: np.ndarray, k: int = 4) -> torch.Tensor:
    """mean z of the ``k`` highest-scoring samples minus mean z of the ``k`` lowest (Fig. 8 used k = 4)."""
    if len(scores) != len(z_pool):
        raise ValueError(f"{len(scores)} scores for {len(z_pool)} latent vectors")
    if 2 * k > len(z_pool):
        raise ValueError(f"need at least {2 * k} samples to average {k} high and {k} low ones")
    order = np.argsort(-np.asarray(scores))
    hi, lo = torch.as_tensor(order[:k].copy()), torch.as_tensor(order[-k:].copy())
    return z_pool[hi].mean(0) - z_pool[lo].mean(0)


def direction_walk(z0: torch.Tensor, z1: torch.Tensor, direction: torch.Tensor, steps: int,
                   strength: float = 1.0, mode: str = "slerp") -> tuple[torch.Tensor, torch.Tensor]:
    """An interpolation z0 -> z1 with and without ``strength * t * direction`` added at frame t in [0, 1].

    Returns (plain frames, frames with the direction), each (steps, nz).
    """
    plain = walk(torch.stack([z0, z1]), steps, mode)
    t = torch.linspace(0, 1, steps)[:, None]
    return plain, plain + strength * t * direction[None]


def direction_hits(G: nn.Module, z0: torch.Tensor, z1: torch.Tensor, direction: torch.Tensor, judge: AttributeTest,
                   target: str, steps: int, strength: float = 1.0, mode: str = "slerp",
                   seed: int = 0) -> dict:
    """Fig. 8 scored: walks ``z0[i] -> z1[i]`` with and without the direction; ``judge`` reads the last frames.

    Returns the frames (``plain``, ``turned``: (walks, steps, C, H, W)), the
    per-walk hits (last frame judged ``target``) and ``turned_minus_plain``:
    (difference in share of walks, 95 % low, high), paired over walks (the same
    walk with and without the vector).
    """
    from .intervals import bootstrap_diff_ci

    if target not in judge.classes:
        raise ValueError(f"judge {judge.name!r} has classes {judge.classes}, not {target!r}")
    if len(z0) != len(z1) or len(z0) == 0:
        raise ValueError(f"need as many start as end points (at least one), got {len(z0)} and {len(z1)}")
    plain, turned = zip(*[direction_walk(a, b, direction, steps, strength, mode) for a, b in zip(z0, z1)])
    xp, xt = generate(G, torch.stack(plain)), generate(G, torch.stack(turned))
    k = judge.classes.index(target)
    hp, ht = judge.proba(xp[:, -1]).argmax(1) == k, judge.proba(xt[:, -1]).argmax(1) == k
    return dict(plain=xp, turned=xt, plain_hits=hp, turned_hits=ht,
                turned_minus_plain=bootstrap_diff_ci(ht.astype(float), hp.astype(float), paired=True, seed=seed))
