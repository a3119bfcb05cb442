"""Tests for dcgan.metrics: FID/KID/PR/DC on synthetic features, the cached domain classifier, sampling."""

import sys

import pytest
import torch

from dcgan import metrics
from dcgan.models import Generator, ModelConfig


@pytest.fixture
def feats():
    g = torch.Generator().manual_seed(0)
    return torch.randn(600, 8, generator=g), torch.randn(600, 8, generator=g)


def test_fid_identical_is_zero_and_shift_adds_squared_norm(feats):
    a, _ = feats
    assert metrics.fid(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = torch.zeros(8)
    shift[0] = 3.0
    # a pure mean shift leaves the covariances equal, so FID = |shift|^2 exactly
    assert metrics.fid(a, a + shift) == pytest.approx(9.0, rel=1e-4)


def test_fid_grows_with_scale(feats):
    a, b = feats
    same = metrics.fid(a, b)
    assert 0 <= same < 0.5
    assert metrics.fid(a, 2 * b) > same + 1.0


def test_kid_identical_near_zero_and_shift_positive(feats):
    a, b = feats
    k0, _ = metrics.kid(a, b, subsets=10, subset_size=300)
    k1, s1 = metrics.kid(a, b + 1.0, subsets=10, subset_size=300)
    assert abs(k0) < 0.02
    assert k1 > 0.1
    assert metrics.kid(a, b + 1.0, subsets=10, subset_size=300) == (k1, s1)  # seeded subsets


def test_fid_rejects_mismatched_features():
    with pytest.raises(ValueError, match="same d"):
        metrics.fid(torch.zeros(10, 3), torch.zeros(10, 4))


def test_precision_recall_density_coverage(feats):
    a, b = feats
    p, r = metrics.precision_recall(a, b)
    d, c = metrics.density_coverage(a, b)
    assert p > 0.8 and r > 0.8 and 0.7 < d < 1.3 and c > 0.8
    # fakes collapsed to one real point: precise but no recall/coverage
    collapsed = a[:1].repeat(50, 1) + 1e-4 * torch.randn(50, 8)
    p, r = metrics.precision_recall(a, collapsed)
    d, c = metrics.density_coverage(a, collapsed)
    assert p == 1.0 and r < 0.05 and c < 0.05
    # fakes far away: neither
    p, r = metrics.precision_recall(a, b + 100)
    d, c = metrics.density_coverage(a, b + 100)
    assert p == r == d == c == 0.0


def test_class_histogram():
    logits = torch.eye(4)[torch.tensor([0, 0, 1, 3])]
    assert metrics.class_histogram(logits).tolist() == [0.5, 0.25, 0.0, 0.25]
    stats = metrics._class_stats(logits, min_share=0.2)
    assert stats["classes_found"] == 3
    assert 0 < stats["class_entropy"] < 1


def test_sample_images_conditional_labels():
    cfg = ModelConfig(image_size=16, channels=1, nz=8, ngf=4, ndf=4, n_classes=10)
    G = Generator(cfg)
    x = metrics.sample_images(G, 23, seed=1)
    assert x.shape == (23, 1, 16, 16) and x.abs().max() <= 1
    assert torch.equal(x, metrics.sample_images(G, 23, seed=1))
    # the label changes the sample for the same z
    y0 = metrics.sample_images(G, 4, seed=1, labels=torch.zeros(4, dtype=torch.long))
    y1 = metrics.sample_images(G, 4, seed=1, labels=torch.ones(4, dtype=torch.long))
    assert not torch.allclose(y0, y1)
    with pytest.raises(ValueError, match="labels"):
        metrics.sample_images(G, 4, labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="unconditional"):
        metrics.sample_images(Generator(ModelConfig(image_size=16, channels=1, nz=8, ngf=4, ndf=4)), 4,
                              labels=torch.zeros(4, dtype=torch.long))


def test_domain_classifier_shapes_and_bad_input():
    clf = metrics.DomainClassifier(3, 32, 7).eval()
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    assert clf(x).shape == (5, 7)
    assert clf.features(x).shape == (5, clf.num_features)
    with pytest.raises(ValueError, match="expects images"):
        clf(torch.zeros(5, 1, 32, 32))


def test_domain_classifier_trains_caches_and_reloads(tiny_mnist):
    spec = metrics.ClassifierSpec("mnist-10k", 16, subset=None, epochs=8, batch_size=32)
    clf = metrics._cached_classifier(spec, str(tiny_mnist / "runs"), False)
    assert not clf.training and clf.classes == [str(i) for i in range(10)]
    assert clf.info["test_accuracy"] > 0.5  # the block's place separates the classes
    files = list((tiny_mnist / "runs" / "classifiers").glob("*.pt"))
    assert len(files) == 1 and spec.key() in files[0].name
    metrics._cached_classifier.cache_clear()
    again = metrics._cached_classifier(spec, str(tiny_mnist / "runs"), False)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    assert torch.allclose(clf(x), again(x))


def test_domain_classifier_stops_when_validation_accuracy_stops_improving(tiny_mnist, monkeypatch):
    """Training ends `patience` epochs after the best validation accuracy, keeps that epoch's weights, and
    never looks at the test split while training (issue 22: a one-epoch classifier was a weak yardstick)."""
    from dcgan import data as D

    seen = []
    real_load = D.load_dataset
    monkeypatch.setattr(D, "load_dataset", lambda name, split, *a, **k: seen.append(split) or real_load(name, split, *a, **k))
    spec = metrics.ClassifierSpec("mnist-10k", 16, subset=None, epochs=30, batch_size=32, patience=2)
    model, info = metrics._train_classifier(spec, False)
    curve = info["validation_curve"]
    assert info["epochs_trained"] == len(curve) and info["validation_accuracy"] == pytest.approx(max(curve), abs=1e-4)
    assert info["best_epoch"] == curve.index(max(curve)) + 1  # the first epoch reaching the best
    assert len(curve) == 30 or len(curve) - info["best_epoch"] == spec.patience  # stopped by the rule
    assert seen == ["train", "test"]  # the test split is read once, after training, for the report
    n = len(real_load("mnist-10k", "train", 16))
    assert info["validation_images"] + info["train_images"] == n and info["validation_images"] == int(0.1 * n)
    # the kept weights are the best epoch's: their validation accuracy is the recorded best
    g = torch.Generator().manual_seed(spec.seed)
    full = real_load("mnist-10k", "train", 16)
    _, val_rows = metrics._validation_split(full, spec.val_share, g)
    assert metrics._accuracy(model, full.subset(val_rows)) == pytest.approx(info["validation_accuracy"])


def test_validation_split_keeps_each_base_emoji_on_one_side():
    from dcgan.data import ImageTensorDataset

    bases = [f"b{i // 3}" for i in range(60)]  # 20 base emoji, 3 variants each
    ds = ImageTensorDataset("x", torch.zeros(60, 1, 8, 8, dtype=torch.uint8), torch.zeros(60, dtype=torch.long),
                            ["a"], {"base": bases})
    fit, val = metrics._validation_split(ds, 0.1, torch.Generator().manual_seed(0))
    assert len(val) == 6 and len(fit) == 54
    assert not {bases[i] for i in val.tolist()} & {bases[i] for i in fit.tolist()}


def test_a_committed_classifier_is_used_for_its_key_and_refused_when_corrupt(tiny_mnist, monkeypatch):
    import hashlib
    import shutil

    spec = metrics.ClassifierSpec("mnist-10k", 16, subset=None, epochs=2, batch_size=32)
    clf = metrics._cached_classifier(spec, str(tiny_mnist / "runs"), False)
    shipped = tiny_mnist / "shipped"
    shipped.mkdir()
    made = tiny_mnist / "runs" / "classifiers" / f"{spec.key()}.pt"
    shutil.copy(made, shipped / made.name)
    (shipped / "SHA256SUMS").write_text(f"{hashlib.sha256(made.read_bytes()).hexdigest()}  {made.name}\n")
    made.unlink()
    monkeypatch.setattr(metrics, "SHIPPED_CLASSIFIERS", shipped)
    monkeypatch.setattr(metrics, "_train_classifier", lambda *a: pytest.fail("trained instead of loading"))
    metrics._cached_classifier.cache_clear()
    again = metrics._cached_classifier(spec, str(tiny_mnist / "runs"), False)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    assert torch.allclose(clf(x), again(x)) and again.info == clf.info
    other = metrics.ClassifierSpec("mnist-10k", 16, subset=None, epochs=3, batch_size=32)
    assert metrics._shipped_classifier(other) is None  # another key: not this file
    with open(shipped / made.name, "ab") as f:
        f.write(b"x")
    metrics._cached_classifier.cache_clear()
    with pytest.raises(ValueError, match="SHA-256.*git checkout"):
        metrics._cached_classifier(spec, str(tiny_mnist / "runs"), False)


def test_classifier_key_hashes_the_definition(tmp_path, monkeypatch):
    """A changed architecture or loop gives a new cache key; a changed comment or layout does not."""
    import importlib.util

    def load(name, body):
        f = tmp_path / f"{name}.py"
        f.write_text(body)
        spec = importlib.util.spec_from_file_location(name, f)
        mod = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, mod)  # inspect finds a class's source through its module
        spec.loader.exec_module(mod)
        return mod.Net

    a = load("a", "class Net:\n    def f(self):\n        return 1  # one\n")
    b = load("b", "class Net:\n\n    def f(self):  # another comment\n        return (1)\n")
    c = load("c", "class Net:\n    def f(self):\n        return 2\n")
    assert metrics.syntax_hash(a) == metrics.syntax_hash(b) != metrics.syntax_hash(c)
    spec = metrics.ClassifierSpec("mnist-10k", 16, subset=None, epochs=1)
    before = spec.key()
    monkeypatch.setattr(metrics, "classifier_definition_hash", lambda: "another definition")
    assert spec.key() != before and spec.key().startswith("mnist-10k-16-")


