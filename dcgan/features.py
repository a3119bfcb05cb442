"""DCGAN discriminator features as a representation (paper §5.1 CIFAR-10, §5.2 SVHN).

The paper's pipeline: take every conv layer of a trained D, max-pool each
layer's map to a 4x4 grid, flatten and concatenate (28672-d for the 32x32
ImageNet D with widths 256/512/1024), then fit a regularised linear L2-SVM.
Here the SVM is scikit-learn's ``LinearSVC`` (squared hinge, L2 penalty) on
standardised features, with C chosen on a validation split.

Baselines run through the same code on the same splits:

* raw pixels (:func:`pixel_features`);
* single-layer K-means features of Coates & Ng (2011): normalised, ZCA-whitened
  6x6 patches, k-means centroids (scikit-learn), "triangle" encoding,
  sum-pooling over the four image quadrants (:class:`KMeansFeatures`);
* a randomly initialised D of the same architecture (the random-filter
  baseline of §6.2, as a number): pass an untrained ``Discriminator``.

§5.2's protocol needs a class-balanced labelled subset disjoint from a
held-out validation split (:func:`semi_supervised_split`) and the supervised
control: the same D architecture plus a linear head, trained with labels on
those examples only, tuned by random search (:func:`supervised_search`).

Memory: features are returned as float16 by default (N x 16*sum(widths) x 2
bytes). Even all 60,000 Fashion-MNIST images through a D of widths 64/128/256
(7,168 dims) take 0.8 GiB; the paper's CIFAR-10 case (60,000 x 28,672) is
3.2 GiB in float16 (6.4 GiB in float32), within 24 GiB. The SVM step converts
one split at a time to float32.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .models import Discriminator, ModelConfig

__all__ = [
    "feature_dim",
    "extract_features",
    "pixel_features",
    "KMeansFeatures",
    "semi_supervised_split",
    "SVMResult",
    "fit_svm",
    "SupervisedResult",
    "SearchResult",
    "train_supervised",
    "sample_hparams",
    "supervised_search",
    "bf16_available",
]


# ---------------------------------------------------------------- D features

def feature_dim(cfg: ModelConfig, grid: int = 4) -> int:
    """Length of the concatenated, max-pooled D feature vector: ``grid**2 * sum(D widths)``.

    For the paper's 32x32 D with widths 256/512/1024 this is 16 * 1792 = 28672.
    """
    return grid * grid * sum(cfg.d_widths())


def bf16_available() -> bool:
    """True when bf16 autocast is worth using on the CPU (AVX-512 BF16 / AMX) or a CUDA device is present."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _as_float_batches(images: torch.Tensor, batch_size: int):
    """Yield float batches in [-1, 1] from a uint8 or float (N, C, H, W) tensor."""
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size]
        yield x.float().div(127.5).sub(1.0) if x.dtype == torch.uint8 else x.float()


@torch.no_grad()
def extract_features(
    D: Discriminator,
    images: torch.Tensor,
    *,
    grid: int = 4,
    batch_size: int = 500,
    precision: str = "auto",
    dtype: np.dtype = np.float16,
    layers: Sequence[int] | None = None,
) -> np.ndarray:
    """§5.1 features: every conv block of ``D`` max-pooled to ``grid`` x ``grid``, flattened, concatenated.

    ``images``: uint8 (N, C, H, W) (as stored by ``dcgan.data``) or float in
    [-1, 1]. ``precision``: "auto" (bf16 autocast where the hardware has
    it), "bf16" or "fp32". ``layers`` picks a subset of D's blocks (all by
    default). D is used in eval mode (BatchNorm running statistics).
    Returns a (N, feature_dim) array of ``dtype``.
    """
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    cfg = D.cfg
    if images.dim() != 4 or tuple(images.shape[1:]) != (cfg.channels, cfg.image_size, cfg.image_size):
        raise ValueError(
            f"images must be (N, {cfg.channels}, {cfg.image_size}, {cfg.image_size}) to match D, got "
            f"{tuple(images.shape)}; load the data set with image_size={cfg.image_size}"
        )
    use_bf16 = precision == "bf16" or (precision == "auto" and bf16_available())
    device = next(D.parameters()).device
    was_training = D.training
    D.eval()
    keep = list(range(len(D.blocks))) if layers is None else list(layers)
    dim = grid * grid * sum(cfg.d_widths()[i] for i in keep)
    out = np.empty((images.shape[0], dim), dtype=dtype)
    row = 0
    try:
        for x in _as_float_batches(images, batch_size):
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                acts = D.activations(x)
            feats = [F.adaptive_max_pool2d(acts[i].float(), grid).flatten(1) for i in keep]
            f = torch.cat(feats, 1)
            out[row : row + f.shape[0]] = f.cpu().numpy().astype(dtype, copy=False)
            row += f.shape[0]
    finally:
        D.train(was_training)
    return out


