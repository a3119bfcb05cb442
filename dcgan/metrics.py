"""Measured sample quality without downloads (beyond the paper; used for §4.1, §7 and §8.1).

The paper shows samples but never measures them. We measure them in the
feature space of a small classifier trained once, offline, on each data
set's train split (:func:`domain_classifier`), the common substitute for
Inception features when the data are not ImageNet-like:

* FID (Heusel et al. 2017) and KID (Bińkowski et al. 2018) with torchmetrics,
  the feature network passed as torchmetrics' custom ``feature`` module;
* precision/recall (Kynkäänniemi et al. 2019) and density/coverage
  (Naeem et al. 2020) on the same features;
* mode-collapse measures: how many of the data set's classes the
  classifier finds among the samples, and the entropy of that histogram.

Every number has a floor: the same metric between the real test and the
real train split (:func:`real_floor`), which is what a perfect generator
would score with the same sample sizes. On the ``paper`` profile the
features come from torchvision's Inception-v3 (``IMAGENET1K_V1`` weights, in
fp32, with those weights' preprocessing) when the user has the weights on
disk (``$DCGAN_INCEPTION_WEIGHTS``); without them it raises a clear error.
That network is not the TF-FID graph behind published FIDs: our FIDs differ
from TF-FID by a few percent and are compared with each other only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import ContextManager

import torch
from torch import nn
from torch.nn import functional as F

from .checkpoints import atomic_save  # atomic + fsync; one implementation for every cache file
from .config import tiny
from .paths import runs_root
from .precision import autocast, default_device
from .timing import phase, phased

__all__ = [
    "DomainClassifier",
    "ClassifierSpec",
    "classifier_spec",
    "domain_classifier",
    "FeatureExtractor",
    "feature_extractor",
    "inception_features",
    "extract_features",
    "fid",
    "kid",
    "precision_recall",
    "density_coverage",
    "class_histogram",
    "sample_images",
    "evaluate",
    "real_features",
    "real_floor",
    "fid_per_epoch",
    "snapshot_curve",
    "nearest_neighbour_error",
    "nearest_neighbour_wrong",
    "nn_error_curve",
    "INCEPTION_ENV",
]

INCEPTION_ENV = "DCGAN_INCEPTION_WEIGHTS"
PROFILES = ("smoke", "book", "paper")


# ----------------------------------------------------------------- classifier

class DomainClassifier(nn.Module):
    """A small CNN: conv-BN-ReLU-maxpool stages halving the map down to 4x4, a ``feature_dim``
    ReLU layer on the flattened map (:meth:`features`; keeps where things are, which matters for
    clothes and digits) and a linear layer to the class logits.

    Takes images in [-1, 1] of shape (N, channels, image_size, image_size).
    """

    def __init__(self, channels: int, image_size: int, n_classes: int, width: int = 16, feature_dim: int = 64):
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
        self.channels, self.image_size, self.n_classes = channels, image_size, n_classes
        self.num_features = feature_dim  # read by torchmetrics when this net is its `feature` module
        layers: list[nn.Module] = []
        cin, cout, s = channels, width, image_size
        while s > 4:
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True), nn.MaxPool2d(2)]
            cin, cout, s = cout, min(cout * 2, 4 * width), s // 2
        layers += [nn.Flatten(), nn.Linear(cin * 16, feature_dim), nn.ReLU(True)]
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(feature_dim, n_classes)

    def _check(self, x: torch.Tensor) -> None:
        want = (self.channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"domain classifier expects images (N, {want[0]}, {want[1]}, {want[2]}) in [-1, 1], "
                             f"got {tuple(x.shape)}; resize the samples or build the classifier for this size")

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        # inputs go to the network's device (a classifier on the GPU takes CPU samples too)
        self._check(x)
        return self.body(x.float().to(self.fc.weight.device)).float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, feature_dim), float32, on the device of ``x``."""
        return self._body(x).to(x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, n_classes), on the device of ``x``."""
        return self.fc(self.dropout(self._body(x))).to(x.device)


@dataclass(frozen=True)
class ClassifierSpec:
    """How the domain classifier of one data set is trained (its hash names the cache file).

    Training stops when the accuracy on a held-out share of the *training* images (``val_share``; grouped
    by base emoji where the data set has them, as its test split is) has not improved for ``patience``
    epochs, or after ``epochs``; the best epoch's weights are kept. The test split is never looked at
    while training: it stays the held-out images of every FID.
    """

    dataset: str
    image_size: int
    subset: int | None  # a seeded random N of the training images (None: the whole train split)
    epochs: int  # at most this many epochs
    batch_size: int = 128
    lr: float = 3e-3
    width: int = 16
    feature_dim: int = 64
    seed: int = 0
    patience: int = 4  # stop after this many epochs without a better validation accuracy
    val_share: float = 0.1
    version: int = 3  # bump when the training loop changes in a way the definition hash cannot see; 3: early stop

    def key(self) -> str:
        blob = json.dumps({"spec": asdict(self), "definition": classifier_definition_hash()}, sort_keys=True)
        h = hashlib.sha1(blob.encode()).hexdigest()[:10]
        return f"{self.dataset}-{self.image_size}-{h}"


@lru_cache(maxsize=1)
def classifier_definition_hash() -> str:
    """A hash of the domain classifier's code: its class and its training function, as parsed syntax.

    It is part of every cached classifier's key, so a change to the architecture or the loop trains a
    new classifier instead of loading a file made by other code; comments and formatting do not count
    (the hash is of the syntax tree, not of the text).
    """
    return syntax_hash(DomainClassifier, _train_classifier)


def syntax_hash(*objs) -> str:
    """A hash of the source of classes or functions as syntax trees: blind to comments and layout."""
    import ast
    import inspect
    import textwrap

    trees = [ast.dump(ast.parse(textwrap.dedent(inspect.getsource(o)))) for o in objs]
    return hashlib.sha256("\n".join(trees).encode()).hexdigest()[:16]


def classifier_spec(dataset: str, image_size: int, profile: str) -> ClassifierSpec:
    """The training budget per profile: seconds under smoke; under book and paper until converged (minutes)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    if profile == "smoke":
        return ClassifierSpec(dataset, image_size, subset=2560, epochs=1, batch_size=64)
    if tiny():  # the paper profile's code paths at toy scale (tests only)
        return ClassifierSpec(dataset, image_size, subset=None, epochs=1, batch_size=8)
    # book and paper: every training image, trained until its held-out accuracy stops improving (issue 22:
    # a one-epoch classifier gave a feature space in which smudges scored near the real-data floor)
    if dataset.startswith("mnist"):
        # mnist-10k's 8,500 training images: at 3e-3 validation accuracy peaks by epoch 5 and jumps about
        # (98.1 % test); a smaller step with more patience reaches 98.5 % (measured, issue 22)
        return ClassifierSpec(dataset, image_size, subset=None, epochs=40, width=32, feature_dim=128, lr=1e-3,
                              patience=8)
    return ClassifierSpec(dataset, image_size, subset=None, epochs=40, width=32, feature_dim=128)