def test_evaluate_and_floor(tiny_mnist, monkeypatch):
    monkeypatch.setattr(metrics, "classifier_spec",
                        lambda ds, s, p: metrics.ClassifierSpec(ds, s, subset=None, epochs=2, batch_size=64))
    floor = metrics.real_floor("mnist-10k", 16, "smoke", n_fake=100, n_real=None, kid_subset=20)
    noise = metrics.evaluate(torch.rand(100, 1, 16, 16) * 2 - 1, "mnist-10k", 16, "smoke", n_real=None,
                             kid_subset=20)
    for k in ("fid", "kid", "precision", "recall", "density", "coverage", "classes_found", "class_entropy"):
        assert k in floor and k in noise
    assert noise["fid"] > floor["fid"]
    assert noise["n_real"] == 30  # the test split of 20 images per digit is 3 per digit


def test_fid_with_extractor_module_matches_features():
    torch.manual_seed(0)
    clf = metrics.DomainClassifier(1, 16, 3).eval()
    fx = metrics.FeatureExtractor(clf, clf.num_features, "domain", "test")
    a, b = torch.rand(40, 1, 16, 16) * 2 - 1, torch.rand(40, 1, 16, 16) - 1
    direct = metrics.fid(a, b, extractor=fx)
    via = metrics.fid(metrics.extract_features(fx, a), metrics.extract_features(fx, b))
    assert direct == pytest.approx(via, rel=1e-3, abs=1e-4)


