"""Tests for dcgan.features and what it re-exports (§5.1/§5.2): feature dimension, label sampler
(dcgan.protocol), SVM path (dcgan.svm), K-means (dcgan.kmeans), supervised control (dcgan.supervised)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcgan import features as fe
from dcgan import supervised, svm
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


def test_label_draws_balanced_distinct_reproducible():
    y = _labels(500)
    draws = fe.label_draws(y, per_class=5, n_draws=4, seed=2)
    assert len(draws) == 4
    for d in draws:
        assert np.bincount(y[d], minlength=10).tolist() == [5] * 10 and len(set(d)) == 50
    assert len({tuple(d) for d in draws}) == 4  # each draw is another labelled set
    again = fe.label_draws(y, per_class=5, n_draws=4, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(draws, again))
    assert not np.array_equal(fe.label_draws(y, 5, 1, seed=3)[0], draws[0])
    with pytest.raises(ValueError, match="class 0 has only"):
        fe.label_draws(np.r_[np.zeros(3, int), np.ones(20, int)], per_class=5, n_draws=1)
    with pytest.raises(ValueError, match="at least 1"):
        fe.label_draws(y, per_class=0, n_draws=1)


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
    path = r.fits["path over 3 C"]  # every C solved in the same passes over the features
    assert path["gap"] <= 1e-4 and len(path["iters"]) == 3
    assert "wall" in r.summary()
    # chance on shuffled labels: the path cannot pass on its own
    shuffled = fe.fit_svm(Xtr, np.random.default_rng(0).permutation(ytr), Xva, yva, Cs=(1e-2,))
    assert shuffled.accuracy(Xte, yte) < 0.7
    refit = fe.fit_svm(Xtr, ytr, Xva, yva, Cs=(1e-2,), refit_on_val=True)
    assert refit.model.coef_.shape == (3, 20) and "refit C=0.01" in refit.fits
    ref = fe.fit_svm(Xtr, ytr, Xva, yva, Cs=(1e-2,), refit_on_val=True, solver="liblinear")
    assert ref.model[-1].coef_.shape == (3, 20)
    assert np.mean(ref.predict(Xte) == refit.predict(Xte)) >= 0.99


def _problem(n, d, k, seed, noise=3.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (k, d))
    y = rng.integers(0, k, 2 * n)
    X = (centers[y] + rng.normal(0, noise, (2 * n, d))).astype(np.float32)
    return X[:n], y[:n], X[n:], y[n:]


@pytest.mark.parametrize("k,C", [(4, 1e-3), (4, 1e-1), (2, 1e-2)])
def test_l2svm_matches_sklearn_linearsvc(k, C):
    """The replacement solves LinearSVC's problem: same predictions, same objective (squared hinge, penalised bias)."""
    from sklearn.svm import LinearSVC

    X, y, Xte, yte = _problem(400, 60, k, seed=k)
    ref = LinearSVC(C=C, loss="squared_hinge", penalty="l2", dual=True, tol=1e-8, max_iter=100_000).fit(X, y)
    ours = fe.LinearL2SVM(C=C, standardize=False, tol=1e-6).fit(X, y)
    assert ours.converged_ and ours.coef_.shape == ref.coef_.shape
    f_ref = fe.l2svm_objective(ref.coef_, ref.intercept_, X, y, C)
    f_ours = fe.l2svm_objective(ours.coef_, ours.intercept_, X, y, C)
    np.testing.assert_allclose(f_ours, f_ref, rtol=1e-3)
    np.testing.assert_allclose(ours.objective_, f_ours, rtol=1e-5)  # the solver reports the objective it reached
    assert np.mean(ours.predict(Xte) == ref.predict(Xte)) >= 0.99
    np.testing.assert_allclose(ours.decision_function(Xte[:5]), ref.decision_function(Xte[:5]), atol=5e-2)