def _train_split(dataset: str) -> str:
    return "train"


# The domain classifier trains and runs in bf16 on every machine, not "auto": bf16 autocast is ~3x faster
# for its convs on AMX CPUs and on GPUs, and a fixed precision keeps its features, hence every FID and
# class count the book records, the same on a machine without native bf16 (slower there, same numbers).
_PRECISION = "bf16"


# The policy (dcgan.precision) at that precision, on the default device. These two short names stay because
# _train_classifier calls them and its syntax is part of every cached classifier's key (classifier_definition_hash):
# new names would retrain every cached classifier for no change in what it computes.
def _autocast() -> ContextManager:
    return autocast(_PRECISION, default_device())


_device = default_device


def _accuracy(model: DomainClassifier, ds, batch_size: int = 1000) -> float:
    correct = 0
    with torch.no_grad(), _autocast():
        for i in range(0, len(ds), batch_size):
            x = ds.as_float(slice(i, i + batch_size)).to(_device(), memory_format=torch.channels_last)
            correct += (model(x).argmax(1).cpu() == ds.labels[i:i + batch_size]).sum().item()
    return correct / len(ds)


def _validation_split(ds, share: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit rows, validation rows) of ``ds``: a seeded ``share`` of it, whole base emoji at a time where the
    data set groups images by base (so validation, like the test split, holds emoji the fit never saw)."""
    n = len(ds)
    groups = (ds.attributes or {}).get("base")
    if not groups:
        perm = torch.randperm(n, generator=g)
        k = max(1, int(share * n))
        return perm[k:], perm[:k]
    names = sorted(set(groups))
    pick = torch.randperm(len(names), generator=g)[:max(1, int(share * len(names)))].tolist()
    held = {names[i] for i in pick}
    val = torch.tensor([i for i, b in enumerate(groups) if b in held])
    fit = torch.tensor([i for i, b in enumerate(groups) if b not in held])
    return fit, val


def _train_classifier(spec: ClassifierSpec, progress: bool) -> tuple[DomainClassifier, dict]:
    import copy

    from .data import load_dataset

    train = load_dataset(spec.dataset, _train_split(spec.dataset), spec.image_size)
    if train.labels is None or not train.classes:
        raise ValueError(f"data set {spec.dataset!r} has no class labels; a domain classifier needs them")
    g = torch.Generator().manual_seed(spec.seed)
    if spec.subset is not None and spec.subset < len(train):
        # a random subset: some train splits are sorted by class (mnist-10k)
        train = train.subset(torch.randperm(len(train), generator=g)[:spec.subset])
    fit_rows, val_rows = _validation_split(train, spec.val_share, g)
    fit, val = train.subset(fit_rows), train.subset(val_rows)
    torch.manual_seed(spec.seed)
    dev = _device()
    model = DomainClassifier(train.channels, spec.image_size, len(train.classes), spec.width, spec.feature_dim)
    model = model.to(dev, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    # the step size falls when validation accuracy stalls; training stops when it stalls for `patience` epochs
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.3, patience=0)
    t0 = time.time()
    best, best_epoch, best_state, curve = -1.0, 0, None, []
    for epoch in range(spec.epochs):
        model.train()
        perm = torch.randperm(len(fit), generator=g)
        for i in range(0, len(fit), spec.batch_size):
            idx = perm[i:i + spec.batch_size]
            x = fit.as_float(idx).to(dev, memory_format=torch.channels_last)
            # light augmentation (random 2-pixel shifts) so features generalise to samples
            x = torch.roll(x, shifts=tuple(torch.randint(-2, 3, (2,), generator=g).tolist()), dims=(2, 3))
            y = fit.labels[idx].to(dev)
            with _autocast():
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        acc = _accuracy(model, val)
        curve.append(round(acc, 4))
        sched.step(acc)
        if acc > best:
            best, best_epoch, best_state = acc, epoch + 1, copy.deepcopy(model.state_dict())
        if progress:
            print(f"domain classifier {spec.dataset}@{spec.image_size}: epoch {epoch + 1} loss {loss.item():.3f} "
                  f"validation accuracy {100 * acc:.1f}% ({time.time() - t0:.0f} s)")
        if epoch + 1 - best_epoch >= spec.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    test = load_dataset(spec.dataset, "test", spec.image_size)
    info = {"spec": asdict(spec), "train_images": len(fit), "validation_images": len(val),
            "validation_accuracy": best, "validation_curve": curve, "best_epoch": best_epoch,
            "epochs_trained": len(curve), "test_accuracy": _accuracy(model, test),
            "train_seconds": round(time.time() - t0, 1), "classes": list(train.classes)}
    return model, info


# The book profile's classifiers, committed (issue 22/23): every machine measures FID in the same feature space as
# the committed gate references did, and `make book` does not spend minutes training them. Used only for the key
# they were trained under (same spec, same code), after their SHA-256 is checked.
SHIPPED_CLASSIFIERS = Path(__file__).with_name("weights") / "classifiers"


def _shipped_classifier(spec: ClassifierSpec) -> Path | None:
    """The committed weights of this classifier, checked against ``SHA256SUMS`` (None: none committed)."""
    p = SHIPPED_CLASSIFIERS / f"{spec.key()}.pt"
    if not p.is_file():
        return None
    sums_file = SHIPPED_CLASSIFIERS / "SHA256SUMS"
    sums = {}
    if sums_file.is_file():
        for line in sums_file.read_text().splitlines():
            if line.strip():
                digest, name = line.split()
                sums[name] = digest
    with open(p, "rb") as f:
        got = hashlib.file_digest(f, "sha256").hexdigest()
    if sums.get(p.name) != got:
        raise ValueError(f"{p} does not match its SHA-256 in {sums_file} (got {got}, recorded "
                         f"{sums.get(p.name, 'none')}): restore it with `git checkout -- {p}`, or delete it to train "
                         "the classifier on this machine")
    return p


@lru_cache(maxsize=16)
def _cached_classifier(spec: ClassifierSpec, root: str, progress: bool) -> DomainClassifier:
    path = Path(root) / "classifiers" / f"{spec.key()}.pt"
    src = path if path.exists() else _shipped_classifier(spec)
    if src is not None:
        blob = torch.load(src, map_location="cpu", weights_only=True)
        info = json.loads(blob["info"])
        model = DomainClassifier(blob["channels"], spec.image_size, len(info["classes"]), spec.width, spec.feature_dim)
        model.load_state_dict(blob["state_dict"])
    else:
        # the phase is opened here, not by a decorator on _train_classifier: its source is part of the
        # classifier's cache key (classifier_definition_hash)
        with phase("domain classifier training"):
            model, info = _train_classifier(spec, progress)
        model = model.cpu()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save({"state_dict": model.state_dict(), "channels": model.channels, "info": json.dumps(info)}, path)
        path.with_suffix(".json").write_text(json.dumps(info, indent=1))
    model = model.to(_device(), memory_format=torch.channels_last).eval()
    model.info = info  # test accuracy, training set size and time, class names
    model.classes = info["classes"]
    model.requires_grad_(False)
    return model


def domain_classifier(dataset: str, image_size: int, profile: str = "book", progress: bool = True) -> DomainClassifier:
    """The data set's classifier, trained on its train split once and cached under ``runs/classifiers/``.

    Eval mode, no gradients; ``forward(x)`` gives logits over the data set's
    ``.classes``, ``.features(x)`` the penultimate features; ``.info`` has
    its test accuracy. Cached per (data set, size, training budget), so
    every chapter of one profile shares one network.
    """
    return _cached_classifier(classifier_spec(dataset, image_size, profile), str(runs_root()), progress)


# ---------------------------------------------------------- feature networks

class FeatureExtractor(nn.Module):
    """Maps images in [-1, 1] (N, C, S, S) to features (N, d); the torchmetrics ``feature`` module.

    ``kind`` is "domain" (a :class:`DomainClassifier`) or "inception".
    """

    def __init__(self, net: nn.Module, num_features: int, kind: str, name: str):
        super().__init__()
        self.net, self.num_features, self.kind, self.name = net, num_features, kind, name

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features (N, num_features), float32, on the CPU (where the metrics keep them); ``x`` may be anywhere."""
        dev = next(self.net.parameters()).device
        x = x.to(dev, memory_format=torch.channels_last)
        if self.kind == "domain":
            with _autocast():
                f = self.net.features(x)
        else:
            # Inception in fp32: published FIDs are computed so, and bf16 moves FID by more than its noise
            f = self.net(x)
        return f.float().cpu()