def test_paper_profile_without_inception_weights_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv(metrics.INCEPTION_ENV, raising=False)
    metrics._EXTRACTORS.clear()
    with pytest.raises(FileNotFoundError, match=metrics.INCEPTION_ENV):
        metrics.feature_extractor("fashion-mnist", 32, "paper")
    monkeypatch.setenv(metrics.INCEPTION_ENV, str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        metrics.feature_extractor("fashion-mnist", 32, "paper")
    with pytest.raises(ValueError, match="features must be"):
        metrics.feature_extractor("fashion-mnist", 32, "book", features="vgg")


def test_fid_per_epoch_uses_every_snapshot(tiny_mnist, monkeypatch):
    monkeypatch.setattr(metrics, "classifier_spec",
                        lambda ds, s, p: metrics.ClassifierSpec(ds, s, subset=None, epochs=1, batch_size=64))
    cfg = ModelConfig(image_size=16, channels=1, nz=8, ngf=4, ndf=4)

    class FakeRun:  # the part of dcgan.train.Run that fid_per_epoch reads
        config = type("C", (), {"dataset": "mnist-10k", "image_size": 16})()

        def snapshot_epochs(self):
            return [1, 3]

        def generator(self, epoch=None):
            torch.manual_seed(epoch)
            return Generator(cfg)

    curve = metrics.fid_per_epoch(FakeRun(), n=40, profile="smoke", n_real=None)
    assert [c["epoch"] for c in curve] == [1, 3]
    assert all(c["fid"] > 0 for c in curve) and curve[0]["fid"] != curve[1]["fid"]


@pytest.mark.slow
def test_paper_profile_uses_inception_weights_from_disk(monkeypatch, tmp_path):
    """A torchvision Inception-v3 state_dict (random weights here) gives 2048-d features of [-1, 1] images."""
    from torchvision.models import inception_v3

    path = tmp_path / "inception_v3.pt"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    monkeypatch.setenv(metrics.INCEPTION_ENV, str(path))
    metrics._EXTRACTORS.clear()
    fx = metrics.feature_extractor("fashion-mnist", 32, "paper")
    assert fx.kind == "inception" and fx.num_features == 2048
    f = fx(torch.rand(2, 1, 32, 32) * 2 - 1)  # grey images are repeated to 3 channels
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.zeros(1)}, bad)
    monkeypatch.setenv(metrics.INCEPTION_ENV, str(bad))
    metrics._EXTRACTORS.clear()
    with pytest.raises(ValueError, match="not a torchvision Inception-v3 state_dict"):
        metrics.feature_extractor("fashion-mnist", 32, "paper")