def test_l2svm_standardised_matches_scaler_pipeline():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    X, y, Xte, yte = _problem(300, 40, 3, seed=7)
    X = X * np.linspace(0.1, 10, 40, dtype=np.float32) + 5  # very different feature scales
    Xte = Xte * np.linspace(0.1, 10, 40, dtype=np.float32) + 5
    ref = make_pipeline(StandardScaler(), LinearSVC(C=1e-2, dual=True, tol=1e-8, max_iter=100_000)).fit(X, y)
    ours = fe.LinearL2SVM(C=1e-2, tol=1e-6).fit(X.astype(np.float16).astype(np.float32), y)
    assert np.mean(ours.predict(Xte) == ref.predict(Xte)) >= 0.99
    Xs = ref[0].transform(X)
    f_ref = fe.l2svm_objective(ref[-1].coef_, ref[-1].intercept_, Xs, y, 1e-2)
    np.testing.assert_allclose(ours.objective_, f_ref, rtol=1e-3)


def test_l2svm_warm_start_and_threads():
    X, y, _, _ = _problem(300, 50, 3, seed=1)
    a = fe.LinearL2SVM(C=1e-2, standardize=False, threads=1).fit(X, y)
    b = fe.LinearL2SVM(C=2e-2, standardize=False).fit(X, y, init=a)
    c = fe.LinearL2SVM(C=2e-2, standardize=False).fit(X, y)
    assert b.n_iter_ <= c.n_iter_
    np.testing.assert_allclose(b.objective_, c.objective_, rtol=1e-3)


def test_warm_start_carries_over_to_new_standardisation():
    """The refit on train + validation standardises with other moments: the warm start is the same decision
    function in the new units, so it starts at the first fit's predictions and needs fewer iterations."""
    X, y, Xv, yv = _problem(400, 40, 3, seed=3)
    X, Xv = X * 4 + 2, Xv * 4 - 1  # validation features shifted: different mean and scale when pooled
    a = fe.LinearL2SVM(C=1e-2, tol=1e-6).fit(X, y)
    Xa, ya = np.concatenate([X, Xv]), np.concatenate([y, yv])
    pooled = fe.LinearL2SVM(C=1e-2, tol=1e-6)
    pooled.mean_, pooled.scale_ = svm._moments(Xa)
    coef, icpt = svm._in_units_of(a, pooled.mean_, pooled.scale_)
    pooled.coef_, pooled.intercept_, pooled.classes_ = coef, icpt, a.classes_
    np.testing.assert_allclose(pooled.decision_function(Xv), a.decision_function(Xv), rtol=1e-4, atol=1e-4)
    warm = fe.LinearL2SVM(C=1e-2, tol=1e-6).fit(Xa, ya, init=a)
    cold = fe.LinearL2SVM(C=1e-2, tol=1e-6).fit(Xa, ya)
    assert warm.n_iter_ < cold.n_iter_
    np.testing.assert_allclose(warm.objective_, cold.objective_, rtol=1e-4)


def test_nonconvergence_is_a_warning_naming_c():
    from sklearn.exceptions import ConvergenceWarning

    X, y, _, _ = _problem(200, 30, 3, seed=2)
    with pytest.warns(ConvergenceWarning, match=r"C=10 did not converge"):
        m = fe.LinearL2SVM(C=10.0, max_iter=2, standardize=False).fit(X, y)
    assert not m.converged_ and m.gap_ > m.tol
    with pytest.warns(ConvergenceWarning, match=r"C=10 did not converge"):
        fe.fit_svm(X[:150], y[:150], X[150:], y[150:], Cs=(10.0,), solver="liblinear", max_iter=1)
    with pytest.raises(ValueError, match="solver"):
        fe.fit_svm(X, y, X, y, solver="sgd")


