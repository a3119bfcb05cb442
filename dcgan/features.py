"""DCGAN discriminator features as a representation (paper §5.1 CIFAR-10, §5.2 SVHN).

The paper's pipeline: take every conv layer of a trained D, max-pool each
layer's map to a 4x4 grid, flatten and concatenate (28672-d for the 32x32
ImageNet D with widths 256/512/1024), then fit a regularised linear L2-SVM.
This module holds the representations: D's features (:func:`extract_features`,
with :func:`recalibrate_batchnorm` for the authors' BatchNorm re-estimation) and raw
pixels (:func:`pixel_features`). The rest of the pipeline lives by what it holds:

* :mod:`dcgan.svm` the L2-SVM solver (:class:`~dcgan.svm.LinearL2SVM`);
* :mod:`dcgan.protocol` the label splits and how C is chosen (:func:`~dcgan.protocol.fit_svm`,
  :func:`~dcgan.protocol.authors_svhn_protocol`);
* :mod:`dcgan.kmeans` the K-means baseline; :mod:`dcgan.supervised` the supervised control.

Their names are re-exported here, so ``from dcgan import features as fe; fe.fit_svm`` keeps working.

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

from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .book import StepTimer
from .data import float_batches as _as_float_batches
from .data import to_model_range
from .kmeans import KMeansFeatures
from .models import Discriminator, ModelConfig
from .precision import autocast, bf16_available, check_precision, device_of, resolve_precision
from .protocol import AUTHORS_CS, DrawsResult, SVMResult, authors_svhn_protocol, fit_svm, label_draws, semi_supervised_split
from .supervised import (
    SearchResult,
    SupervisedCNN,
    SupervisedResult,
    classifier_error,
    classifier_predictions,
    sample_hparams,
    supervised_search,
    train_supervised,
)
from .svm import LinearL2SVM, l2svm_objective
from .timing import phased

__all__ = [
    # this module: the representations
    "feature_dim",
    "extract_features",
    "recalibrate_batchnorm",
    "pixel_features",
    # re-exported from dcgan.svm, dcgan.protocol, dcgan.kmeans, dcgan.supervised, dcgan.book, dcgan.precision
    "LinearL2SVM",
    "l2svm_objective",
    "semi_supervised_split",
    "SVMResult",
    "fit_svm",
    "AUTHORS_CS",
    "DrawsResult",
    "authors_svhn_protocol",
    "label_draws",
    "KMeansFeatures",
    "SupervisedCNN",
    "SupervisedResult",
    "SearchResult",
    "train_supervised",
    "sample_hparams",
    "supervised_search",
    "classifier_predictions",
    "classifier_error",
    "StepTimer",
    "bf16_available",
]


def feature_dim(cfg: ModelConfig, grid: int = 4) -> int:
    """Length of the concatenated, max-pooled D feature vector: ``grid**2 * sum(D widths)``.

    For the paper's 32x32 D with widths 256/512/1024 this is 16 * 1792 = 28672.
    """
    return grid * grid * sum(cfg.d_widths())


@torch.no_grad()
@phased("feature extraction")
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
@phased("BatchNorm re-estimation")
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
    return to_model_range(images).flatten(1).numpy().astype(dtype, copy=False)