class _InceptionFeatures(nn.Module):
    """torchvision's Inception-v3 (``IMAGENET1K_V1``) pool features (2048-d) of images in [-1, 1].

    The preprocessing is the one those weights were trained with: bilinear
    resize to 299, ImageNet mean/std normalisation, then the network's own
    ``transform_input=True`` step (``inception_v3(weights=IMAGENET1K_V1)``
    sets it; building with ``weights=None`` does not, and features would be
    mis-scaled). This is *not* the TF-FID network (the TensorFlow Inception
    graph that pytorch-fid and the published FIDs use): FIDs from these
    features differ from TF-FID by a few percent, so compare them with each
    other, not with numbers in papers.
    """

    def __init__(self, weights: Path):
        super().__init__()
        from torchvision.models import inception_v3

        net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            net.load_state_dict(state)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"{weights} is not a torchvision Inception-v3 state_dict ({e}); save one with "
                             "`torch.save(torchvision.models.inception_v3(weights='IMAGENET1K_V1').state_dict(), path)`") from e
        net.fc = nn.Identity()
        self.net = net.eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x.float(), size=(299, 299), mode="bilinear", antialias=True, align_corners=False)
        x = ((x + 1) / 2 - self.mean) / self.std
        return self.net(x)


def inception_features(weights: str | Path | None = None) -> FeatureExtractor:
    """Inception-v3 features from weights on disk (argument or ``$DCGAN_INCEPTION_WEIGHTS``)."""
    path = weights or os.environ.get(INCEPTION_ENV)
    if not path or not Path(path).expanduser().is_file():
        raise FileNotFoundError(
            f"the paper profile measures FID with Inception-v3 features, but no weights were found "
            f"(looked at {path or f'${INCEPTION_ENV} (unset)'}). On a machine with internet run "
            "`python -c \"import torch, torchvision; torch.save(torchvision.models.inception_v3("
            "weights='IMAGENET1K_V1').state_dict(), 'inception_v3.pt')\"`, copy the file here and "
            f"set {INCEPTION_ENV}=/path/to/inception_v3.pt (or pass features='domain' to use the "
            "offline domain classifier instead)")
    net = _InceptionFeatures(Path(path).expanduser()).to(_device(), memory_format=torch.channels_last)
    net.requires_grad_(False)
    return FeatureExtractor(net, 2048, "inception", "inception-v3")