def test_l2svm_objective_penalises_bias():
    X = np.array([[1.0], [-1.0]])
    y = np.array([0, 1])
    # one column for two classes (positive = classes[1]); w = -1, b = 0.5: margins 1.5 and 0.5
    f = fe.l2svm_objective(np.array([[-1.0]]), np.array([0.5]), X, y, C=2.0)
    np.testing.assert_allclose(f, [0.5 * (1 + 0.25) + 2.0 * 0.25])


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
                            max_epochs=10, patience=None, batch_size=20, precision="fp32", keep_model=True)
    assert r.val_error == 0.0 and r.epochs_run == 10 and len(r.curve) == 10
    assert r.curve[r.best_epoch - 1] == min(r.curve)
    assert fe.classifier_error(r.model, x[40:], y[40:], precision="fp32") == 0.0
    assert (fe.classifier_predictions(r.model, x[40:], precision="fp32") == y[40:].numpy()).all()
    s = fe.supervised_search(cfg, x[:40], y[:40], x[40:], y[40:], n_trials=2, max_epochs=3, precision="fp32")
    assert len(s.trials) == 2 and s.best.val_error == min(t.val_error for t in s.trials)
    assert s.best.model is not None and all(t.model is None for t in s.trials if t is not s.best)
    assert [row["epochs_run"] for row in s.table()] == [t.epochs_run for t in s.trials]


def test_early_stopping_stops_and_restores_best_epoch(capsys):
    cfg = ModelConfig(image_size=16, channels=1, ndf=4)
    y = torch.arange(40) % 2
    x = torch.randint(0, 256, (40, 1, 16, 16), dtype=torch.uint8)  # noise: nothing to learn
    r = fe.train_supervised(cfg, x[:20], y[:20], x[20:], y[20:], lr=0.0, dropout=0.0, weight_decay=0.0,
                            max_epochs=50, patience=3, stop_subset=10, batch_size=10, precision="fp32")
    assert r.best_epoch == 1 and r.epochs_run == 4  # lr 0: no epoch improves on the first
    assert r.cpu_seconds > 0
    fe.supervised_search(cfg, x[:20], y[:20], x[20:], y[20:], n_trials=1, max_epochs=2, precision="fp32", verbose=True)
    assert "epochs (best" in capsys.readouterr().out


def test_dropout_matches_torch_dropout_in_distribution():
    """The control's dropout keeps a 1 - p share of the units, scaled by 1 / (1 - p), as F.dropout does."""
    torch.manual_seed(0)
    x = torch.ones(400, 2048)
    for p in (0.2, 0.6):
        ours = supervised._dropout(x, p, True)
        theirs = torch.nn.functional.dropout(x, p, True)
        assert set(ours.unique().tolist()) == set(theirs.unique().tolist()) == {0.0, 1 / (1 - p)}
        assert abs(float((ours == 0).float().mean()) - p) < 0.005
        assert abs(float(ours.mean()) - 1.0) < 0.01  # expectation preserved
    assert supervised._dropout(x, 0.5, False) is x and supervised._dropout(x, 0.0, True) is x
    assert not supervised._dropout(x, 1.0, True).any()


def test_recalibrated_batchnorm_uses_the_images_statistics():
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=16, channels=1, ndf=4)
    D = Discriminator(cfg)
    before = {k: v.clone() for k, v in D.state_dict().items()}
    x = torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8)
    Dc = fe.recalibrate_batchnorm(D, x, batch_size=64)
    for k, v in D.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])
    assert not Dc.training
    bn = Dc.blocks[1][1]
    with torch.no_grad():
        h = Dc.blocks[1][0](Dc.blocks[0](x.float() / 127.5 - 1))  # block 1's conv output, one batch of 64
    torch.testing.assert_close(bn.running_mean, h.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, h.var((0, 2, 3)), rtol=1e-3, atol=1e-5)
    assert bn.momentum == D.blocks[1][1].momentum
    for k in ("0.0.weight", "1.0.weight"):  # conv weights unchanged
        assert torch.equal(Dc.blocks.state_dict()[k], D.blocks.state_dict()[k])


def test_step_timer_prints_wall_and_cpu(capsys):
    t = fe.StepTimer()
    with t("busy"):
        sum(i * i for i in range(200_000))
    out = capsys.readouterr().out
    assert out.startswith("[time] busy:") and "s CPU" in out
    assert len(t.steps) == 1 and t.wall > 0 and t.cpu > 0
    assert "total" in t.table()


