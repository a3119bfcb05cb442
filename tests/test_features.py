"""Tests for dcgan.features (§5.1/§5.2): feature dimension, label sampler, SVM path, K-means, supervised control."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcgan import features as fe
from dcgan.models import Discriminator, ModelConfig


@pytest.mark.parametrize(
    "size,ndf,expected",
    [
        (32, 256, 16 * (256 + 512 + 1024)),  # the paper's ImageNet D: 28672
        (32, 64, 16 * (64 + 128 + 256)),
        (64, 64, 16 * (64 + 128 + 256 + 512)),
        (64, 8, 16 * (8 + 16 + 32 + 64)),
    ],
)
def test_feature_dim_formula(size, ndf, expected):
    cfg = ModelConfig(image_size=size, channels=3, ndf=ndf)
    assert fe.feature_dim(cfg) == expected


def test_paper_dim_is_28672():
    assert fe.feature_dim(ModelConfig(image_size=32, channels=3, ndf=256)) == 28672


@pytest.mark.parametrize("size", [32, 64])
def test_extracted_features_match_formula_and_maxpool(size):
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=size, channels=3, ndf=8)
    D = Discriminator(cfg)
    x = torch.randint(0, 256, (5, 3, size, size), dtype=torch.uint8)
    f = fe.extract_features(D, x, batch_size=2, precision="fp32", dtype=np.float32)
    assert D.training  # extraction restores the module's mode
    assert f.shape == (5, fe.feature_dim(cfg))
    # the first block's slice is its map max-pooled to 4x4, in order
    with torch.no_grad():
        D.eval()
        a0 = D.activations(x.float() / 127.5 - 1)[0]
    ref = torch.nn.functional.max_pool2d(a0, size // 2 // 4).flatten(1).numpy()
    np.testing.assert_allclose(f[:, : ref.shape[1]], ref, rtol=1e-5, atol=1e-6)


def test_extract_rejects_wrong_shape():
    D = Discriminator(ModelConfig(image_size=32, channels=1, ndf=8))
    with pytest.raises(ValueError, match="image_size=32"):
        fe.extract_features(D, torch.zeros(2, 1, 64, 64, dtype=torch.uint8))


def test_bf16_extraction_close_to_fp32():
    torch.manual_seed(0)
    D = Discriminator(ModelConfig(image_size=32, channels=1, ndf=8))
    x = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    a = fe.extract_features(D, x, precision="fp32", dtype=np.float32)
    b = fe.extract_features(D, x, precision="bf16", dtype=np.float32)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def _labels(n=3000, k=10, seed=1):
    return np.random.default_rng(seed).integers(0, k, n)


def test_label_sampler_balanced_disjoint_seeded():
    y = _labels()
    test_idx = np.arange(2500, 3000)  # e.g. a test split stored in the same array
    lab, val = fe.semi_supervised_split(y, n_labels=100, n_val=1000, seed=3, exclude=test_idx)
    assert len(lab) == 100 and len(val) == 1000
    assert np.bincount(y[lab], minlength=10).tolist() == [10] * 10
    assert not set(lab) & set(val)
    assert not (set(lab) | set(val)) & set(test_idx)
    lab2, val2 = fe.semi_supervised_split(y, n_labels=100, n_val=1000, seed=3, exclude=test_idx)
    np.testing.assert_array_equal(lab, lab2)
    lab3, val3 = fe.semi_supervised_split(y, n_labels=100, n_val=1000, seed=4, exclude=test_idx)
    np.testing.assert_array_equal(val, val3)  # the validation split does not depend on the label draw
    assert set(lab) != set(lab3)


def test_label_sampler_errors():
    y = _labels(200)
    with pytest.raises(ValueError, match="divisible"):
        fe.semi_supervised_split(y, n_labels=15, n_val=10)
    with pytest.raises(ValueError, match="available"):
        fe.semi_supervised_split(y, n_labels=100, n_val=150)


def _blobs(n, d=20, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (k, d))
    y = rng.integers(0, k, n)
    return (centers[y] + rng.normal(0, 1, (n, d))).astype(np.float16), y


def test_svm_path_on_tiny_fixture():
    X, y = _blobs(270)
    Xtr, ytr, Xva, yva, Xte, yte = X[:150], y[:150], X[150:210], y[150:210], X[210:], y[210:]
    r = fe.fit_svm(Xtr, ytr, Xva, yva, Cs=(1e-4, 1e-2, 1.0))
    assert set(r.val_acc) == {1e-4, 1e-2, 1.0}
    assert r.val_acc[r.C] == max(r.val_acc.values())
    assert r.accuracy(Xte, yte) > 0.9
    # chance on shuffled labels: the path cannot pass on its own
    shuffled = fe.fit_svm(Xtr, np.random.default_rng(0).permutation(ytr), Xva, yva, Cs=(1e-2,))
    assert shuffled.accuracy(Xte, yte) < 0.7
    refit = fe.fit_svm(Xtr, ytr, Xva, yva, Cs=(1e-2,), refit_on_val=True)
    assert refit.model[-1].coef_.shape == (3, 20)


def test_pixel_features_range():
    x = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    np.testing.assert_allclose(fe.pixel_features(x), [[-1.0, 1.0]])


def test_kmeans_features_shape_and_triangle():
    rng = np.random.default_rng(0)
    imgs = torch.from_numpy(rng.integers(0, 256, (20, 1, 16, 16), dtype=np.uint8))
    km = fe.KMeansFeatures(n_centroids=12, patch=4, stride=2, n_patches=500, kmeans_iter=5).fit(imgs)
    f = km.transform(imgs[:3])
    assert f.shape == (3, 4 * 12) == (3, km.dim)
    assert (f >= 0).all() and (f > 0).any()  # triangle activations are non-negative and not all zero
    with pytest.raises(RuntimeError, match="before fit"):
        fe.KMeansFeatures(n_centroids=4).transform(imgs)


def test_kmeans_separates_textures():
    # horizontal vs vertical stripes: quadrant-pooled K-means features make them linearly separable
    rng = np.random.default_rng(0)
    n = 40
    base = np.zeros((n, 1, 16, 16), dtype=np.uint8)
    y = np.arange(n) % 2
    for i in range(n):
        period = rng.integers(2, 5)
        stripes = ((np.arange(16) // period) % 2 * 200 + rng.integers(0, 40, 16)).astype(np.uint8)
        base[i, 0] = stripes[:, None] if y[i] else stripes[None, :]
    imgs = torch.from_numpy(base)
    km = fe.KMeansFeatures(n_centroids=16, patch=4, stride=2, n_patches=2000, kmeans_iter=10).fit(imgs)
    F = km.transform(imgs)
    r = fe.fit_svm(F[:30], y[:30], F[30:], y[30:], Cs=(1e-2, 1.0))
    assert max(r.val_acc.values()) == 1.0


def test_supervised_control_learns_and_search_picks_best():
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=16, channels=1, ndf=4)
    n = 60
    y = torch.arange(n) % 2
    x = torch.zeros(n, 1, 16, 16, dtype=torch.uint8)
    x[y == 1, :, :8] = 255  # class 1: bright top half
    x[y == 0, :, 8:] = 255
    r = fe.train_supervised(cfg, x[:40], y[:40], x[40:], y[40:], lr=1e-2, dropout=0.0, weight_decay=0.0,
                            epochs=10, batch_size=20, precision="fp32", keep_model=True)
    assert r.val_error == 0.0
    assert fe.classifier_error(r.model, x[40:], y[40:], precision="fp32") == 0.0
    s = fe.supervised_search(cfg, x[:40], y[:40], x[40:], y[40:], n_trials=2, max_epochs=3, precision="fp32")
    assert len(s.trials) == 2 and s.best.val_error == min(t.val_error for t in s.trials)
    assert s.best.model is not None and all(t.model is None for t in s.trials if t is not s.best)