def test_inception_features_match_torchvision_weights_own_pipeline(tmp_path):
    """Our Inception features of an image equal torchvision's: the weights' own transform (resize 342, crop 299,
    ImageNet normalisation) into ``inception_v3(weights=IMAGENET1K_V1)``'s layout (``transform_input=True``), fp32."""
    from torchvision.models import Inception_V3_Weights, inception_v3
    from torchvision.transforms.functional import center_crop

    torch.manual_seed(0)
    ref = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True).eval()
    path = tmp_path / "inception_v3.pt"
    torch.save(ref.state_dict(), path)
    ref.fc = torch.nn.Identity()
    img = torch.rand(2, 3, 342, 342)  # [0, 1], already at the transform's resize size
    with torch.no_grad():
        want = ref(Inception_V3_Weights.IMAGENET1K_V1.transforms()(img))
    got = metrics.inception_features(path)(center_crop(img, [299, 299]) * 2 - 1)  # our input range: [-1, 1]
    assert got.dtype == torch.float32 and got.shape == (2, 2048)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # every input of the next test lives here


def test_metrics_take_inputs_on_any_device(tmp_path):
    """Classifier, feature extractor and sampler on DEVICE, inputs on DEVICE or the CPU: results where documented."""
    clf = metrics.DomainClassifier(1, 16, 10).eval().to(DEVICE)
    for x in (torch.rand(3, 1, 16, 16, device=DEVICE) * 2 - 1, torch.rand(3, 1, 16, 16) * 2 - 1):
        with torch.no_grad():
            assert clf(x).device == x.device and clf.features(x).device == x.device  # the caller's device
    fx = metrics.FeatureExtractor(clf, clf.num_features, "domain", "test").to(DEVICE)
    feats = fx(torch.rand(5, 1, 16, 16, device=DEVICE) * 2 - 1)
    assert feats.device.type == "cpu" and feats.shape == (5, clf.num_features)  # metrics keep features on the CPU
    G = Generator(ModelConfig(image_size=16, channels=1, nz=8, ngf=8, ndf=8)).to(DEVICE)
    imgs = metrics.sample_images(G, 4, seed=0)
    assert imgs.device.type == "cpu" and imgs.shape == (4, 1, 16, 16)
    assert metrics.fid(fx(imgs), feats) >= 0


def test_nearest_neighbour_wrong_is_per_test_image():
    """Two classes at -1 and +1: a test image takes its nearest training image's label; wrong where they differ."""
    train_x = torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1)
    train_y = torch.tensor([0, 1])
    test_x = torch.tensor([-0.9, 0.8, 0.7, -0.2]).view(4, 1, 1, 1)
    test_y = torch.tensor([0, 1, 0, 1])
    wrong = metrics.nearest_neighbour_wrong(train_x, train_y, test_x, test_y)
    assert wrong.tolist() == [False, False, True, True]
    assert metrics.nearest_neighbour_error(train_x, train_y, test_x, test_y) == 0.5


def test_nn_error_curve_keeps_per_image_errors():
    G = Generator(ModelConfig(image_size=16, channels=1, nz=8, ngf=8, ndf=8, n_classes=10))
    g = torch.Generator().manual_seed(0)

    class _Set:  # what nn_error_curve reads of a data set
        def __init__(self, n):
            self.x, self.labels = torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, torch.arange(n) % 10

        def __len__(self):
            return len(self.x)

        def as_float(self, idx=slice(None)):
            return self.x[idx]

    curve = metrics.nn_error_curve(G, _Set(50), _Set(30), [20, 40, 80])
    assert [r["n"] for r in curve] == [20, 40, 80] and "real" not in curve[-1]  # 80 > 50 real images
    for r in curve:
        assert r["generated_wrong"].shape == (30,) and r["generated"] == r["generated_wrong"].double().mean().item()
    assert curve[0]["real"] == curve[0]["real_wrong"].double().mean().item()


def test_sample_images_batch_statistics_leave_g_unchanged():
    """bn='batch' normalises each batch with its own statistics (the authors' sampling) without touching G."""
    torch.manual_seed(0)
    G = Generator(ModelConfig(image_size=16, channels=1, nz=8, ngf=8, ndf=8))
    with torch.no_grad():  # running statistics far from any batch's: the two modes must differ
        for m in G.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(5.0)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    run, batch = metrics.sample_images(G, 64, bn="running"), metrics.sample_images(G, 64, bn="batch")
    assert run.shape == batch.shape == (64, 1, 16, 16) and not torch.allclose(run, batch)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items()) and G.training
    assert torch.equal(batch, metrics.sample_images(G, 64, bn="batch"))  # same seed, same batches: same images
    with pytest.raises(ValueError, match="bn must be"):
        metrics.sample_images(G, 4, bn="eval")