def test_l2svm_few_samples_many_features_is_exact():
    """n < d is solved in the span of the training rows: the same optimum as LinearSVC."""
    from sklearn.svm import LinearSVC

    X, y, Xte, _ = _problem(80, 300, 3, seed=3)
    for C in (1e-3, 1e-1):
        ref = LinearSVC(C=C, dual=True, tol=1e-9, max_iter=200_000).fit(X, y)
        ours = fe.LinearL2SVM(C=C, standardize=False, tol=1e-7).fit(X, y)
        np.testing.assert_allclose(fe.l2svm_objective(ours.coef_, ours.intercept_, X, y, C),
                                   fe.l2svm_objective(ref.coef_, ref.intercept_, X, y, C), rtol=1e-3)
        np.testing.assert_allclose(ours.objective_, fe.l2svm_objective(ours.coef_, ours.intercept_, X, y, C), rtol=1e-4)
        assert np.mean(ours.predict(Xte) == ref.predict(Xte)) >= 0.99


def test_fit_path_equals_separate_fits():
    X, y, Xte, _ = _problem(300, 40, 4, seed=4)
    path = fe.LinearL2SVM(standardize=False, tol=1e-7).fit_path(X, y, [1e-3, 1e-1])
    for m in path:
        one = fe.LinearL2SVM(C=m.C, standardize=False, tol=1e-7).fit(X, y)
        np.testing.assert_allclose(m.objective_, one.objective_, rtol=1e-5)
        assert np.mean(m.predict(Xte) == one.predict(Xte)) >= 0.99


def test_authors_svhn_protocol_selects_c_on_mean_validation_error_and_draws_tests():
    """The authors' §5.2 analysis: C by mean validation error over draws, then many test draws, raw features."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1.0, (3, 20))

    def blobs(n):
        y = np.arange(n) % 3
        return (centers[y] + rng.normal(0, 1.2, (n, 20))).astype(np.float32), y

    X_pool, y_pool = blobs(300)
    X_val, y_val = blobs(300)
    X_te, y_te = blobs(300)
    seen = []

    def featurize(idx):
        seen.append(np.sort(idx))
        return X_pool[idx]

    r = fe.authors_svhn_protocol(featurize, y_pool, X_val, y_val, X_te, y_te, Cs=(1e-4, 1e-2, 1.0),
                                 select_draws=3, test_draws=5, per_class=10, seed=1)
    assert len(seen) == 3 * 3 + 5 and all(len(s) == 30 for s in seen)
    assert all(np.bincount(y_pool[s], minlength=3).tolist() == [10, 10, 10] for s in seen)
    assert r.C == min(r.val_by_C, key=lambda c: r.val_by_C[c][0])
    assert len(r.test_errors) == 5 and r.test == (pytest.approx(r.test_errors.mean()),
                                                  pytest.approx(1.96 * r.test_errors.std()))
    assert 0 <= r.test[0] < 40  # separable enough to learn
    # one draw with the chosen C is sklearn's LinearSVC on the raw features
    from sklearn.svm import LinearSVC

    idx = seen[-1]
    ours = fe.LinearL2SVM(C=r.C, standardize=False).fit(X_pool[idx], y_pool[idx]).predict(X_te)
    ref = LinearSVC(C=r.C, max_iter=100_000, tol=1e-6).fit(X_pool[idx], y_pool[idx]).predict(X_te)
    assert np.mean(ours == ref) >= 0.99
    again = fe.authors_svhn_protocol(lambda i: X_pool[i], y_pool, X_val, y_val, X_te, y_te, Cs=(1e-4, 1e-2, 1.0),
                                     select_draws=3, test_draws=5, per_class=10, seed=1)
    assert again.C == r.C and np.array_equal(again.test_errors, r.test_errors)  # seeded
    with pytest.raises(ValueError, match="2 test draws"):
        fe.authors_svhn_protocol(featurize, y_pool, X_val, y_val, X_te, y_te, test_draws=1)


def test_old_import_paths_name_the_split_modules_objects():
    """features.py was split by what it holds; ``fe.<name>`` is still the one object, not a copy."""
    from dcgan import book, kmeans, precision, protocol

    for mod in (svm, protocol, kmeans, supervised):
        for name in mod.__all__:
            assert getattr(fe, name) is getattr(mod, name), name
    assert fe.StepTimer is book.StepTimer and fe.bf16_available is precision.bf16_available