def feature_extractor(dataset: str, image_size: int, profile: str = "book", features: str | None = None,
                      inception_weights: str | Path | None = None) -> FeatureExtractor:
    # one object per setting, so that the in-memory cache of real features finds it again
    key = (dataset, image_size, profile, features, str(inception_weights), os.environ.get(INCEPTION_ENV),
           str(runs_root()))
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = _feature_extractor(dataset, image_size, profile, features, inception_weights)
    return _EXTRACTORS[key]


_EXTRACTORS: dict[tuple, FeatureExtractor] = {}


def _feature_extractor(dataset: str, image_size: int, profile: str, features: str | None,
                       inception_weights: str | Path | None) -> FeatureExtractor:
    """The feature network behind every metric: the domain classifier, or Inception on ``paper``.

    ``features`` forces "domain" or "inception"; by default the ``paper``
    profile uses Inception (weights required) and the others the domain
    classifier.
    """
    features = features or ("inception" if profile == "paper" else "domain")
    if features == "inception":
        return inception_features(inception_weights)
    if features != "domain":
        raise ValueError(f"features must be 'domain' or 'inception', got {features!r}")
    clf = domain_classifier(dataset, image_size, profile)
    return FeatureExtractor(clf, clf.num_features, "domain", f"{dataset}@{image_size} classifier")