def pixel_features(images: torch.Tensor, dtype: np.dtype = np.float32) -> np.ndarray:
    """Raw-pixel baseline: the image flattened, in [-1, 1]."""
    x = images.float().div(127.5).sub(1.0) if images.dtype == torch.uint8 else images.float()
    return x.flatten(1).numpy().astype(dtype, copy=False)


# ---------------------------------------------------------------- K-means baseline

@dataclass
class KMeansFeatures:
    """Single-layer K-means features (Coates, Lee & Ng 2011; Table 1's "1 Layer K-means").

    Patches of ``patch`` x ``patch`` pixels are brightness/contrast normalised
    and ZCA-whitened; ``n_centroids`` centroids are learnt by k-means
    (scikit-learn ``KMeans``); an image is encoded densely (``stride``) with
    the triangle activation f_k = max(0, mean(z) - z_k), z_k = ||x - c_k||,
    then sum-pooled over its four quadrants: 4 * n_centroids features.
    """

    n_centroids: int = 1600
    patch: int = 6
    stride: int = 1
    n_patches: int = 100_000
    kmeans_iter: int = 10
    whiten_eps: float = 0.1
    seed: int = 0
    batch_size: int = 16  # small batches keep the (B*L, K) distance matrix in cache
    mean_: np.ndarray | None = field(default=None, repr=False)
    zca_: np.ndarray | None = field(default=None, repr=False)
    centroids_: np.ndarray | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return 4 * self.n_centroids

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 255] -> normalised patches (N, L, C*p*p) and the patch grid side."""
        p = F.unfold(x, self.patch, stride=self.stride).transpose(1, 2)  # (N, L, D)
        mu = p.mean(-1, keepdim=True)
        var = p.var(-1, keepdim=True)
        return (p - mu) / torch.sqrt(var + 10.0)  # Coates & Ng's normalisation (pixels in [0, 255])

    def fit(self, images: torch.Tensor) -> "KMeansFeatures":
        """Learn the whitening and the centroids from random patches of uint8 ``images``."""
        from sklearn.cluster import KMeans

        if images.dtype != torch.uint8:
            raise ValueError("KMeansFeatures expects uint8 images (as stored by dcgan.data)")
        n, c, h, w = images.shape
        if h < self.patch or w < self.patch:
            raise ValueError(f"images ({h}x{w}) are smaller than the patch size {self.patch}")
        g = torch.Generator().manual_seed(self.seed)
        idx = torch.randint(0, n, (self.n_patches,), generator=g)
        r = torch.randint(0, h - self.patch + 1, (self.n_patches,), generator=g)
        s = torch.randint(0, w - self.patch + 1, (self.n_patches,), generator=g)
        ar = torch.arange(self.patch)
        rows = (r[:, None] + ar)[:, :, None].expand(-1, -1, self.patch)
        cols = (s[:, None] + ar)[:, None, :].expand(-1, self.patch, -1)
        pat = images[idx[:, None, None, None], torch.arange(c)[None, :, None, None], rows[:, None], cols[:, None]]
        pat = pat.reshape(self.n_patches, -1).float()
        pat = ((pat - pat.mean(1, keepdim=True)) / torch.sqrt(pat.var(1, keepdim=True) + 10.0)).double().numpy()
        self.mean_ = pat.mean(0)
        cov = np.cov(pat - self.mean_, rowvar=False)
        evals, evecs = np.linalg.eigh(cov)
        self.zca_ = (evecs @ np.diag(1.0 / np.sqrt(evals.clip(min=0) + self.whiten_eps)) @ evecs.T)
        white = (pat - self.mean_) @ self.zca_
        km = KMeans(self.n_centroids, n_init=1, max_iter=self.kmeans_iter, random_state=self.seed)
        km.fit(white.astype(np.float32))
        self.centroids_ = km.cluster_centers_.astype(np.float32)
        return self

    @torch.no_grad()
    def transform(self, images: torch.Tensor, dtype: np.dtype = np.float32) -> np.ndarray:
        """Encode uint8 ``images`` -> (N, 4 * n_centroids) quadrant-pooled triangle activations."""
        if self.centroids_ is None:
            raise RuntimeError("KMeansFeatures.transform called before fit")
        mean = torch.from_numpy(self.mean_).float()
        zca = torch.from_numpy(self.zca_).float()
        cent = torch.from_numpy(self.centroids_)
        c2 = (cent * cent).sum(1)
        n, _, h, w = images.shape
        side_h = (h - self.patch) // self.stride + 1
        side_w = (w - self.patch) // self.stride + 1
        out = np.empty((n, self.dim), dtype=dtype)
        for i in range(0, n, self.batch_size):
            x = images[i : i + self.batch_size].float()
            b = x.shape[0]
            p = ((self._patches(x) - mean) @ zca).reshape(-1, zca.shape[0])  # (B*L, D)
            # squared distances to every centroid, computed in place to stay in cache
            z = torch.addmm(c2[None], p, cent.T, alpha=-2.0).add_((p * p).sum(1, keepdim=True))
            z = z.clamp_(min=0).sqrt_()
            mu = z.mean(1, keepdim=True)
            f = z.neg_().add_(mu).clamp_(min=0)  # triangle encoding max(0, mean(z) - z_k)
            f = f.view(b, side_h, side_w, self.n_centroids).permute(0, 3, 1, 2)
            # sum over the four quadrants (odd sides overlap by one row/column)
            q = F.adaptive_avg_pool2d(f, 2) * (side_h * side_w / 4)
            out[i : i + b] = q.flatten(1).numpy()
        return out


# ---------------------------------------------------------------- §5.2 label sampler

def semi_supervised_split(
    labels: np.ndarray | torch.Tensor,
    n_labels: int = 1000,
    n_val: int = 10_000,
    *,
    seed: int = 0,
    val_seed: int = 0,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """§5.2: a validation split and a class-balanced labelled subset disjoint from it.

    The validation split (``n_val`` indices, drawn with ``val_seed``, so it is
    the same for every label draw) is held out of the training set; then
    ``n_labels / n_classes`` examples of each class are drawn with ``seed``
    from what is left. ``exclude`` marks indices that may be in neither (e.g.
    a test split stored in the same array). Returns ``(labelled, val)``
    index arrays (sorted).
    """
    y = np.asarray(labels)
    classes = np.unique(y)
    if n_labels % len(classes):
        raise ValueError(f"n_labels={n_labels} is not divisible by the {len(classes)} classes; "
                         "use a multiple so the labelled set is class-balanced")
    pool = np.ones(len(y), dtype=bool)
    if exclude is not None:
        pool[np.asarray(exclude, dtype=np.int64)] = False
    avail = np.flatnonzero(pool)
    if n_val + n_labels > len(avail):
        raise ValueError(f"need {n_val} validation + {n_labels} labelled examples but only {len(avail)} are available")
    val = np.sort(np.random.default_rng(val_seed).choice(avail, size=n_val, replace=False))
    pool[val] = False
    rng = np.random.default_rng(seed)
    per = n_labels // len(classes)
    lab = []
    for c in classes:
        cand = np.flatnonzero(pool & (y == c))
        if len(cand) < per:
            raise ValueError(f"class {c} has only {len(cand)} examples outside the validation split, need {per}")
        lab.append(rng.choice(cand, size=per, replace=False))
    return np.sort(np.concatenate(lab)), val


# ---------------------------------------------------------------- linear L2-SVM

@dataclass
class SVMResult:
    """A LinearSVC fitted on standardised features, C chosen by validation accuracy."""

    C: float
    val_acc: dict[float, float]
    model: object = field(repr=False)  # sklearn Pipeline(StandardScaler, LinearSVC)
    fit_seconds: float = 0.0

    def accuracy(self, X: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(_chunks_f32(X))


def _chunks_f32(X: np.ndarray) -> np.ndarray:
    return X if X.dtype == np.float32 else X.astype(np.float32)


def _svm(C: float, max_iter: int, seed: int, tol: float = 1e-3):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    return make_pipeline(StandardScaler(), LinearSVC(C=C, loss="squared_hinge", penalty="l2", dual="auto",
                                                     tol=tol, max_iter=max_iter, random_state=seed))


def fit_svm(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    Cs: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
    *,
    refit_on_val: bool = False,
    max_iter: int = 1000,
    tol: float = 1e-3,
    seed: int = 0,
) -> SVMResult:
    """Standardise, fit a linear L2-SVM (squared hinge) per C, keep the C with the best validation accuracy.

    ``refit_on_val``: refit the chosen C on train + validation (§5.1 uses
    all training labels; §5.2 keeps validation for model selection only).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    if len(X_train) != len(y_train) or len(X_val) != len(y_val):
        raise ValueError("features and labels differ in length")
    if not len(Cs):
        raise ValueError("Cs is empty: give at least one regularisation constant")
    t0 = time.perf_counter()
    Xtr, Xva = _chunks_f32(X_train), _chunks_f32(X_val)
    scores: dict[float, float] = {}
    best, best_model = None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a capped max_iter is part of the budget
        for C in Cs:
            m = _svm(C, max_iter, seed, tol).fit(Xtr, y_train)
            scores[float(C)] = float(np.mean(m.predict(Xva) == np.asarray(y_val)))
            if best is None or scores[float(C)] > scores[best]:
                best, best_model = float(C), m
        if refit_on_val:
            best_model = _svm(best, max_iter, seed, tol).fit(np.concatenate([Xtr, Xva]), np.concatenate([y_train, y_val]))
    return SVMResult(best, scores, best_model, time.perf_counter() - t0)


