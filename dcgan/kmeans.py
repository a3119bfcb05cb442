"""The single-layer K-means baseline of Table 1 (paper §5.1, "1 Layer K-means"; Coates, Lee & Ng 2011).

Normalised, ZCA-whitened 6x6 patches, k-means centroids (scikit-learn), the "triangle" encoding and
sum-pooling over the four image quadrants (:class:`KMeansFeatures`): the features that D's are compared
with in chapters 04 and 05, through the same L2-SVM (:mod:`dcgan.svm`) on the same splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from .timing import phased

__all__ = ["KMeansFeatures"]


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

    @phased("K-means fit")
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
    @phased("feature extraction")
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