@phased("feature extraction")
def extract_features(fx: nn.Module, images, batch_size: int = 500) -> torch.Tensor:
    """Features (N, d) of a float image tensor in [-1, 1] or of an ``ImageTensorDataset``."""
    n = len(images)
    out = []
    for i in range(0, n, batch_size):
        x = images.as_float(slice(i, i + batch_size)) if hasattr(images, "as_float") else images[i:i + batch_size]
        out.append(fx(x).float())
    return torch.cat(out)


# -------------------------------------------------------------------- metrics

class _Identity(nn.Module):
    """Passes pre-computed features through torchmetrics (which then only does the statistics)."""

    def __init__(self, d: int):
        super().__init__()
        self.num_features = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _check_pair(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected two feature matrices (N, d) with the same d, got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}; pass images together with `extractor=`")
    if len(real) < 2 or len(fake) < 2:
        raise ValueError("FID/KID need at least 2 samples on each side")


@phased("sample-quality statistics")  # FID, KID, precision/recall on features
def fid(real: torch.Tensor, fake: torch.Tensor, extractor: nn.Module | None = None) -> float:
    """Fréchet distance between two feature sets (or image sets, with ``extractor``), torchmetrics' FID."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if extractor is not None:
        m = FrechetInceptionDistance(feature=extractor, reset_real_features=False)
        for src, is_real in ((real, True), (fake, False)):
            for i in range(0, len(src), 500):
                m.update(src[i:i + 500], real=is_real)
        return float(m.compute())
    _check_pair(real, fake)
    m = FrechetInceptionDistance(feature=_Identity(real.shape[1]))
    m.update(real.double(), real=True)
    m.update(fake.double(), real=False)
    return max(float(m.compute()), 0.0)  # tiny negative values are round-off of sqrtm


@phased("sample-quality statistics")
def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 50, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over subsets) of two feature sets, torchmetrics' KID.

    ``subset_size`` is capped at the smaller set; subsets are drawn with a
    fixed seed so that the number is reproducible. Both sets are divided by
    the real set's RMS feature value (the kernel assumes unit-scale features).
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    _check_pair(real, fake)
    size = min(subset_size, len(real), len(fake))
    # The cubic kernel (x.y/d + 1)^3 explodes for features far from unit scale (ours are ReLU
    # activations of any size): divide both sets by the real set's RMS feature value first.
    scale = real.double().pow(2).mean().sqrt().clamp_min(1e-12)
    with warnings.catch_warnings():  # "will save all extracted features": intended, they are small
        warnings.simplefilter("ignore", UserWarning)
        m = KernelInceptionDistance(feature=_Identity(real.shape[1]), subsets=subsets, subset_size=size)
    m.update(real.double() / scale, real=True)
    m.update(fake.double() / scale, real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mean, std = m.compute()
    return float(mean), float(std)


def _kth_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    if len(x) <= k:
        raise ValueError(f"k-nearest-neighbour metrics with k={k} need more than {k} images on each side, got {len(x)}")
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


@phased("sample-quality statistics")
def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls in feature space.

    Precision: share of fakes inside some real sample's k-NN ball;
    recall: share of reals inside some fake sample's k-NN ball.
    """
    _check_pair(real, fake)
    real, fake = real.double(), fake.double()
    r_real, r_fake = _kth_radius(real, k), _kth_radius(fake, k)
    d = torch.cdist(fake, real)  # (n_fake, n_real)
    precision = (d <= r_real[None, :]).any(1).double().mean()
    recall = (d.t() <= r_fake[None, :]).any(1).double().mean()
    return float(precision), float(recall)


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020): robust to outliers, unlike precision/recall.

    Density: mean number of real k-NN balls containing a fake, divided by k
    (about 1 for matching distributions); coverage: share of reals whose
    k-NN ball contains at least one fake.
    """
    _check_pair(real, fake)
    real, fake = real.double(), fake.double()
    r_real = _kth_radius(real, k)
    inside = torch.cdist(fake, real) <= r_real[None, :]
    density = inside.double().sum() / (k * len(fake))
    coverage = inside.any(0).double().mean()
    return float(density), float(coverage)


def class_histogram(logits: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """Share of samples the classifier assigns to each class."""
    n_classes = n_classes or logits.shape[1]
    return torch.bincount(logits.argmax(1), minlength=n_classes).double() / len(logits)


# ------------------------------------------------------------------ sampling

@torch.no_grad()
@phased("sample generation")
def sample_images(G: nn.Module, n: int, seed: int = 0, batch_size: int = 500,
                  labels: torch.Tensor | None = None, bn: str = "running") -> torch.Tensor:
    """n images from generator ``G`` (fixed seed), in [-1, 1] on the CPU.

    A label-conditional G (``cfg.n_classes > 0``) gets ``labels`` or, by
    default, the classes in turn (balanced).

    ``bn``: how BatchNorm normalises at sampling time. "running" (the
    book's choice, PyTorch's eval mode): the running statistics gathered in
    training, so each image depends on its own z alone. "batch": each batch
    of ``batch_size`` samples with its own statistics, as the authors'
    Theano code and pytorch/examples sample (``G`` itself is not changed).
    """
    from .models import sample_noise

    if bn not in ("running", "batch"):
        raise ValueError(f"bn must be 'running' or 'batch', got {bn!r}")
    cfg = G.cfg
    gen = torch.Generator().manual_seed(seed)
    z = sample_noise(cfg, n, gen)
    if cfg.n_classes:
        labels = torch.arange(n) % cfg.n_classes if labels is None else torch.as_tensor(labels)
        if len(labels) != n:
            raise ValueError(f"got {len(labels)} labels for {n} samples")
    elif labels is not None:
        raise ValueError("labels were given for an unconditional generator")
    was_training = G.training
    if bn == "batch":
        import copy

        # a copy in train mode: batch statistics, while G's own running statistics stay as they are
        G = copy.deepcopy(G).train()
    else:
        G.eval()
    dev = next(G.parameters()).device
    out = []
    for i in range(0, n, batch_size):
        y = None if labels is None else labels[i:i + batch_size].to(dev)
        out.append(G(z[i:i + batch_size].to(dev), y).float().cpu())
    if bn == "running":
        G.train(was_training)
    return torch.cat(out).clamp_(-1, 1)


# --------------------------------------------------------------- evaluation

@lru_cache(maxsize=32)
def _real_features(fx: FeatureExtractor, dataset: str, image_size: int, split: str, n: int | None) -> torch.Tensor:
    from .data import load_dataset

    ds = load_dataset(dataset, split, image_size)
    if n is not None and n < len(ds):
        ds = ds.subset(torch.randperm(len(ds), generator=torch.Generator().manual_seed(1))[:n])
    return extract_features(fx, ds)


def real_features(fx: FeatureExtractor, dataset: str, image_size: int, split: str = "test",
                  n: int | None = None) -> torch.Tensor:
    """Features of ``n`` (a fixed random subset; all when None) real images of ``split``, cached in memory."""
    return _real_features(fx, dataset, image_size, split, n)


def _metrics(real_f: torch.Tensor, fake_f: torch.Tensor, kid_subset: int) -> dict:
    kid_mean, kid_std = kid(real_f, fake_f, subset_size=kid_subset)
    p, r = precision_recall(real_f, fake_f)
    d, c = density_coverage(real_f, fake_f)
    return {"fid": fid(real_f, fake_f), "kid": kid_mean, "kid_std": kid_std,
            "precision": p, "recall": r, "density": d, "coverage": c}


def _class_stats(logits: torch.Tensor, min_share: float) -> dict:
    h = class_histogram(logits)
    nz = h[h > 0]
    return {"classes_found": int((h >= min_share).sum()),
            "class_entropy": float(-(nz * nz.log()).sum() / math.log(len(h)))}  # 1 = uniform over classes


def evaluate(images: torch.Tensor, dataset: str, image_size: int, profile: str = "book", n_real: int | None = 2000,
             features: str | None = None, min_share: float = 0.02, kid_subset: int = 500) -> dict:
    """Every sample-quality metric of ``images`` (float, [-1, 1]) against the real test split.

    Returns fid, kid, kid_std, precision, recall, density, coverage and,
    with the domain classifier, classes_found (classes receiving at least
    ``min_share`` of the samples) and class_entropy (1 = all classes equally
    often). Compare with :func:`real_floor` at the same sample sizes.
    """
    fx = feature_extractor(dataset, image_size, profile, features)
    real_f = real_features(fx, dataset, image_size, "test", n_real)
    fake_f = extract_features(fx, images)
    out = _metrics(real_f, fake_f, kid_subset)
    clf = fx.net if fx.kind == "domain" else None
    if clf is None and _labelled(dataset, image_size):
        # Inception features (paper): the class counts still come from the data set's own classifier
        clf = domain_classifier(dataset, image_size, profile, progress=False)
    if clf is not None:
        with torch.no_grad(), _autocast():
            logits = torch.cat([clf(images[i:i + 500].to(_device(), memory_format=torch.channels_last)).float().cpu()
                                for i in range(0, len(images), 500)])
        out.update(_class_stats(logits, min_share))
    out.update(n_fake=len(images), n_real=len(real_f), features=fx.name)
    return out


@lru_cache(maxsize=32)
def _labelled(dataset: str, image_size: int) -> bool:
    """True when the data set has classes to count (CIFAR-10, SVHN, MNIST, ...; not LSUN or CelebA)."""
    from .data import load_dataset

    return len(load_dataset(dataset, "test", image_size).classes) > 1


def real_floor(dataset: str, image_size: int, profile: str = "book", n_fake: int = 2000, n_real: int | None = 2000,
               features: str | None = None, min_share: float = 0.02, kid_subset: int = 500) -> dict:
    """The same metrics with ``n_fake`` real *train* images in place of samples: the best a generator can score."""
    from .data import load_dataset

    train = load_dataset(dataset, "train", image_size)
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(2))[:n_fake]
    return evaluate(train.as_float(idx), dataset, image_size, profile, n_real, features, min_share, kid_subset)


def snapshot_curve(run, fx: FeatureExtractor, real_f: torch.Tensor, n: int, *, seed: int = 0,
                   epochs=None, kid_subset: int | None = None, pr_epochs=()) -> list[dict]:
    """Sample quality of a run's generator at each snapshot epoch (all by default), the one loop behind every curve.

    Every epoch is sampled with the same noise (``seed``), so the curve shows the model changing, not the
    sample. Each row has ``epoch``, ``step`` and ``fid``; ``kid`` with ``kid_subset`` (its subset size);
    ``precision`` and ``recall`` at the epochs in ``pr_epochs``. A snapshot whose samples are not finite
    (a diverged G) gets NaN instead of an error. Used by :mod:`dcgan.gate` (the quality gate's
    convergence test), :mod:`dcgan.stability` (chapter 08's curves) and :func:`fid_per_epoch`.
    """
    steps_per_epoch = getattr(run, "info", {}).get("steps_per_epoch", 0)
    out = []
    for epoch in run.snapshot_epochs() if epochs is None else epochs:
        x = sample_images(run.generator(epoch=epoch), n, seed)
        row = {"epoch": epoch, "step": epoch * steps_per_epoch}
        if not bool(torch.isfinite(x).all()):
            row["fid"] = math.nan
            if kid_subset:
                row["kid"] = math.nan
        else:
            f = extract_features(fx, x)
            row["fid"] = fid(real_f, f)
            if kid_subset:
                row["kid"] = kid(real_f, f, subset_size=kid_subset)[0]
            if epoch in pr_epochs:
                row["precision"], row["recall"] = precision_recall(real_f, f)
        out.append(row)
    return out


def fid_per_epoch(run, n: int = 1000, profile: str = "book", n_real: int | None = 2000, seed: int = 0,
                  features: str | None = None) -> list[dict]:
    """FID (and KID) of every per-epoch generator snapshot of a ``dcgan.train.Run`` (:func:`snapshot_curve`).

    Returns ``[{"epoch": k, "step": ..., "fid": ..., "kid": ...}, ...]`` for every epoch
    with a snapshot; samples use the same noise at every epoch.
    """
    cfg = run.config
    fx = feature_extractor(cfg.dataset, cfg.image_size, profile, features)
    real_f = real_features(fx, cfg.dataset, cfg.image_size, "test", n_real)
    epochs = run.snapshot_epochs() if hasattr(run, "snapshot_epochs") else range(1, int(run.epochs_done) + 1)
    return snapshot_curve(run, fx, real_f, n, seed=seed, epochs=epochs, kid_subset=1000)


# ------------------------------------------------- §8.1: nearest neighbours

def nearest_neighbour_wrong(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                            test_y: torch.Tensor) -> torch.Tensor:
    """Per test image, whether a 1-nearest-neighbour classifier in pixel space (scikit-learn) gets it wrong (bool):
    the paired unit of every comparison of §8.1's errors."""
    from sklearn.neighbors import KNeighborsClassifier

    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError("images and labels differ in length")
    knn = KNeighborsClassifier(n_neighbors=1, algorithm="brute")
    knn.fit(train_x.reshape(len(train_x), -1).float().cpu().numpy(), train_y.cpu().numpy())
    pred = knn.predict(test_x.reshape(len(test_x), -1).float().cpu().numpy())
    return torch.from_numpy(pred) != test_y.cpu()


def nearest_neighbour_error(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                            test_y: torch.Tensor) -> float:
    """Test error (share) of a 1-nearest-neighbour classifier in pixel space (scikit-learn), as in §8.1."""
    return float(nearest_neighbour_wrong(train_x, train_y, test_x, test_y).double().mean())


@phased("1-NN classifier")
def nn_error_curve(G, real_train, real_test, sizes: list[int], seed: int = 0) -> list[dict]:
    """1-NN test error against the number of training images, for real images and for G's labelled samples.

    ``G`` must be label-conditional; its samples carry the labels they were
    generated with (balanced over classes). Real training sets of each size
    are fixed random subsets; sizes above the real set's size have no real point.
    Each row also keeps, per test image, whether it was misclassified
    (``generated_wrong``, ``real_wrong``), for paired intervals.
    """
    if not G.cfg.n_classes:
        raise ValueError("nn_error_curve needs a label-conditional generator (ModelConfig.n_classes > 0)")
    test_x, test_y = real_test.as_float(), real_test.labels
    labels = torch.randperm(max(sizes), generator=torch.Generator().manual_seed(seed)) % G.cfg.n_classes
    fake = sample_images(G, max(sizes), seed, labels=labels)
    perm = torch.randperm(len(real_train), generator=torch.Generator().manual_seed(seed))
    out = []
    for n in sorted(sizes):
        wrong = nearest_neighbour_wrong(fake[:n], labels[:n], test_x, test_y)
        row = {"n": n, "generated": float(wrong.double().mean()), "generated_wrong": wrong}
        if n <= len(real_train):
            idx = perm[:n]
            wrong = nearest_neighbour_wrong(real_train.as_float(idx), real_train.labels[idx], test_x, test_y)
            row["real"], row["real_wrong"] = float(wrong.double().mean()), wrong
        out.append(row)
    return out