# ---------------------------------------------------------------- §5.2 supervised control

class SupervisedCNN(nn.Module):
    """D's conv blocks (same architecture) + dropout + a linear classifier on the flattened 4x4 map."""

    def __init__(self, cfg: ModelConfig, n_classes: int, dropout: float = 0.0):
        super().__init__()
        d = Discriminator(cfg)
        self.blocks = d.blocks
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(cfg.d_widths()[-1] * 16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.fc(self.drop(x.flatten(1)))


@dataclass
class SupervisedResult:
    hparams: dict
    val_error: float
    seconds: float
    model: nn.Module | None = field(default=None, repr=False)


def _error(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, use_bf16: bool, bs: int = 1000) -> float:
    model.eval()
    wrong = 0
    with torch.no_grad():
        for i in range(0, len(images), bs):
            x = next(_as_float_batches(images[i : i + bs], bs)).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                wrong += int((model(x).argmax(1) != labels[i : i + bs]).sum())
    return wrong / len(images)


def train_supervised(
    cfg: ModelConfig,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    lr: float,
    dropout: float,
    weight_decay: float,
    epochs: int,
    batch_size: int = 100,
    seed: int = 0,
    precision: str = "auto",
    keep_model: bool = False,
) -> SupervisedResult:
    """Train D's architecture + a linear head with labels (Adam, beta1=0.5 as in §4) and return its validation error."""
    t0 = time.perf_counter()
    use_bf16 = precision == "bf16" or (precision == "auto" and bf16_available())
    torch.manual_seed(seed)
    n_classes = int(max(int(y_train.max()), int(y_val.max()))) + 1
    model = SupervisedCNN(cfg, n_classes, dropout).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    y_train = torch.as_tensor(y_train, dtype=torch.long)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=g)
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            if len(idx) < 2:  # BatchNorm needs more than one example
                continue
            x = next(_as_float_batches(x_train[idx], batch_size)).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                loss = F.cross_entropy(model(x).float(), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    err = _error(model, x_val, torch.as_tensor(y_val, dtype=torch.long), use_bf16)
    hp = dict(lr=lr, dropout=dropout, weight_decay=weight_decay, epochs=epochs)
    return SupervisedResult(hp, err, time.perf_counter() - t0, model if keep_model else None)


def sample_hparams(rng: np.random.Generator, max_epochs: int = 50) -> dict:
    """One random-search draw: log-uniform lr and weight decay, uniform dropout and epochs."""
    return dict(
        lr=float(10 ** rng.uniform(-4, -2)),
        dropout=float(rng.uniform(0.0, 0.7)),
        weight_decay=float(10 ** rng.uniform(-6, -2)),
        epochs=int(rng.integers(max(1, max_epochs // 5), max_epochs + 1)),
    )


@dataclass
class SearchResult:
    best: SupervisedResult
    trials: list[SupervisedResult]

    def table(self) -> list[dict]:
        return [dict(t.hparams, val_error=t.val_error, seconds=round(t.seconds, 1)) for t in self.trials]


def supervised_search(
    cfg: ModelConfig,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    n_trials: int,
    max_epochs: int = 50,
    seed: int = 0,
    precision: str = "auto",
) -> SearchResult:
    """§5.2's control: ``n_trials`` random hyper-parameter draws (paper: 64); the best by validation error.

    The best trial's model is kept (``best.model``) so it can be scored on the test split.
    """
    if n_trials < 1:
        raise ValueError("n_trials must be >= 1")
    rng = np.random.default_rng(seed)
    trials: list[SupervisedResult] = []
    best: SupervisedResult | None = None
    for t in range(n_trials):
        hp = sample_hparams(rng, max_epochs)
        r = train_supervised(cfg, x_train, y_train, x_val, y_val, **hp, seed=seed * 1000 + t,
                             precision=precision, keep_model=True)
        trials.append(r)
        if best is None or r.val_error < best.val_error:
            if best is not None:
                best.model = None
            best = r
        else:
            r.model = None
    assert best is not None
    return SearchResult(best, trials)


def classifier_error(model: nn.Module, images: torch.Tensor, labels, precision: str = "auto") -> float:
    """Error rate of a classifier from :func:`train_supervised` on uint8 ``images``."""
    use_bf16 = precision == "bf16" or (precision == "auto" and bf16_available())
    return _error(model, images, torch.as_tensor(labels, dtype=torch.long), use_bf16)


__all__ += ["SupervisedCNN", "classifier_error"]
