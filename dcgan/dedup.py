"""Semantic-hash de-duplication (paper §4.1.1), and the measurements the paper could not make.

The paper removed near duplicates from LSUN bedrooms with a 3072-128-3072
de-noising, dropout-regularised ReLU autoencoder fitted on 32x32 down-sampled
centre crops: thresholding the 128 ReLU code units gives a 128-bit semantic
hash, and duplicates are the images whose hashes collide (linear time).

This module builds that hash and the tools to measure it:

- :func:`prepare` turns uint8 images into the autoencoder's 3072-d input
  (square centre crop, down-sample to 32x32, grayscale replicated to three
  channels so that every data set keeps the paper's 3072 inputs);
- :func:`fit_hasher` trains :class:`Autoencoder` on the set to de-duplicate;
  :meth:`SemanticHasher.hash` returns codes packed to two ``uint64`` words;
- :func:`group` / :func:`duplicate_pairs` bucket codes by exact collision
  (``np.unique`` on the packed codes) or within a small Hamming radius by
  multi-index hashing (pigeonhole over ``radius + 1`` byte chunks);
- :func:`plant_near_duplicates` adds copies with known ground truth (shifts,
  crops, noise, JPEG re-encoding, brightness), and :func:`pair_curve` counts
  flagged and true pairs over all pairs for a precision/recall curve, for
  the hash (Hamming radius) and for a pixel-space L2 baseline alike;
- :func:`split_halves` and :func:`held_out` keep the choice of the radius
  out of sample: it is chosen on one half of the planted pairs (each source
  with its copies on one side) and precision, recall and false-positive rate
  are scored, with 95 % intervals, on the other half.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .precision import autocast

__all__ = [
    "HashConfig", "Autoencoder", "SemanticHasher", "prepare", "fit_hasher", "pack_bits", "unpack_bits",
    "popcount", "hamming", "group", "duplicate_pairs", "pairs_from_labels", "exact_byte_groups",
    "plant_near_duplicates", "Plants", "PLANT_KINDS", "pair_curve", "hamming_distances", "l2_distances",
    "precision_recall", "synthetic_codes", "pick_threshold", "flagged_precision", "PlantStudy", "plant_study", "variant_pairs",
    "pair_grid", "split_halves", "score_at", "held_out", "HeldOut", "group_recall",
]

INPUT_SIZE = 32  # the paper's 32x32 down-sampled centre crops -> 3 * 32 * 32 = 3072 inputs


@dataclass
class HashConfig:
    """The autoencoder and its training (paper: 3072-128-3072, de-noising, dropout, ReLU)."""

    code_bits: int = 128
    input_noise: float = 0.2  # std of the Gaussian corruption of the [-1, 1] input (de-noising)
    input_dropout: float = 0.1  # masking corruption of the input (de-noising)
    code_dropout: float = 0.2  # dropout on the ReLU code during training (regulariser)
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    center: bool = True  # subtract the training set's mean image before encoding
    threshold: float = 0.0  # a code bit is 1 where the ReLU activation exceeds this
    seed: int = 0
    precision: str = "auto"  # "auto" (bf16 autocast where the device has native bf16), "bf16" or "fp32"


class Autoencoder(nn.Module):
    """3072 -> 128 (ReLU code) -> 3072 with de-noising and dropout only while training."""

    def __init__(self, cfg: HashConfig, in_features: int = 3 * INPUT_SIZE * INPUT_SIZE):
        super().__init__()
        self.cfg, self.in_features = cfg, in_features
        self.enc = nn.Linear(in_features, cfg.code_bits)
        self.dec = nn.Linear(cfg.code_bits, in_features)
        # The training set's mean input, subtracted before encoding: centred inputs keep the ReLU code
        # units from dying on the large constant backgrounds of these data sets.
        self.register_buffer("mean", torch.zeros(in_features))

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"the autoencoder takes (N, {self.in_features}) inputs (3 x 32 x 32 centre crops), got "
                f"{tuple(x.shape)}; pass images through dcgan.dedup.prepare() first"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        # enc(x - mean) with the mean folded into the bias: one pass over x instead of two.
        return F.relu(F.linear(x, self.enc.weight, self.enc.bias - self.enc.weight @ self.mean))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        x = x - self.mean
        if self.training:
            x = F.dropout(x + self.cfg.input_noise * torch.randn_like(x), self.cfg.input_dropout)
        h = F.dropout(F.relu(self.enc(x)), self.cfg.code_dropout, self.training)
        return torch.tanh(self.dec(h) + self.mean)


# ---------------------------------------------------------------- input

def _as_uint8_images(images) -> torch.Tensor:
    """(N, C, H, W) uint8 from a tensor/array or anything with ``.images`` (an ImageTensorDataset)."""
    images = getattr(images, "images", images)
    x = torch.as_tensor(images)
    if x.ndim == 3:
        raise ValueError(f"images must be a batch (N, C, H, W); got {tuple(x.shape)} (add a channel axis: x[:, None])")
    if x.ndim != 4:
        raise ValueError(f"images must be a batch (N, C, H, W); got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("empty data set: there is nothing to hash or de-duplicate")
    if x.shape[1] not in (1, 3):
        hint = " (composite RGBA onto a background and drop alpha)" if x.shape[1] == 4 else ""
        raise ValueError(f"images must have 1 (grayscale) or 3 (RGB) channels, got {x.shape[1]}{hint}")
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise ValueError(f"images must be uint8 in [0, 255] or float in [-1, 1], got {x.dtype}")
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x


def prepare(images, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float (N, 3 * size * size) in [-1, 1]: the paper's down-sampled centre crops.

    The square centre crop of side ``min(H, W)`` is down-sampled (antialiased
    bilinear) to ``size`` x ``size``; grayscale images are replicated to three
    channels so the input stays the paper's 3072 wide. Images smaller than
    ``size`` are refused: the paper only ever down-samples.
    """
    x = _as_uint8_images(images)
    h, w = x.shape[-2:]
    s = min(h, w)
    if s < size:
        raise ValueError(
            f"images are {h}x{w}; the hash works on {size}x{size} down-sampled centre crops, so each side needs "
            f">= {size} pixels (load the data set with image_size={size} or larger)"
        )
    top, left = (h - s) // 2, (w - s) // 2
    out = []
    for chunk in x.split(8192):
        c = chunk[..., top:top + s, left:left + s].float()
        if s != size:
            c = F.interpolate(c, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        c = c.div_(127.5).sub_(1.0)
        if c.shape[1] == 1:
            c = c.expand(-1, 3, -1, -1)
        out.append(c.reshape(len(c), -1))
    return torch.cat(out)


# ---------------------------------------------------------------- hashing

@dataclass
class SemanticHasher:
    """A trained autoencoder; :meth:`hash` maps images to packed 128-bit codes (N, 2) uint64."""

    model: Autoencoder
    cfg: HashConfig
    losses: list[float]

    @torch.no_grad()
    def code(self, images, batch_size: int = 8192) -> torch.Tensor:
        """The float ReLU code (N, 128) in fp32 (so thresholding is reproducible); uint8 images are
        prepared chunk by chunk, so a million images never sit in memory as floats."""
        prepared = torch.is_tensor(images) and images.ndim == 2 and images.is_floating_point()
        x = images if prepared else _as_uint8_images(images)
        if len(x) == 0:
            raise ValueError("empty data set: there is nothing to hash or de-duplicate")
        self.model.eval()
        dev = next(self.model.parameters()).device
        out = []
        for b in x.split(batch_size):
            b = b if prepared else prepare(b)
            out.append(self.model.encode(b.to(dev)).float().cpu())
        return torch.cat(out)

    def bits(self, images) -> np.ndarray:
        """(N, 128) bool: the ReLU code thresholded (paper: 'thresholding the ReLU activation')."""
        return (self.code(images) > self.cfg.threshold).numpy()

    def hash(self, images) -> np.ndarray:
        """(N, 2) uint64 packed hashes."""
        return pack_bits(self.bits(images))


def fit_hasher(images, cfg: HashConfig | None = None, device: str | torch.device = "cpu",
               progress: bool = False) -> SemanticHasher:
    """Train the de-noising autoencoder on ``images`` (the set it will de-duplicate); deterministic per seed."""
    cfg = cfg or HashConfig()
    x = images if (torch.is_tensor(images) and images.ndim == 2 and images.is_floating_point()) else prepare(images)
    if len(x) < 2:
        raise ValueError(
            f"a data set of {len(x)} image cannot have duplicates and cannot train the hash; "
            "de-duplicate at least 2 images (or hash a single image with a hasher trained on a larger set)"
        )
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        model = Autoencoder(cfg, x.shape[1]).to(device)
        if cfg.center:
            model.mean.copy_(x.mean(0))
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        g = torch.Generator().manual_seed(cfg.seed)
        losses: list[float] = []
        bs = min(cfg.batch_size, len(x))
        steps = range(cfg.epochs)
        if progress:
            from .progress import bar

            steps = bar(steps, desc="autoencoder epochs")
        for _ in steps:
            model.train()
            perm = torch.randperm(len(x), generator=g)
            total = 0.0
            for i in range(0, len(x) - bs + 1, bs):  # drop the ragged last batch
                b = x[perm[i:i + bs]].to(device)
                with autocast(cfg.precision, device):  # dcgan.precision: "auto" is bf16 where native
                    loss = F.mse_loss(model(b).float(), b)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
            losses.append(total / (len(x) // bs * bs))
    model.eval()
    return SemanticHasher(model, cfg, losses)


# ---------------------------------------------------------------- codes

def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(N, B) bool, B <= 128 -> (N, 2) uint64 (big-endian bit order within the 16 bytes)."""
    bits = np.asarray(bits, dtype=bool)
    if bits.ndim != 2 or bits.shape[1] > 128:
        raise ValueError(f"bits must be (N, <=128), got {bits.shape}")
    by = np.packbits(bits, axis=1)
    by = np.pad(by, ((0, 0), (0, 16 - by.shape[1])))
    return np.ascontiguousarray(by).view(">u8").astype(np.uint64)


def unpack_bits(codes: np.ndarray, n_bits: int = 128) -> np.ndarray:
    by = _as_codes(codes).astype(">u8").view(np.uint8).reshape(len(codes), 16)
    return np.unpackbits(by, axis=1)[:, :n_bits].astype(bool)


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount(x: np.ndarray) -> np.ndarray:
    """Bits set per element of a uint64 array (numpy >= 2 has a native one)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _POP8[np.ascontiguousarray(x).view(np.uint8).reshape(*x.shape, 8)].sum(-1, dtype=np.uint8)


def _as_codes(codes) -> np.ndarray:
    c = np.asarray(codes)
    if c.ndim != 2 or c.shape[1] != 2 or c.dtype != np.uint64:
        raise ValueError(f"codes must be packed (N, 2) uint64 hashes (see pack_bits), got {c.dtype} {c.shape}")
    return c


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise Hamming distance of packed codes (broadcasting over leading axes)."""
    return (popcount(a[..., 0] ^ b[..., 0]) + popcount(a[..., 1] ^ b[..., 1])).astype(np.int64)


def _row_keys(rows: np.ndarray) -> np.ndarray:
    """Rows of bytes viewed as one opaque key each, so ``np.unique`` compares whole rows in one sort."""
    rows = np.ascontiguousarray(rows)
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()


def _exact_labels(codes: np.ndarray) -> np.ndarray:
    return np.unique(_row_keys(codes), return_inverse=True)[1].ravel()


def pairs_from_labels(labels: np.ndarray, max_pairs: int = 50_000_000) -> np.ndarray:
    """All (i, j), i < j, with ``labels[i] == labels[j]``, as (P, 2) int64 (vectorised)."""
    labels = np.asarray(labels).ravel()
    order = np.argsort(labels, kind="stable")
    sl = labels[order]
    starts = np.flatnonzero(np.r_[True, sl[1:] != sl[:-1]])
    sizes = np.diff(np.r_[starts, len(sl)])
    n_pairs = int((sizes * (sizes - 1) // 2).sum())
    if n_pairs > max_pairs:
        raise ValueError(
            f"{n_pairs} candidate pairs (largest bucket {sizes.max()} codes): the hash is too coarse for pair "
            "listing; use group() for bucket labels, or train the hash longer / lower the radius"
        )
    out = []
    for k in np.unique(sizes[sizes > 1]):  # one vectorised pass per bucket size
        s = starts[sizes == k]
        i, j = np.triu_indices(k, 1)
        a, b = order[s[:, None] + i[None]], order[s[:, None] + j[None]]
        out.append(np.stack([np.minimum(a, b).ravel(), np.maximum(a, b).ravel()], 1))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


def duplicate_pairs(codes: np.ndarray, radius: int = 0, max_pairs: int = 50_000_000) -> np.ndarray:
    """Pairs (i < j) whose codes are within Hamming ``radius``, sorted.

    ``radius=0`` is the paper's hash collision. For ``radius > 0`` this is
    multi-index hashing: split the 16 code bytes into ``radius + 1`` chunks;
    two codes within ``radius`` bits agree exactly on at least one chunk
    (pigeonhole), so candidates come from exact chunk buckets and are then
    verified on the full code. Radii of 16 and more (more chunks than the
    code has bytes) compare every pair, block by block: for sets of up to
    ``BRUTE_MAX`` codes.
    """
    codes = _as_codes(codes)
    if not 0 <= radius <= 128:
        raise ValueError(f"radius must be in 0..128 (bits of the code), got {radius}")
    if len(codes) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    if radius > 15:
        return _all_pairs_within(codes, radius)
    if radius == 0:
        p = pairs_from_labels(_exact_labels(codes), max_pairs)
    else:
        by = np.ascontiguousarray(codes.astype(">u8")).view(np.uint8).reshape(len(codes), 16)
        cand = [pairs_from_labels(_exact_labels(chunk), max_pairs)
                for chunk in np.array_split(by, radius + 1, axis=1)]
        p = np.unique(np.concatenate(cand), axis=0)
        p = p[hamming(codes[p[:, 0]], codes[p[:, 1]]) <= radius]
    return p[np.lexsort((p[:, 1], p[:, 0]))]


BRUTE_MAX = 50_000  # codes compared pair by pair when the radius is too large for multi-index hashing


def _all_pairs_within(codes: np.ndarray, radius: int, block: int = 2048) -> np.ndarray:
    """Every pair (i < j) within ``radius``, by comparing all pairs (the fallback of :func:`duplicate_pairs`)."""
    n = len(codes)
    if n > BRUTE_MAX:
        raise ValueError(f"radius {radius} needs every pair of the {n:,} codes compared (multi-index hashing covers "
                         f"radii up to 15); that is kept to {BRUTE_MAX:,} codes: lower the radius")
    out = []
    for s in range(0, n, block):
        i, j = np.nonzero(hamming(codes[s:s + block, None], codes[None, :]) <= radius)
        keep = j > i + s
        out.append(np.stack([i[keep] + s, j[keep]], 1))
    p = np.concatenate(out).astype(np.int64)
    return p[np.lexsort((p[:, 1], p[:, 0]))]


def group(codes: np.ndarray, radius: int = 0) -> np.ndarray:
    """Group label per code (N,): exact buckets (``np.unique``), or connected components within ``radius``.

    The labels are ``0..G-1``; keep one image per label to de-duplicate.
    """
    codes = _as_codes(codes)
    if radius == 0 or len(codes) < 2:
        return _exact_labels(codes) if len(codes) else np.zeros(0, dtype=np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    # Collapse exact duplicates first: the radius search then runs on unique codes only.
    _, inv = np.unique(_row_keys(codes), return_inverse=True)
    ucodes = np.ascontiguousarray(codes)[np.unique(inv.ravel(), return_index=True)[1]]
    p = duplicate_pairs(ucodes, radius)
    adj = coo_matrix((np.ones(len(p), dtype=np.int8), (p[:, 0], p[:, 1])), shape=(len(ucodes),) * 2)
    return connected_components(adj, directed=False)[1][inv.ravel()]


def exact_byte_groups(images) -> np.ndarray:
    """Baseline: group label per image by its exact bytes (what a file-hash de-duplicator finds)."""
    x = _as_uint8_images(images).numpy()
    return _exact_labels(x.reshape(len(x), -1))


# ---------------------------------------------------------------- planted near duplicates

PLANT_KINDS = ("shift", "crop", "noise", "jpeg", "brightness")


@dataclass
class Plants:
    """A data set with planted near duplicates: ``truth`` is the source image's index for every row."""

    images: torch.Tensor  # uint8 (N + P, C, H, W): the originals first, then the plants
    truth: np.ndarray  # (N + P,) ground-truth group (= index of the original)
    kind: list[str]  # "original" or the PLANT_KINDS entry that made the row
    n_original: int


def _shift(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    dy, dx = rng.integers(1, 3, size=2) * rng.choice([-1, 1], size=2)  # 1-2 pixels each way
    h, w = x.shape[-2:]
    p = 2
    padded = F.pad(x[None].float(), (p, p, p, p), mode="replicate")[0]
    return padded[:, p + dy:p + dy + h, p + dx:p + dx + w].to(torch.uint8)


def _crop(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    h, w = x.shape[-2:]
    f = rng.uniform(0.88, 0.95)
    ch, cw = int(round(h * f)), int(round(w * f))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    c = x[None, :, top:top + ch, left:left + cw].float()
    return F.interpolate(c, size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)


def _noise(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    n = torch.from_numpy(rng.normal(0, 8.0, size=tuple(x.shape)).astype(np.float32))  # sigma 8 of 255
    return (x.float() + n).round().clamp(0, 255).to(torch.uint8)


def _jpeg(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    from PIL import Image

    arr = x.permute(1, 2, 0).numpy()
    im = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(rng.integers(30, 71)))
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(im.mode))
    return torch.from_numpy(out.reshape(arr.shape).copy()).permute(2, 0, 1).contiguous()


def _brightness(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    f = rng.uniform(0.8, 0.9) if rng.random() < 0.5 else rng.uniform(1.1, 1.2)
    return (x.float() * f).round().clamp(0, 255).to(torch.uint8)


_PLANTERS: dict[str, Callable] = dict(shift=_shift, crop=_crop, noise=_noise, jpeg=_jpeg, brightness=_brightness)


def plant_near_duplicates(images, n_sources: int, kinds: Sequence[str] = PLANT_KINDS, seed: int = 0) -> Plants:
    """Append one near-duplicate of each kind for ``n_sources`` randomly chosen images (seeded)."""
    x = _as_uint8_images(images)
    unknown = set(kinds) - set(_PLANTERS)
    if unknown:
        raise ValueError(f"unknown plant kinds {sorted(unknown)}; known: {', '.join(PLANT_KINDS)}")
    if not 0 <= n_sources <= len(x):
        raise ValueError(f"n_sources={n_sources} must be between 0 and the data set's size {len(x)}")
    rng = np.random.default_rng(seed)
    sources = np.sort(rng.choice(len(x), size=n_sources, replace=False))
    new, truth, kind = [], list(range(len(x))), ["original"] * len(x)
    for k in kinds:
        for s in sources:
            new.append(_PLANTERS[k](x[s], rng))
            truth.append(int(s))
            kind.append(k)
    imgs = torch.cat([x, torch.stack(new)]) if new else x.clone()
    return Plants(imgs, np.asarray(truth), kind, len(x))


def synthetic_codes(n: int, seed: int = 0, dup_fraction: float = 0.3) -> np.ndarray:
    """``n`` packed codes for timing: distinct random codes plus ``dup_fraction`` copies with 0-2 bits flipped."""
    rng = np.random.default_rng(seed)
    n_dup = int(n * dup_fraction)
    base = rng.integers(0, 256, size=(n - n_dup, 16), dtype=np.uint8).view(np.uint64)
    copies = base[rng.integers(0, len(base), size=n_dup)].copy()
    rows = np.arange(n_dup)
    for _ in range(2):  # each flip happens with probability 1/2
        bit = rng.integers(0, 64, size=n_dup).astype(np.uint64)
        flip = np.left_shift(np.uint64(1), bit) * rng.integers(0, 2, size=n_dup).astype(np.uint64)
        copies[rows, rng.integers(0, 2, size=n_dup)] ^= flip
    return np.concatenate([base, copies])[rng.permutation(n)]


# ---------------------------------------------------------------- measuring

def hamming_distances(codes: np.ndarray) -> Callable[[int, int], np.ndarray]:
    """Block function for :func:`pair_curve`: Hamming distances of rows [s, e) to rows [s, N)."""
    codes = _as_codes(codes)
    return lambda s, e: hamming(codes[s:e, None], codes[None, s:])


def l2_distances(x: torch.Tensor) -> Callable[[int, int], np.ndarray]:
    """Block function for :func:`pair_curve`: RMS pixel distance (in [-1, 1] units) of rows [s, e) to [s, N)."""
    x = x.float()
    sq = (x * x).sum(1)
    d = x.shape[1]

    def block(s: int, e: int) -> np.ndarray:
        d2 = sq[s:e, None] + sq[None, s:] - 2 * x[s:e] @ x[s:].T
        return (d2.clamp_min(0) / d).sqrt().numpy()

    return block


def pair_curve(dist_block: Callable[[int, int], np.ndarray], truth: np.ndarray, thresholds: Sequence[float],
               ignore: np.ndarray | None = None, block: int = 1024) -> dict[str, np.ndarray]:
    """Count flagged (distance <= t) and truly-duplicate pairs over ALL pairs i < j, per threshold t.

    ``truth[i] == truth[j]`` marks a true pair. Pairs with equal ``ignore``
    labels but different ``truth`` are left out of both counts (e.g. the real
    skin-tone variants in emoji when measuring planted copies). Returns
    ``thresholds``, ``flagged``, ``true_pos`` and ``n_true`` (the recall base).
    """
    truth = np.asarray(truth)
    n, t = len(truth), np.asarray(thresholds, dtype=np.float64)
    flagged = np.zeros(len(t) + 1, dtype=np.int64)
    tp = np.zeros(len(t) + 1, dtype=np.int64)
    for s in range(0, n, block):
        e = min(s + block, n)
        d = np.asarray(dist_block(s, e))
        upper = np.arange(s, e)[:, None] < np.arange(s, n)[None]
        same = truth[s:e, None] == truth[None, s:]
        keep = upper if ignore is None else upper & ~((ignore[s:e, None] == ignore[None, s:]) & ~same)
        bins = np.searchsorted(t, d[keep], side="left")  # first threshold >= d: flagged from there on
        flagged += np.bincount(bins, minlength=len(t) + 1)
        tp += np.bincount(bins[same[keep]], minlength=len(t) + 1)
    _, sizes = np.unique(truth, return_counts=True)
    return dict(thresholds=t, flagged=np.cumsum(flagged)[:-1], true_pos=np.cumsum(tp)[:-1],
                n_true=int((sizes * (sizes - 1) // 2).sum()))


def precision_recall(curve: dict) -> tuple[np.ndarray, np.ndarray]:
    """Precision (1 where nothing is flagged) and recall per threshold of a :func:`pair_curve`."""
    f, tp = curve["flagged"], curve["true_pos"]
    precision = np.where(f > 0, tp / np.maximum(f, 1), 1.0)
    recall = tp / max(curve["n_true"], 1)
    return precision, recall


# ---------------------------------------------------------------- the chapter's measurements

def pick_threshold(curve: dict, target_precision: float) -> tuple[float, int]:
    """The largest threshold whose precision is >= ``target_precision`` (and its index); the smallest if none is."""
    p, _ = precision_recall(curve)
    ok = np.flatnonzero((p >= target_precision) & (curve["flagged"] > 0))
    k = int(ok.max()) if len(ok) else 0
    return float(curve["thresholds"][k]), k


def flagged_precision(pairs: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None = None) -> dict:
    """Counts for an explicit list of flagged pairs: flagged, true_pos, n_true, precision, recall."""
    pairs = np.asarray(pairs).reshape(-1, 2)
    same = truth[pairs[:, 0]] == truth[pairs[:, 1]]
    if ignore is not None:
        keep = same | (ignore[pairs[:, 0]] != ignore[pairs[:, 1]])
        pairs, same = pairs[keep], same[keep]
    _, sizes = np.unique(truth, return_counts=True)
    n_true = int((sizes * (sizes - 1) // 2).sum())
    f, tp = len(pairs), int(same.sum())
    return dict(flagged=f, true_pos=tp, n_true=n_true, precision=tp / f if f else 1.0, recall=tp / max(n_true, 1))


@dataclass
class PlantStudy:
    """Everything measured on one data set with planted near duplicates."""

    plants: Plants
    hasher: SemanticHasher
    inputs: torch.Tensor  # prepared (N, 3072) inputs
    codes: np.ndarray  # packed hashes
    ignore: np.ndarray | None
    hash_curve: dict  # over Hamming radii
    l2_curve: dict  # over RMS pixel distances
    exact: dict  # exact-byte hashing: flagged_precision(...)
    plant_hamming: np.ndarray  # Hamming distance of every plant to its source
    plant_l2: np.ndarray  # RMS pixel distance of every plant to its source
    plant_exact: np.ndarray  # whether every plant is byte-identical to its source
    half: np.ndarray | None = None  # (N + P,) 0/1: split_halves(); None when the study was not split
    halves: tuple[dict, dict] | None = None  # per half: {"hash": curve, "l2": curve, "exact": counts, "rows": idx}

    def per_kind_recall(self, radius: int, l2_threshold: float, half: int | None = None) -> dict[str, dict[str, float]]:
        """Share of (source, plant) pairs each method flags, per plant kind (only the plants of ``half``, if given)."""
        kinds = np.asarray(self.plants.kind[self.plants.n_original:])
        keep = np.ones(len(kinds), bool) if half is None else self.half[self.plants.n_original:] == half
        out = {}
        for k in dict.fromkeys(kinds):
            m = (kinds == k) & keep
            out[k] = dict(hash=float((self.plant_hamming[m] <= radius).mean()),
                          l2=float((self.plant_l2[m] <= l2_threshold).mean()),
                          exact_bytes=float(self.plant_exact[m].mean()))
        return out


def plant_study(images, n_sources: int, cfg: HashConfig, radii: Sequence[int], l2_thresholds: Sequence[float],
                ignore: np.ndarray | None = None, seed: int = 0, device: str | torch.device = "cpu",
                progress: bool = False) -> PlantStudy:
    """Plant near duplicates into ``images``, train the hash on the result, and measure hash and baselines.

    ``ignore`` (per original image, e.g. the emoji ``base``) marks real near-duplicate families: pairs inside
    one family that are not planted copies count neither as hits nor as false positives.
    """
    plants = plant_near_duplicates(images, n_sources, seed=seed)
    n = plants.n_original
    ign = None if ignore is None else np.asarray(ignore)[plants.truth]
    x = prepare(plants.images)
    hasher = fit_hasher(x, cfg, device=device, progress=progress)
    codes = hasher.hash(x)
    hash_curve = pair_curve(hamming_distances(codes), plants.truth, radii, ignore=ign)
    l2_curve = pair_curve(l2_distances(x), plants.truth, l2_thresholds, ignore=ign)
    exact = flagged_precision(pairs_from_labels(exact_byte_groups(plants.images)), plants.truth, ign)
    half = split_halves(plants, seed)
    halves = []
    for h in (0, 1):
        rows = np.flatnonzero(half == h)
        t, ig = plants.truth[rows], None if ign is None else ign[rows]
        halves.append(dict(
            rows=rows,
            hash=pair_curve(hamming_distances(codes[rows]), t, radii, ignore=ig),
            l2=pair_curve(l2_distances(x[rows]), t, l2_thresholds, ignore=ig),
            exact=flagged_precision(pairs_from_labels(exact_byte_groups(plants.images[rows])), t, ig)))
    src = plants.truth[n:]
    return PlantStudy(
        plants, hasher, x, codes, ign, hash_curve, l2_curve, exact,
        plant_hamming=hamming(codes[n:], codes[src]),
        plant_l2=((x[n:] - x[src]) ** 2).mean(1).sqrt().numpy(),
        plant_exact=(plants.images[n:] == plants.images[src]).flatten(1).all(1).numpy(),
        half=half, halves=tuple(halves),
    )


def split_halves(plants: Plants, seed: int = 0) -> np.ndarray:
    """0 or 1 per row of ``plants``: each original with all its copies on one side.

    Originals with copies and those without are each split in half at random
    (seeded), so both halves hold the same number of planted groups and of
    plain images, i.e. the same density of true and false pairs.
    """
    n = plants.n_original
    sourced = np.zeros(n, dtype=bool)
    sourced[plants.truth[n:]] = True
    rng = np.random.default_rng([seed, 41])  # independent of the planting draw
    side = np.zeros(n, dtype=np.int64)
    for members in (np.flatnonzero(sourced), np.flatnonzero(~sourced)):
        side[rng.permutation(members)[len(members) // 2:]] = 1
    return side[plants.truth]


def score_at(curve: dict, threshold: float) -> dict:
    """Counts, precision, recall and false-positive rate of a :func:`pair_curve` at ``threshold``, with 95 %
    Wilson intervals (flagged pairs treated as independent draws). The FP rate is ``nan`` when nothing is flagged."""
    from .intervals import wilson_ci

    k = int(np.flatnonzero(np.isclose(curve["thresholds"], threshold))[0])
    f, tp, n_true = int(curve["flagged"][k]), int(curve["true_pos"][k]), int(curve["n_true"])
    p_lo, p_hi = wilson_ci(tp, f)
    r_lo, r_hi = wilson_ci(tp, n_true)
    return dict(threshold=float(threshold), flagged=f, true_pos=tp, n_true=n_true,
                precision=tp / f if f else float("nan"), precision_ci=(p_lo, p_hi),
                recall=tp / n_true if n_true else float("nan"), recall_ci=(r_lo, r_hi),
                fp_rate=1 - tp / f if f else float("nan"), fp_rate_ci=(1 - p_hi, 1 - p_lo))


@dataclass
class HeldOut:
    """The radius and L2 threshold chosen on one half of the planted pairs, scored on the other."""

    radius: int
    l2_threshold: float
    hash: dict  # score_at() of the hash on the scoring half
    hash_r0: dict  # the paper's exact collision (radius 0) on the scoring half
    l2: dict
    exact: dict  # exact-byte hashing on the scoring half: flagged_precision()
    recall_by_group: dict  # {"hash": (G,), "l2": (G,)}: recall per planted group of the scoring half
    score_half: int


def held_out(study: PlantStudy, target_precision: float, select_half: int = 0) -> HeldOut:
    """Choose the radius and the L2 threshold (largest with precision >= target) on ``select_half``; score both
    on the other half, so the precision claim is tested out of sample rather than holding by construction."""
    if study.halves is None:
        raise ValueError("this study was not split in halves; run plant_study()")
    sel, ev = study.halves[select_half], study.halves[1 - select_half]
    radius, _ = pick_threshold(sel["hash"], target_precision)
    l2_t, _ = pick_threshold(sel["l2"], target_precision)
    return HeldOut(int(radius), float(l2_t), score_at(ev["hash"], radius), score_at(ev["hash"], 0),
                   score_at(ev["l2"], l2_t), ev["exact"], group_recall(study, radius, l2_t, ev["rows"]), 1 - select_half)


def group_recall(study: PlantStudy, radius: int, l2_threshold: float, rows: np.ndarray | None = None) -> dict:
    """Recall of the hash and of the L2 threshold per planted group among ``rows`` (default: all).

    A group is a source and its copies with all their true pairs; it is the
    unit of a bootstrap, since pairs that share a source are not independent
    draws. Groups have equal sizes, so the mean over groups is the recall.
    """
    rows = np.arange(len(study.plants.truth)) if rows is None else np.asarray(rows)
    pairs = rows[pairs_from_labels(study.plants.truth[rows])]
    group = study.plants.truth[pairs[:, 0]]
    hits = dict(hash=hamming(study.codes[pairs[:, 0]], study.codes[pairs[:, 1]]) <= radius,
                l2=((study.inputs[pairs[:, 0]] - study.inputs[pairs[:, 1]]) ** 2).mean(1).sqrt().numpy() <= l2_threshold)
    groups = np.unique(group)
    return {k: np.array([h[group == g].mean() for g in groups]) for k, h in hits.items()}


def variant_pairs(attributes: dict[str, list]) -> dict[str, np.ndarray]:
    """The real near duplicates in emoji, as (P, 2) index pairs.

    ``skin_tone``: same ``base`` emoji and vendor, different skin tone;
    ``vendor``: same ``base`` and skin tone, drawn by different vendors.
    """
    base, tone, vendor = (np.asarray(attributes[k]) for k in ("base", "skin_tone", "vendor"))
    p = pairs_from_labels(np.unique(base, return_inverse=True)[1])
    i, j = p[:, 0], p[:, 1]
    return dict(skin_tone=p[(vendor[i] == vendor[j]) & (tone[i] != tone[j])],
                vendor=p[(vendor[i] != vendor[j]) & (tone[i] == tone[j])])


def pair_grid(images, pairs: np.ndarray, correct: np.ndarray | None = None, border: int = 2) -> torch.Tensor:
    """A (3, H, W) float image: one column per pair (top: first image, bottom: second).

    With ``correct``, each pair is framed green (a true duplicate) or red (a false positive).
    """
    from torchvision.utils import make_grid

    x = _as_uint8_images(images)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    pairs = np.asarray(pairs).reshape(-1, 2)
    if len(pairs) == 0:
        raise ValueError("no pairs to show")
    top, bottom = x[pairs[:, 0]].float() / 255, x[pairs[:, 1]].float() / 255
    tiles = torch.stack([top, bottom], 1).flatten(0, 1)  # pair k -> tiles 2k, 2k+1
    if correct is not None:
        colour = torch.tensor([[0.85, 0.1, 0.1], [0.1, 0.7, 0.2]])[np.repeat(np.asarray(correct, dtype=int), 2)]
        tiles = F.pad(tiles, (border,) * 4)
        tiles[:, :, :border], tiles[:, :, -border:] = 0, 0
        tiles[:, :, :, :border], tiles[:, :, :, -border:] = 0, 0
        frame = torch.ones_like(tiles[:, :1])
        frame[..., border:-border, border:-border] = 0
        tiles = tiles * (1 - frame) + frame * colour[:, :, None, None]
    # make_grid fills rows first: lay the pairs out as 2 rows x len(pairs) columns.
    rows = torch.cat([tiles[0::2], tiles[1::2]])
    return make_grid(rows, nrow=len(pairs), padding=2, pad_value=1.0)
