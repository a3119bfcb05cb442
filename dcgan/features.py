"""DCGAN discriminator features as a representation (paper §5.1 CIFAR-10, §5.2 SVHN).

The paper's pipeline: take every conv layer of a trained D, max-pool each
layer's map to a 4x4 grid, flatten and concatenate (28672-d for the 32x32
ImageNet D with widths 256/512/1024), then fit a regularised linear L2-SVM.
Here the SVM is :class:`LinearL2SVM`: scikit-learn's ``LinearSVC`` problem
(squared hinge, L2 penalty, one-vs-rest) on standardised features, solved with
L-BFGS in torch on every core, with C chosen on a validation split
(:func:`fit_svm`; ``solver="liblinear"`` runs ``LinearSVC`` itself).

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
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .models import Discriminator, ModelConfig
from .precision import autocast, bf16_supported, check_precision, default_device, device_of, resolve_precision

__all__ = [
    "StepTimer",
    "feature_dim",
    "extract_features",
    "recalibrate_batchnorm",
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


# ---------------------------------------------------------------- timing

class StepTimer:
    """Wall and CPU time of a chapter's heavy steps; CPU / wall is how many cores a step kept busy.

    ``with timer("K-means fit"): ...`` prints one line per step as it ends; :meth:`table` lists
    them all. CPU time is the process's (every thread), so 2.0 on 2 cores means both were busy.
    """

    def __init__(self, verbose: bool = True):
        self.verbose = verbose
        self.steps: list[tuple[str, float, float]] = []

    def __call__(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def step():
            w, c = time.perf_counter(), time.process_time()
            try:
                yield
            finally:
                wall, cpu = time.perf_counter() - w, time.process_time() - c
                self.steps.append((name, wall, cpu))
                if self.verbose:
                    print(f"[time] {name}: {wall:.1f}s wall, {cpu:.1f}s CPU ({cpu / max(wall, 1e-9):.1f} cores)",
                          flush=True)

        return step()

    @property
    def wall(self) -> float:
        return sum(s[1] for s in self.steps)

    @property
    def cpu(self) -> float:
        return sum(s[2] for s in self.steps)

    def table(self) -> str:
        k = max([34] + [len(n) for n, _, _ in self.steps])
        rows = [f"{'step':{k}s} {'wall s':>7s} {'CPU s':>7s} {'cores':>5s}"]
        rows += [f"{n:{k}s} {w:7.1f} {c:7.1f} {c / max(w, 1e-9):5.1f}" for n, w, c in self.steps]
        rows.append(f"{'total':{k}s} {self.wall:7.1f} {self.cpu:7.1f} {self.cpu / max(self.wall, 1e-9):5.1f}")
        return "\n".join(rows)


# ---------------------------------------------------------------- D features

def feature_dim(cfg: ModelConfig, grid: int = 4) -> int:
    """Length of the concatenated, max-pooled D feature vector: ``grid**2 * sum(D widths)``.

    For the paper's 32x32 D with widths 256/512/1024 this is 16 * 1792 = 28672.
    """
    return grid * grid * sum(cfg.d_widths())


def bf16_available() -> bool:
    """True when the default device (the GPU if any, else the CPU) runs bf16 natively.

    Kept for callers of this name; the policy is :func:`dcgan.precision.bf16_supported`.
    """
    return bf16_supported(default_device())


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
    check_precision(precision)  # before the shape check, so a bad precision is named first
    cfg = D.cfg
    if images.dim() != 4 or tuple(images.shape[1:]) != (cfg.channels, cfg.image_size, cfg.image_size):
        raise ValueError(
            f"images must be (N, {cfg.channels}, {cfg.image_size}, {cfg.image_size}) to match D, got "
            f"{tuple(images.shape)}; load the data set with image_size={cfg.image_size}"
        )
    device = device_of(D)
    precision = resolve_precision(precision, device)  # once, not per batch
    was_training = D.training
    D.eval()
    keep = list(range(len(D.blocks))) if layers is None else list(layers)
    dim = grid * grid * sum(cfg.d_widths()[i] for i in keep)
    out = np.empty((images.shape[0], dim), dtype=dtype)
    row = 0
    try:
        for x in _as_float_batches(images, batch_size):
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            with autocast(precision, device):
                acts = D.activations(x)
            feats = [F.adaptive_max_pool2d(acts[i].float(), grid).flatten(1) for i in keep]
            f = torch.cat(feats, 1)
            out[row : row + f.shape[0]] = f.cpu().numpy().astype(dtype, copy=False)
            row += f.shape[0]
    finally:
        D.train(was_training)
    return out


@torch.no_grad()
def recalibrate_batchnorm(D: Discriminator, images: torch.Tensor, *, batch_size: int = 128) -> Discriminator:
    """A copy of ``D`` whose BatchNorm statistics are re-estimated on real ``images`` (no labels needed).

    During GAN training D's running statistics mix batches of real and generated images; the
    authors' SVHN feature script (``svhn_semisup_analysis.py``) instead averages the per-batch means
    and variances of each BatchNorm layer over the training images (batches of 128) before extracting
    features. This does the same: running statistics reset, a cumulative average (``momentum=None``)
    over ``images`` in train mode, weights untouched. The copy is returned in eval mode.
    """
    import copy

    Dc = copy.deepcopy(D)
    bns = [m for m in Dc.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    if bns:
        Dc.train()
        for x in _as_float_batches(images, batch_size):
            if len(x) > 1:  # a batch of one has no variance
                Dc.activations(x)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    return Dc.eval()


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
    # "random": k random whitened patches start the centroids, as Coates & Ng's code starts from random
    # centroids; scikit-learn's default k-means++ seeds 1,600 centroids one after another on one core (10 of
    # the 11 s of a fit on 50,000 patches here), while Lloyd's iterations use every core. Same objective
    # after 10 iterations within 0.5 % on random data (inertia 1.177e6 vs 1.171e6); "k-means++" is kept.
    init: str = "random"
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
        km = KMeans(self.n_centroids, n_init=1, max_iter=self.kmeans_iter, random_state=self.seed, init=self.init)
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
    lab = _class_balanced_draw(y, n_labels // len(classes), np.random.default_rng(seed), classes=classes,
                               allowed=pool, where="outside the validation split")
    return np.sort(lab), val


def _class_balanced_draw(y: np.ndarray, per_class: int, rng: np.random.Generator, *, classes=None,
                         allowed: np.ndarray | None = None, where: str = "in the labelled pool") -> np.ndarray:
    """``per_class`` indices of each class (default: every class in ``y``), drawn without replacement among
    the ``allowed`` positions (a boolean mask; default: all), class by class in order."""
    out = []
    for c in (np.unique(y) if classes is None else classes):
        cand = np.flatnonzero((y == c) if allowed is None else allowed & (y == c))
        if len(cand) < per_class:
            raise ValueError(f"class {c} has only {len(cand)} examples {where}, need {per_class}")
        out.append(rng.choice(cand, size=per_class, replace=False))
    return np.concatenate(out)


# ---------------------------------------------------------------- linear L2-SVM

def _threads(n: int | None):
    """Context: torch intra-op threads set to ``n`` (None: leave torch's default, one per core)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        old = torch.get_num_threads()
        if n:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    return ctx()


def _ovr_signs(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(n, K) +-1 targets: one column per class, or one column (positive = ``classes[1]``) for two classes, as LinearSVC."""
    idx = np.searchsorted(classes, y)
    if len(classes) == 2:
        return np.where(idx == 1, 1.0, -1.0)[:, None]
    s = -np.ones((len(y), len(classes)))
    s[np.arange(len(y)), idx] = 1.0
    return s


def l2svm_objective(coef: np.ndarray, intercept: np.ndarray, X: np.ndarray, y: np.ndarray, C: float,
                    classes: np.ndarray | None = None) -> np.ndarray:
    """LinearSVC's primal objective per one-vs-rest problem (float64).

    f_k = 0.5 (|w_k|^2 + b_k^2) + C sum_i max(0, 1 - s_ik (x_i . w_k + b_k))^2, s_ik = +1 if y_i is
    class k else -1. The bias is penalised like a weight, as liblinear does with ``intercept_scaling=1``.
    """
    classes = np.unique(y) if classes is None else np.asarray(classes)
    S = _ovr_signs(np.asarray(y), classes)
    W = np.asarray(coef, dtype=np.float64).reshape(S.shape[1], -1)
    b = np.asarray(intercept, dtype=np.float64).reshape(-1)
    h = np.maximum(0.0, 1.0 - S * (np.asarray(X, dtype=np.float64) @ W.T + b))
    return 0.5 * ((W * W).sum(1) + b * b) + C * (h * h).sum(0)


def _exact_step(a: np.ndarray, pp: np.ndarray, m: np.ndarray, dm: np.ndarray, C: np.ndarray,
                iters: int = 60) -> np.ndarray:
    """Exact minimiser t >= 0 of phi(t) = f(W + t p) per column (phi is a convex piecewise quadratic).

    phi'(t) = a + t pp - 2C sum_i max(0, 1 - m_i - t dm_i) dm_i with a = W.p, pp = p.p, m the margins
    s*(x.w + b) and dm = s*(x.p + p_b). Newton on phi' (exact on each quadratic piece), kept inside a
    bracket [lo, hi] where phi'(lo) <= 0 < phi'(hi) (bisection when Newton leaves it).
    """
    r = 1.0 - m
    g0 = np.maximum(np.abs(a), 1e-300)
    lo = np.zeros_like(a)
    hi = np.full_like(a, np.inf)
    t = np.ones_like(a)
    done = np.zeros(a.shape, dtype=bool)
    for _ in range(iters):
        h = np.maximum(r - t * dm, 0.0)
        d1 = a + t * pp - 2.0 * C * (h * dm).sum(0)
        d2 = pp + 2.0 * C * ((h > 0) * dm * dm).sum(0)
        done |= np.abs(d1) <= 1e-9 * g0
        if done.all():
            return t
        neg = d1 <= 0
        lo = np.where(neg, np.maximum(lo, t), lo)
        hi = np.where(neg, hi, np.minimum(hi, t))
        with np.errstate(divide="ignore", invalid="ignore"):
            nt = t - d1 / d2
        mid = np.where(np.isinf(hi), 2.0 * np.maximum(lo, t), 0.5 * (lo + hi))
        nt = np.where((nt <= lo) | (nt >= hi) | ~np.isfinite(nt), mid, nt)
        t = np.where(done, t, nt)
    # phi' <= 0 on [0, lo], so the bracket's lower end always decreases phi
    return np.where(done, t, lo)


@dataclass
class _Preconditioner:
    """The features' top principal directions, to start L-BFGS's two-loop recursion from a good inverse Hessian.

    Column k's Hessian is I + 2C X_A^T X_A over its active points A (margin < 1). With
    rho_k = |A| / n, X_A^T X_A ~ rho_k X^T X, whose largest eigenvalues (the features' common modes)
    make the problem ill-conditioned. ``V`` (d, r) and ``s2`` are X's top right singular vectors and
    squared singular values (decreasing); ``V=None`` means the features already are principal
    coordinates with variances ``s2`` (the reduced problem of :func:`_solve_l2svm`), so the
    approximation is diagonal and complete.
    """

    V: torch.Tensor | None
    s2: np.ndarray
    n: int

    @classmethod
    def top(cls, X: torch.Tensor, rank: int, seed: int = 0) -> "_Preconditioner | None":
        r = min(rank, min(X.shape) - 1)
        if r < 1:
            return None
        g = torch.random.get_rng_state()
        torch.manual_seed(seed)  # svd_lowrank starts from a random matrix: keep fits reproducible
        try:
            _, S, V = torch.svd_lowrank(X, q=r, niter=2)
        finally:
            torch.random.set_rng_state(g)
        return cls(V.double(), (S.double() ** 2).numpy(), X.shape[0])

    def apply(self, q: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """H0 q for columns with curvature scale ``mu`` = 2 C rho (one per column)."""
        coef = 1.0 / (1.0 + mu[None, :] * self.s2[:, None])  # (r, K)
        out = np.empty_like(q)
        if self.V is None:
            out[:-1] = q[:-1] * coef
        else:
            rest = 1.0 / (1.0 + mu * self.s2[-1])  # the complement's eigenvalues are below s2[-1]
            qd = torch.from_numpy(q[:-1])
            out[:-1] = (qd * torch.from_numpy(rest)
                        + self.V @ (torch.from_numpy(coef - rest) * (self.V.T @ qd))).numpy()
        out[-1] = q[-1] / (1.0 + mu * self.n)  # the bias: a constant column, orthogonal to centred features
        return out


def _lbfgs_columns(X: torch.Tensor, S: np.ndarray, C: np.ndarray, W: np.ndarray, *, tol: float,
                   max_iter: int, memory: int, precond: _Preconditioner | None = None,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Minimise every column's L2-SVM objective at once: L-BFGS per column, exact line search.

    ``X`` (n, d) float32 tensor, ``S`` (n, K) +-1, ``C`` (K,) one constant per column (so a whole
    path over C shares the passes over X), ``W`` (d+1, K) float64 start ([w; b] per column).
    The two matrix products per iteration (the whole cost: each reads X once) run in float32 on every
    torch thread; the O(n K) and O(d K) rest in float64 numpy. A column stops when
    0.5 |grad|^2 <= tol * f: f is 1-strongly convex, so f - f* <= 0.5 |grad|^2, i.e. its objective is
    then within ``tol`` (relative) of the optimum: a certificate, not a heuristic. Returns W,
    iterations and certified relative gap per column, and the objective per column.
    """
    n, d = X.shape
    K = S.shape[1]
    C = np.broadcast_to(np.asarray(C, dtype=np.float64), (K,)).copy()
    W = W.copy()

    def xdot(V: np.ndarray) -> np.ndarray:  # [X 1] @ V, (n, k)
        return (X @ torch.from_numpy(np.ascontiguousarray(V[:d], dtype=np.float32))).numpy().astype(np.float64) + V[d]

    def grad(Wc: np.ndarray, mc: np.ndarray, Sc: np.ndarray, Cc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = np.maximum(1.0 - mc, 0.0)
        r = Sc * h
        g = Wc.copy()
        g[:d] -= 2.0 * Cc * (X.T @ torch.from_numpy(r.astype(np.float32))).numpy()
        g[d] -= 2.0 * Cc * r.sum(0)
        return 0.5 * (Wc * Wc).sum(0) + Cc * (h * h).sum(0), g

    m = S * xdot(W)
    f, g = grad(W, m, S, C)
    iters = np.zeros(K, dtype=np.int64)
    gap = 0.5 * (g * g).sum(0) / np.maximum(f, 1e-300)
    act = gap > tol
    mem: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (s, y, 1/s.y), zero on finished columns
    for it in range(max_iter):
        if not act.any():
            break
        cols = np.flatnonzero(act)
        # two-loop recursion with column-wise inner products (the columns are independent problems)
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(mem):
            al = rho * (s * q).sum(0)
            q -= al * y
            alphas.append(al)
        if precond is not None:
            q = precond.apply(q, 2.0 * C * np.maximum((m < 1).mean(0), 1.0 / n))
        elif mem:
            s, y, _ = mem[-1]
            yy = (y * y).sum(0)
            q *= np.where(yy > 0, (s * y).sum(0) / np.maximum(yy, 1e-300), 1.0)
        for (s, y, rho), al in zip(mem, reversed(alphas)):
            q += s * (al - rho * (y * q).sum(0))
        p, ga = -q[:, cols], g[:, cols]
        uphill = (ga * p).sum(0) >= 0  # curvature pairs spoilt by rounding: steepest descent
        p[:, uphill] = -ga[:, uphill]
        Sc, Cc = S[:, cols], C[cols]
        dm = Sc * xdot(p)
        t = _exact_step((W[:, cols] * p).sum(0), (p * p).sum(0), m[:, cols], dm, Cc)
        W[:, cols] += t * p
        m[:, cols] += t * dm
        fa, gn = grad(W[:, cols], m[:, cols], Sc, Cc)
        s_full, y_full = np.zeros_like(W), np.zeros_like(W)
        s_full[:, cols], y_full[:, cols] = t * p, gn - ga
        sy = (s_full * y_full).sum(0)
        mem.append((s_full, y_full, np.where(sy > 0, 1.0 / np.maximum(sy, 1e-300), 0.0)))
        if len(mem) > memory:
            mem.pop(0)
        g[:, cols], f[cols] = gn, fa
        iters[cols] += 1
        gap[cols] = 0.5 * (gn * gn).sum(0) / np.maximum(fa, 1e-300)
        act[cols] = gap[cols] > tol
        if it % 50 == 49:  # margins are updated incrementally: recompute them against drift
            m = S * xdot(W)
    return W, iters, gap, f


def _solve_l2svm(Xs: torch.Tensor, S: np.ndarray, C: np.ndarray, W0: np.ndarray | None, *, tol: float,
                 max_iter: int, memory: int, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Solve the L2-SVM columns on float32 features ``Xs`` (n, d); returns as :func:`_lbfgs_columns`.

    n >= d: L-BFGS on Xs, preconditioned with its top ``rank`` principal directions.
    n < d (few labels): the optimal w lies in the span of the n training rows, so with
    Xs Xs^T = U diag(lam) U^T the problem is solved exactly on the n principal coordinates
    L = U diag(sqrt(lam)) (n x n instead of n x d, same objective), fully preconditioned, and
    w = Xs^T U diag(lam^-1/2) u is mapped back.
    """
    n, d = Xs.shape
    K = S.shape[1]
    if n >= d:
        W0 = np.zeros((d + 1, K)) if W0 is None else W0
        return _lbfgs_columns(Xs, S, C, W0, tol=tol, max_iter=max_iter, memory=memory,
                              precond=_Preconditioner.top(Xs, rank))
    X64 = Xs.double()
    lam, U = torch.linalg.eigh(X64 @ X64.T)
    lam, U = lam.flip(0), U.flip(1)
    keep = lam > 1e-10 * lam[0].clamp(min=1e-300)
    lam, U = lam[keep], U[:, keep]
    B = U / lam.sqrt()  # columns of Q = Xs^T B are orthonormal
    L = (U * lam.sqrt()).float().contiguous()
    r = L.shape[1]
    U0 = np.zeros((r + 1, K))
    if W0 is not None:
        U0[:r] = (B.T @ (X64 @ torch.from_numpy(W0[:d]))).numpy()
        U0[r] = W0[d]
    Ur, iters, gap, f = _lbfgs_columns(L, S, C, U0, tol=tol, max_iter=max_iter, memory=memory,
                                       precond=_Preconditioner(None, lam.numpy(), n))
    W = np.empty((d + 1, K))
    W[:d] = (X64.T @ (B @ torch.from_numpy(Ur[:r]))).numpy()
    W[d] = Ur[r]
    return W, iters, gap, f


def _standardize(X: np.ndarray, mean: np.ndarray, scale: np.ndarray, rows: int = 4096) -> torch.Tensor:
    """(X - mean) / scale as a float32 tensor, a block of rows at a time (X may be float16)."""
    out = torch.empty(X.shape, dtype=torch.float32)
    m32, s32 = torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(scale.astype(np.float32))
    for i in range(0, len(X), rows):
        out[i : i + rows] = (torch.from_numpy(np.asarray(X[i : i + rows], dtype=np.float32)) - m32) / s32
    return out


def _moments(X: np.ndarray, rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and standard deviation (ddof 0, zero -> 1, as StandardScaler), float64, in blocks."""
    n = len(X)
    s = np.zeros(X.shape[1])
    ss = np.zeros(X.shape[1])
    for i in range(0, n, rows):
        s += np.asarray(X[i : i + rows], dtype=np.float64).sum(0)
    mean = s / n
    for i in range(0, n, rows):
        b = np.asarray(X[i : i + rows], dtype=np.float64) - mean
        ss += (b * b).sum(0)
    scale = np.sqrt(ss / n)
    scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
    return mean, scale


def _in_units_of(m: "LinearL2SVM", mean: np.ndarray | None, scale: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``m``'s (coef, intercept) re-expressed for features standardised with ``mean``/``scale`` (None: raw).

    The same decision function, so a warm start on more data (the refit on train + validation, whose
    mean and scale differ from the training set's) starts where the first fit ended, not elsewhere.
    """
    m1 = m.mean_ if m.standardize else np.zeros(m.coef_.shape[1])
    s1 = m.scale_ if m.standardize else np.ones(m.coef_.shape[1])
    m2 = np.zeros_like(m1) if mean is None else mean
    s2 = np.ones_like(s1) if scale is None else scale
    # w . (x - m1) / s1 + b  with  x = s2 x' + m2   ->   (w s2 / s1) . x' + b + w . (m2 - m1) / s1
    return m.coef_ * (s2 / s1), m.intercept_ + m.coef_ @ ((m2 - m1) / s1)


@dataclass
class LinearL2SVM:
    """One-vs-rest linear L2-SVM (squared hinge, L2 penalty; the paper's classifier), solved in torch.

    The same objective as scikit-learn's ``LinearSVC(loss="squared_hinge", penalty="l2")`` with its
    default ``intercept_scaling=1`` (the bias is penalised like a weight), on features standardised
    with the training set's mean and standard deviation when ``standardize`` (as ``StandardScaler``).
    Every one-vs-rest problem (and, in :meth:`fit_path`, every C) is solved at once by L-BFGS with an
    exact line search and a principal-direction preconditioner; the matrix products use every torch
    thread (``threads``: None = one per core). A fit stops when each problem's objective is certified
    within ``tol`` (relative) of its optimum; when ``max_iter`` runs out first, a ``ConvergenceWarning``
    names the C and the gap reached (never silenced here).
    """

    C: float = 1.0
    tol: float = 1e-4
    max_iter: int = 1000
    memory: int = 10
    rank: int = 64  # principal directions in the preconditioner (n >= d)
    standardize: bool = True
    threads: int | None = None
    classes_: np.ndarray | None = field(default=None, repr=False)
    coef_: np.ndarray | None = field(default=None, repr=False)  # (K, d) in standardised units
    intercept_: np.ndarray | None = field(default=None, repr=False)
    mean_: np.ndarray | None = field(default=None, repr=False)
    scale_: np.ndarray | None = field(default=None, repr=False)
    n_iter_: int = 0
    gap_: float = float("nan")  # largest certified relative objective gap over the one-vs-rest problems
    objective_: np.ndarray | None = field(default=None, repr=False)
    converged_: bool = False

    def _prepare(self, X: np.ndarray) -> torch.Tensor:
        if self.standardize:
            return _standardize(X, self.mean_, self.scale_)
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))

    def fit(self, X: np.ndarray, y: np.ndarray, init: "LinearL2SVM | None" = None) -> "LinearL2SVM":
        """Fit on (n, d) features ``X`` and labels ``y``; ``init``: a fitted model to start from (a warm start)."""
        return self.fit_path(X, y, [self.C], init=init)[0]

    def fit_path(self, X: np.ndarray, y: np.ndarray, Cs: Sequence[float],
                 init: "LinearL2SVM | None" = None) -> list["LinearL2SVM"]:
        """One fitted model per C in ``Cs``, all solved together (the passes over X are shared).

        This model's settings are used for every C; it becomes the fit for ``Cs[0]``.
        """
        import copy
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        y = np.asarray(y)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels")
        if not len(Cs):
            raise ValueError("Cs is empty: give at least one regularisation constant")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError("the L2-SVM needs at least two classes")
        if self.standardize:
            self.mean_, self.scale_ = _moments(X)
        S = _ovr_signs(y, self.classes_)
        K, d, nC = S.shape[1], X.shape[1], len(Cs)
        W0 = None
        if init is not None and init.coef_ is not None and init.coef_.shape == (K, d):
            coef, icpt = _in_units_of(init, self.mean_ if self.standardize else None,
                                      self.scale_ if self.standardize else None)
            W0 = np.tile(np.vstack([coef.T, icpt[None]]), (1, nC))
        with _threads(self.threads):
            W, iters, gap, f = _solve_l2svm(self._prepare(X), np.tile(S, (1, nC)), np.repeat(np.asarray(Cs, float), K),
                                            W0, tol=self.tol, max_iter=self.max_iter, memory=self.memory, rank=self.rank)
        models = []
        for j, C in enumerate(Cs):
            m = self if j == 0 else copy.copy(self)
            cols = slice(j * K, (j + 1) * K)
            m.C = float(C)
            m.coef_, m.intercept_ = W[:d, cols].T.copy(), W[d, cols].copy()
            m.n_iter_, m.gap_, m.objective_ = int(iters[cols].max()), float(gap[cols].max()), f[cols].copy()
            m.converged_ = bool(m.gap_ <= m.tol)
            if not m.converged_:
                warnings.warn(
                    f"L2-SVM with C={m.C:g} did not converge in max_iter={m.max_iter} iterations: "
                    f"{int((gap[cols] > m.tol).sum())} of {K} one-vs-rest problems have a certified objective gap "
                    f"up to {m.gap_:.1e} (tol {m.tol:g}); raise max_iter or tol", ConvergenceWarning, stacklevel=2)
            models.append(m)
        return models

    def decision_function(self, X: np.ndarray, rows: int = 8192) -> np.ndarray:
        return _decisions([self], X, rows)[0]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return _predict_from(self, self.decision_function(X))


def _decisions(models: list[LinearL2SVM], X: np.ndarray, rows: int = 8192) -> list[np.ndarray]:
    """Decision values of models fitted on the same standardisation, in one pass over X."""
    m0 = models[0]
    if m0.coef_ is None:
        raise RuntimeError("LinearL2SVM.decision_function called before fit")
    W = torch.from_numpy(np.concatenate([m.coef_.T for m in models], 1).astype(np.float32))
    b = torch.from_numpy(np.concatenate([m.intercept_ for m in models]).astype(np.float32))
    out = []
    with _threads(m0.threads):
        for i in range(0, len(X), rows):
            out.append((m0._prepare(X[i : i + rows]) @ W + b).numpy())
    Z = np.concatenate(out) if out else np.empty((0, W.shape[1]), dtype=np.float32)
    K = m0.coef_.shape[0]
    return [Z[:, j * K : (j + 1) * K][:, 0] if len(m0.classes_) == 2 else Z[:, j * K : (j + 1) * K]
            for j in range(len(models))]


def _predict_from(m: LinearL2SVM, z: np.ndarray) -> np.ndarray:
    if len(m.classes_) == 2:
        return m.classes_[(z > 0).astype(int)]
    return m.classes_[z.argmax(1)]


@dataclass
class SVMResult:
    """A linear L2-SVM fitted on standardised features, C chosen by validation accuracy."""

    C: float
    val_acc: dict[float, float]
    model: object = field(repr=False)  # LinearL2SVM (or a Pipeline(StandardScaler, LinearSVC) for solver="liblinear")
    fit_seconds: float = 0.0
    fits: dict = field(default_factory=dict)  # step -> wall s, CPU s, iterations (per C), certified gap

    def accuracy(self, X: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X if isinstance(self.model, LinearL2SVM) else _chunks_f32(X))

    def summary(self) -> str:
        """One entry per fit: iterations, wall and CPU seconds (CPU / wall ~ the cores kept busy)."""
        return "; ".join(f"{k}: {v['iters']} it, {v['wall']:.1f}s wall, {v['cpu']:.1f}s CPU" for k, v in self.fits.items())


def _chunks_f32(X: np.ndarray) -> np.ndarray:
    return X if X.dtype == np.float32 else X.astype(np.float32)


def _liblinear(C: float, max_iter: int, seed: int, tol: float = 1e-3):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    return make_pipeline(StandardScaler(), LinearSVC(C=C, loss="squared_hinge", penalty="l2", dual="auto",
                                                     tol=tol, max_iter=max_iter, random_state=seed))


def _fit_liblinear(C: float, X, y, *, tol: float, max_iter: int, seed: int):
    """scikit-learn's LinearSVC; its ConvergenceWarning is re-raised with the C that caused it."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        m = _liblinear(C, max_iter, seed, tol).fit(_chunks_f32(X), y)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            warnings.warn(f"LinearSVC with C={C:g} did not converge in max_iter={max_iter}: {w.message}",
                          ConvergenceWarning, stacklevel=3)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return m


def fit_svm(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    Cs: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
    *,
    refit_on_val: bool = False,
    solver: str = "lbfgs",
    max_iter: int | None = None,
    tol: float | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> SVMResult:
    """Fit a linear L2-SVM (squared hinge) on standardised features per C; keep the best C on validation.

    ``solver="lbfgs"`` (default): :class:`LinearL2SVM`, every C solved together (``tol`` 1e-4: each
    objective certified within 0.01 % of its optimum); the refit starts from the chosen C's solution.
    ``solver="liblinear"``: scikit-learn's ``LinearSVC`` per C (single-threaded; ``tol`` 1e-3), the
    reference. Ties in validation accuracy go to the smallest C. ``refit_on_val``: refit the chosen C
    on train + validation (§5.1 uses all training labels; §5.2 keeps validation for model selection
    only). Non-convergence is never silenced: it is a ``ConvergenceWarning`` naming the C.
    """
    if solver not in ("lbfgs", "liblinear"):
        raise ValueError(f"solver must be 'lbfgs' or 'liblinear', got {solver!r}")
    if len(X_train) != len(y_train) or len(X_val) != len(y_val):
        raise ValueError("features and labels differ in length")
    if not len(Cs):
        raise ValueError("Cs is empty: give at least one regularisation constant")
    tol = (1e-4 if solver == "lbfgs" else 1e-3) if tol is None else tol
    max_iter = 1000 if max_iter is None else max_iter
    Cs = sorted(float(c) for c in Cs)
    y_val = np.asarray(y_val)
    t0 = time.perf_counter()
    fits: dict = {}
    w, c = time.perf_counter(), time.process_time()
    if solver == "lbfgs":
        models = LinearL2SVM(tol=tol, max_iter=max_iter, threads=threads).fit_path(X_train, y_train, Cs)
        preds = [_predict_from(m, z) for m, z in zip(models, _decisions(models, X_val))]
        fits[f"path over {len(Cs)} C"] = dict(wall=time.perf_counter() - w, cpu=time.process_time() - c,
                                              iters=[m.n_iter_ for m in models], gap=max(m.gap_ for m in models))
    else:
        models, preds = [], []
        for C in Cs:
            w, c = time.perf_counter(), time.process_time()
            models.append(_fit_liblinear(C, X_train, y_train, tol=tol, max_iter=max_iter, seed=seed))
            preds.append(models[-1].predict(_chunks_f32(X_val)))
            fits[f"C={C:g}"] = dict(wall=time.perf_counter() - w, cpu=time.process_time() - c,
                                    iters=int(np.max(models[-1][-1].n_iter_)), gap=float("nan"))
    scores = {C: float(np.mean(p == y_val)) for C, p in zip(Cs, preds)}
    best = max(Cs, key=lambda C: (scores[C], -C))  # ties: the smallest C
    best_model = models[Cs.index(best)]
    if refit_on_val:
        w, c = time.perf_counter(), time.process_time()
        Xa, ya = np.concatenate([X_train, X_val]), np.concatenate([y_train, y_val])
        if solver == "lbfgs":
            best_model = LinearL2SVM(C=best, tol=tol, max_iter=max_iter, threads=threads).fit(Xa, ya, init=best_model)
            iters, gap = best_model.n_iter_, best_model.gap_
        else:
            best_model = _fit_liblinear(best, Xa, ya, tol=tol, max_iter=max_iter, seed=seed)
            iters, gap = int(np.max(best_model[-1].n_iter_)), float("nan")
        fits[f"refit C={best:g}"] = dict(wall=time.perf_counter() - w, cpu=time.process_time() - c, iters=iters, gap=gap)
    return SVMResult(best, scores, best_model, time.perf_counter() - t0, fits)


# ---------------------------------------------------------------- §5.2, the authors' analysis protocol

# The C values the authors' SVHN analysis script (Newmu/dcgan_code, svhn/svhn_semisup_analysis.py) tries.
AUTHORS_CS = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)


@dataclass
class DrawsResult:
    """§5.2 by the authors' protocol: C chosen on mean validation error over label draws, then many test draws.

    Errors are in percent; ``val_by_C`` maps each C to (mean, 1.96 std) of the validation error over the
    selection draws; ``test_errors`` / ``val_errors`` are per test draw with the chosen C.
    """

    C: float
    val_by_C: dict[float, tuple[float, float]]
    test_errors: np.ndarray
    val_errors: np.ndarray
    seconds: float = 0.0

    @property
    def test(self) -> tuple[float, float]:
        """Mean test error and 1.96 std over the draws (the script's "mean +- 1.96 std")."""
        return float(self.test_errors.mean()), float(1.96 * self.test_errors.std())


def authors_svhn_protocol(
    featurize: Callable[[np.ndarray], np.ndarray],
    y_pool: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    Cs: Sequence[float] = AUTHORS_CS,
    select_draws: int = 10,
    test_draws: int = 100,
    per_class: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> DrawsResult:
    """§5.2 exactly as the authors' analysis script runs it, with our L2-SVM solver.

    For each C, ``select_draws`` fresh class-balanced draws of ``per_class`` labels per class from the
    labelled pool (``y_pool``; ``featurize(indices)`` returns their features), an L2-SVM on the raw
    (not standardised) features, the validation error of each; the C with the lowest mean validation
    error wins. Then ``test_draws`` fresh draws with that C give the test error as mean +- 1.96 std
    over draws. The script uses scikit-learn's ``LinearSVC(C)`` (squared hinge, one-vs-rest, bias
    penalised like a weight): :class:`LinearL2SVM` with ``standardize=False`` solves the same problem.
    """
    from tqdm.auto import tqdm

    y_pool, y_val, y_test = (np.asarray(v) for v in (y_pool, y_val, y_test))
    if select_draws < 1 or test_draws < 2:
        raise ValueError("need at least 1 selection draw and 2 test draws (the spread needs two)")
    if not len(Cs):
        raise ValueError("Cs is empty: give at least one regularisation constant")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)

    def fit(C: float) -> LinearL2SVM:  # on a fresh draw of labels
        idx = _class_balanced_draw(y_pool, per_class, rng)
        return LinearL2SVM(C=C, standardize=False).fit(featurize(idx), y_pool[idx])

    val_by_C = {}
    for C in tqdm(list(Cs), desc="C on validation", disable=not progress):
        errs = np.array([100 * np.mean(fit(C).predict(X_val) != y_val) for _ in range(select_draws)])
        val_by_C[float(C)] = (float(errs.mean()), float(1.96 * errs.std()))
    best = min(val_by_C, key=lambda c: (val_by_C[c][0], c))  # ties: the smallest C
    test_errs, val_errs = [], []
    for _ in tqdm(range(test_draws), desc=f"test draws, C={best:g}", disable=not progress):
        m = fit(best)
        test_errs.append(100 * np.mean(m.predict(X_test) != y_test))
        val_errs.append(100 * np.mean(m.predict(X_val) != y_val))
    return DrawsResult(best, val_by_C, np.array(test_errs), np.array(val_errs), time.perf_counter() - t0)


__all__ += ["AUTHORS_CS", "DrawsResult", "authors_svhn_protocol"]


# ---------------------------------------------------------------- §5.2 supervised control

class SupervisedCNN(nn.Module):
    """D's conv blocks (same architecture) + dropout + a linear classifier on the flattened 4x4 map."""

    def __init__(self, cfg: ModelConfig, n_classes: int, dropout: float = 0.0):
        super().__init__()
        d = Discriminator(cfg)
        self.blocks = d.blocks
        self.dropout = float(dropout)
        self.fc = nn.Linear(cfg.d_widths()[-1] * 16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.fc(_dropout(x.flatten(1), self.dropout, self.training))


def _dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout, as ``F.dropout``, with the mask drawn by ``rand < 1 - p``.

    ``F.dropout``'s ``bernoulli_`` takes 2.7 ms on a (128, 2048) batch here against 1.2 ms for this
    mask, 16 % of a supervised-control epoch; same distribution, another random stream.
    """
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    return x * (torch.rand_like(x) < 1.0 - p) / (1.0 - p)


@dataclass
class SupervisedResult:
    """One supervised training run: its hyper-parameters, its best epoch's validation error, how long it ran."""

    hparams: dict
    val_error: float  # on the whole validation split, with the best epoch's weights
    seconds: float
    model: nn.Module | None = field(default=None, repr=False)
    epochs_run: int = 0  # epochs actually trained (early stopping ends a run before max_epochs)
    best_epoch: int = 0
    curve: list[float] = field(default_factory=list, repr=False)  # early-stopping error after each epoch
    cpu_seconds: float = 0.0


def _predict(model: nn.Module, images: torch.Tensor, precision: str, bs: int = 1000) -> torch.Tensor:
    model.eval()
    device = device_of(model)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), bs):
            x = next(_as_float_batches(images[i : i + bs], bs)).contiguous(memory_format=torch.channels_last)
            with autocast(precision, device):
                out.append(model(x).argmax(1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def _error(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, precision: str, bs: int = 1000) -> float:
    return float((_predict(model, images, precision, bs) != labels).float().mean())


def _stop_subset(n_val: int, size: int | None) -> torch.Tensor:
    """The validation images early stopping looks at after each epoch: a fixed random subset (seed 0) or all."""
    if size is None or size >= n_val:
        return torch.arange(n_val)
    return torch.from_numpy(np.sort(np.random.default_rng(0).choice(n_val, size, replace=False)))


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
    max_epochs: int = 100,
    patience: int | None = 10,
    stop_subset: int | None = 2000,
    batch_size: int = 100,
    seed: int = 0,
    precision: str = "auto",
    keep_model: bool = False,
) -> SupervisedResult:
    """Train D's architecture + a linear head with labels (Adam, beta1=0.5 as in §4), with early stopping.

    After every epoch the error on ``stop_subset`` validation images (a fixed subset; None: all) is
    measured; training stops when it has not improved for ``patience`` epochs (None: never) or after
    ``max_epochs``, and the best epoch's weights are restored. ``val_error`` is those weights' error on
    the whole validation split.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    device = torch.device("cpu")  # the supervised control trains on the CPU (the model is never moved)
    precision = resolve_precision(precision, device)
    torch.manual_seed(seed)
    y_val = torch.as_tensor(y_val, dtype=torch.long)
    n_classes = int(max(int(y_train.max()), int(y_val.max()))) + 1
    model = SupervisedCNN(cfg, n_classes, dropout).to(memory_format=torch.channels_last)
    # the fused kernel updates every parameter in one call (9 % of an epoch of this small net)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=weight_decay, fused=True)
    g = torch.Generator().manual_seed(seed)
    y_train = torch.as_tensor(y_train, dtype=torch.long)
    xs_train = torch.cat(list(_as_float_batches(x_train, 4096))).contiguous(memory_format=torch.channels_last)
    sub = _stop_subset(len(x_val), stop_subset)
    x_stop, y_stop = x_val[sub], y_val[sub]
    curve: list[float] = []
    best_err, best_epoch, best_state = float("inf"), 0, None
    for epoch in range(1, max_epochs + 1):
        model.train()
        perm = torch.randperm(len(xs_train), generator=g)
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            if len(idx) < 2:  # BatchNorm needs more than one example
                continue
            with autocast(precision, device):
                loss = F.cross_entropy(model(xs_train[idx]).float(), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        curve.append(_error(model, x_stop, y_stop, precision))
        if curve[-1] < best_err:
            best_err, best_epoch = curve[-1], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif patience is not None and epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    err = best_err if len(sub) == len(x_val) else _error(model, x_val, y_val, precision)
    hp = dict(lr=lr, dropout=dropout, weight_decay=weight_decay)
    return SupervisedResult(hp, err, time.perf_counter() - t0, model if keep_model else None,
                            epochs_run=len(curve), best_epoch=best_epoch, curve=curve,
                            cpu_seconds=time.process_time() - c0)


def sample_hparams(rng: np.random.Generator) -> dict:
    """One random-search draw: log-uniform lr (1e-4..1e-2) and weight decay (1e-6..1e-2), uniform dropout (0..0.7).

    The number of epochs is not drawn: early stopping on the validation split chooses it.
    """
    return dict(
        lr=float(10 ** rng.uniform(-4, -2)),
        dropout=float(rng.uniform(0.0, 0.7)),
        weight_decay=float(10 ** rng.uniform(-6, -2)),
    )


@dataclass
class SearchResult:
    best: SupervisedResult
    trials: list[SupervisedResult]

    def table(self) -> list[dict]:
        return [dict(t.hparams, epochs_run=t.epochs_run, best_epoch=t.best_epoch, val_error=t.val_error,
                     seconds=round(t.seconds, 1)) for t in self.trials]


def supervised_search(
    cfg: ModelConfig,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    n_trials: int,
    max_epochs: int = 100,
    patience: int | None = 10,
    stop_subset: int | None = 2000,
    batch_size: int = 100,
    seed: int = 0,
    precision: str = "auto",
    verbose: bool = False,
) -> SearchResult:
    """§5.2's control: ``n_trials`` random hyper-parameter draws (paper: 64); the best by validation error.

    Each trial trains with early stopping (:func:`train_supervised`). ``verbose`` prints every trial
    as it ends (hyper-parameters, epochs run, best epoch, validation error, wall and CPU seconds).
    The best trial's model is kept (``best.model``) so it can be scored on the test split.
    """
    if n_trials < 1:
        raise ValueError("n_trials must be >= 1")
    rng = np.random.default_rng(seed)
    trials: list[SupervisedResult] = []
    best: SupervisedResult | None = None
    for t in range(n_trials):
        hp = sample_hparams(rng)
        r = train_supervised(cfg, x_train, y_train, x_val, y_val, **hp, max_epochs=max_epochs, patience=patience,
                             stop_subset=stop_subset, batch_size=batch_size, seed=seed * 1000 + t, precision=precision,
                             keep_model=True)
        trials.append(r)
        if verbose:
            print(f"trial {t + 1:2d}/{n_trials}: lr {hp['lr']:.1e}, dropout {hp['dropout']:.2f}, weight decay "
                  f"{hp['weight_decay']:.1e} -> {r.epochs_run:3d} epochs (best {r.best_epoch:3d}), validation error "
                  f"{100 * r.val_error:.2f}%  ({r.seconds:.1f}s wall, {r.cpu_seconds:.1f}s CPU)", flush=True)
        if best is None or r.val_error < best.val_error:
            if best is not None:
                best.model = None
            best = r
        else:
            r.model = None
    assert best is not None
    return SearchResult(best, trials)


def classifier_predictions(model: nn.Module, images: torch.Tensor, precision: str = "auto") -> np.ndarray:
    """Predicted classes of a classifier from :func:`train_supervised` on uint8 ``images``."""
    return _predict(model, images, resolve_precision(precision, device_of(model))).numpy()


def classifier_error(model: nn.Module, images: torch.Tensor, labels, precision: str = "auto") -> float:
    """Error rate of a classifier from :func:`train_supervised` on uint8 ``images``."""
    return float(np.mean(classifier_predictions(model, images, precision) != np.asarray(labels)))


__all__ += ["SupervisedCNN", "classifier_error", "classifier_predictions", "LinearL2SVM", "l2svm_objective"]
