"""DCGAN training engine (paper §4 "Training details").

The loop follows pytorch/examples' ``dcgan/main.py``: Adam(lr 2e-4,
betas (0.5, 0.999)), batch 128, BCE on D's logits (real label 1, fake 0), G
trained with the non-saturating loss ``-log D(G(z))``. Around it:

* a run folder (``config.json``, ``metrics.jsonl``, a fixed-noise sample grid
  per epoch, a G snapshot per epoch for per-epoch metrics, final ``G.pt`` and
  ``D.pt``);
* checkpoints of G, D, both optimizers, RNG states and the step, written
  atomically (tmp file + ``os.replace``) and read with ``weights_only=True``;
  a killed run resumes to bit-identical weights on CPU with
  ``deterministic=True`` (fp32);
* a cache: :func:`train` on a config that was already trained on the same data
  returns that run (the key hashes the config, :data:`CODE_VERSION` and a
  fingerprint of the data's files); training happens
  in ``runs/.partial/<key>`` under a file lock and is renamed into place when
  done, so two processes never train the same config twice;
* NaN/inf losses, exploded ones (|loss| > 1e4) and a G saturated at +-1 raise
  :class:`TrainingDiverged` (``nan_policy="raise"``) or end the run marked
  ``diverged`` (``"stop"``), so a blown-up run is never cached as a good one;
* fast paths: bf16 autocast + channels_last on CPUs with bf16 support, CUDA
  autocast on a GPU, optional ``torch.compile``; DDP when launched by
  ``torchrun`` (DistributedSampler, rank-0 logging/checkpoints, optional
  SyncBatchNorm).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from torch import nn
from torch.nn import functional as F

from .models import Discriminator, Generator, ModelConfig, build_models, sample_noise
from .paths import runs_root as _default_runs_root

__all__ = [
    "CODE_VERSION",
    "TrainConfig",
    "Run",
    "TrainingDiverged",
    "CheckpointError",
    "train",
    "train_many",
    "load_run",
    "last_fifth_start",
    "preset",
    "PRESETS",
    "config_key",
    "cache_key",
    "resolve_precision",
    "save_checkpoint",
    "load_checkpoint",
    "load_generator",
    "gan_step",
    "run_name",
    "cpu_supports_bf16",
    "SimulatedKill",
    "load_discriminator",
    "adam",
    "validate",
]

# Bump when a change to the training code changes what a config trains to:
# cached runs of older versions are then retrained instead of reused.
CODE_VERSION = 3  # 3: D snapshots over the last fifth of training (model selection, dcgan.gate.select_epoch)


class TrainingDiverged(FloatingPointError):
    """A loss became NaN/inf or exploded, or G saturated (nan_policy="raise"); earlier checkpoints are kept."""


class SimulatedKill(RuntimeError):
    """Raised by ``train(..., _stop_after=n)``: the tests' stand-in for a killed process."""


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, truncated or not one of ours, or could not be written (full disk)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (and its cache key)."""

    dataset: str = "fashion-mnist"
    split: str = "train"
    image_size: int = 32
    model: ModelConfig = field(default_factory=lambda: ModelConfig(image_size=32, channels=1))
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (None: run all epochs)
    subset: int | None = None  # train on the first N images only
    batch_size: int = 128  # §4: mini-batch SGD with batch 128 (global, split over DDP ranks)
    lr: float = 2e-4  # §4: 0.001 was too high
    beta1: float = 0.5  # §4: 0.9 oscillated
    beta2: float = 0.999
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    deterministic: bool = False  # fp32 + deterministic kernels: bit-identical resume on CPU
    compile: bool = False
    nan_policy: Literal["raise", "stop"] = "raise"
    sample_every: int = 1  # epochs between fixed-noise sample grids (the first epoch is always kept)
    ckpt_every: int = 0  # optimizer steps between checkpoints (0: at the end of every epoch only)
    n_samples: int = 64  # size of the fixed noise batch
    sync_bn: bool = False  # DDP only: SyncBatchNorm across ranks

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):  # from JSON
            object.__setattr__(self, "model", ModelConfig(**self.model))
        if self.model.image_size != self.image_size:
            raise ValueError(
                f"model.image_size ({self.model.image_size}) != image_size ({self.image_size}); "
                "build the ModelConfig with the same image_size"
            )
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.nan_policy not in ("raise", "stop"):
            raise ValueError(f"nan_policy must be 'raise' or 'stop', got {self.nan_policy!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1 or None")
        if self.subset is not None and self.subset < 1:
            raise ValueError("subset must be >= 1 or None")
        if self.dataset.startswith("folder:"):  # absolute: the same config names the same folder from any directory
            path = os.path.abspath(os.path.expanduser(self.dataset[len("folder:"):]))
            object.__setattr__(self, "dataset", f"folder:{path}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        d["model"] = ModelConfig(**d["model"]) if isinstance(d.get("model"), dict) else d.get("model", ModelConfig())
        return cls(**d)

    def replace(self, **kw) -> "TrainConfig":
        """A copy with fields changed; ``model`` may be a dict of ModelConfig fields to change."""
        if isinstance(kw.get("model"), dict):
            kw["model"] = replace(self.model, **kw["model"])
        if "image_size" in kw and "model" not in kw:
            kw["model"] = replace(self.model, image_size=kw["image_size"])
        return replace(self, **kw)


def config_key(cfg: TrainConfig) -> str:
    """Short stable hash of the config and the code version (checkpoints carry it; see :func:`cache_key`)."""
    blob = json.dumps({"code_version": CODE_VERSION, "config": cfg.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_key(cfg: TrainConfig, init_g: str | Path | None = None, init_d: str | Path | None = None) -> str:
    """The run cache's key: :func:`config_key`, a fingerprint of the data and of the initial weights.

    The data fingerprint (:func:`dcgan.data.data_fingerprint`: file list, sizes, mtimes) keeps the
    cache from returning a run trained on other data under the same config text: another folder
    behind the same name, a changed folder, another ``DCGAN_DATA``.
    """
    from .data import data_fingerprint

    h = hashlib.sha256(config_key(cfg).encode())
    h.update(data_fingerprint(cfg.dataset).encode())
    for p in (init_g, init_d):
        h.update(Path(p).read_bytes() if p else b"-")
    return h.hexdigest()[:16]


def _safe_name(dataset: str) -> str:
    """A data set string as one safe folder-name part: ``folder:/abs/path/imgs`` -> ``folder-imgs``.

    The run and lock names start with it, and a ``/`` there made nested folders; the path
    itself is in the config, hence in the key, so two folders of the same name stay apart.
    """
    if dataset.startswith("folder:"):
        dataset = "folder-" + os.path.basename(os.path.normpath(dataset[len("folder:"):]))
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset).strip("._")  # no leading dot: that would hide the folder
    return safe[:48] or "data"


def run_name(cfg: TrainConfig, init_g: str | Path | None = None, init_d: str | Path | None = None) -> str:
    """The run's folder name under the runs root (and its lock's): safe whatever the data set string is."""
    return f"{_safe_name(cfg.dataset)}-{cfg.image_size}-{cache_key(cfg, init_g, init_d)}"


# ----------------------------------------------------------------------------- presets

# name -> (dataset, image_size, channels)
_PRESET_DATA = {
    "fashion-mnist-32": ("fashion-mnist", 32, 1),
    "emoji-32": ("emoji", 32, 3),
    "emoji-64": ("emoji", 64, 3),
    "mnist-cond": ("mnist-10k", 32, 1),  # §8.1: label-conditional (paper profile: the full MNIST)
    "mnist-cond-noaffine": ("mnist-10k", 32, 1),  # the same without BatchNorm's scale and bias
    "imagenet32": ("imagenet32", 32, 3),
    "svhn-32": ("svhn", 32, 3),
    "lsun-64": ("lsun-bedroom", 64, 3),
    "celeba-64": ("celeba", 64, 3),
}
PRESETS = tuple(_PRESET_DATA)
_PAPER_ONLY = ("imagenet32", "svhn-32", "lsun-64", "celeba-64")

# Book-profile length of each run, chosen with the gate references (chapter 02 shows the curves): each run
# ends on its FID plateau (the last fifth of training improves FID by < 10 %) within the book's CPU budget.
# From the references' FID curves (dcgan/gate_references.json):
# - fashion-mnist-32 (reference 20 epochs, plateau 9.2): FID 14.7, 11.7, 8.8, 10.2, 9.5 at epochs 4-8. At 5
#   epochs FID still fell 20 % over the last fifth; at 8 it is flat and within 1.3x the plateau.
# - emoji-32 (reference 160 epochs, plateau 1.95): FID 4.7 at 32, 2.7 at 40 (still falling 43 % over the last
#   fifth, above 1.3x the plateau), 2.0 at 64, 2.2 at 80 (flat over 64-80, within 1.3x).
# - mnist-cond (reference 60 epochs, plateau 3.7): FID 5.8 at 10, 3.4 at 15, 2.0-3.0 over 17-23; at 15 the
#   curve is still clearly falling, 20 sits on the plateau. mnist-cond-noaffine gets the same length.
# - chapter 08's ablation DCGAN (dcgan.stability, 30 epochs) is explained there.
# The gate's convergence test reads a robust trend over the last fifth (dcgan.gate.trend_gain), not two snapshots.
BOOK_EPOCHS = {"fashion-mnist-32": 8, "emoji-32": 80, "emoji-64": 30, "mnist-cond": 20, "mnist-cond-noaffine": 20}


def preset(name: str, profile: str = "book") -> TrainConfig:
    """The book's standard runs: ``smoke`` (seconds), ``book`` (CPU minutes), ``paper`` (GPU, full data).

    Chapters reuse these, so every chapter that needs chapter 02's models
    gets the cached run instead of training a new one.
    """
    if name not in _PRESET_DATA:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    if profile not in ("smoke", "book", "paper"):
        raise ValueError(f"unknown profile {profile!r}; known: smoke, book, paper")
    if name in _PAPER_ONLY and profile != "paper":
        raise ValueError(
            f"preset {name!r} needs the paper's data and a GPU: use profile='paper' "
            "(book/smoke chapters use 'fashion-mnist-32' or 'emoji-32')"
        )
    dataset, size, ch = _PRESET_DATA[name]
    if name.startswith("mnist-cond"):
        return _mnist_cond(profile, bn_affine=name == "mnist-cond")
    if profile == "smoke":
        # Narrow nets on ~1k images: a few seconds on 2 CPU cores.
        # (emoji: the Google half only, which decodes in half the time.)
        m = ModelConfig(image_size=size, channels=ch, nz=100, ngf=16, ndf=16)
        ds = "emoji-google" if name.startswith("emoji") else dataset
        return TrainConfig(ds, "train", size, m, epochs=2, subset=1024 if size == 32 else 512, batch_size=64)
    if profile == "book":
        # Narrower than the paper (ngf = ndf = 32, the paper's 128) so that the runs reach their plateau
        # within the book's CPU budget; the full training sets, the paper's batch and optimiser.
        m = ModelConfig(image_size=size, channels=ch, nz=100, ngf=32, ndf=32)
        return TrainConfig(dataset, "train", size, m, epochs=BOOK_EPOCHS[name])
    # paper profile: the paper's widths (Figure 1: 4x4x1024 top at 64x64), full data.
    if name == "imagenet32":
        # §5.1: D widths 256/512/1024 -> 4x4 max-pooled features 16*(256+512+1024) = 28672-d.
        m = ModelConfig(image_size=32, channels=3, nz=100, ngf=256, ndf=256)
        return TrainConfig(dataset, "train", 32, m, epochs=5)
    m = ModelConfig(image_size=size, channels=ch, nz=100, ngf=128, ndf=128)
    epochs = {"fashion-mnist-32": 25, "emoji-32": 100, "emoji-64": 100, "svhn-32": 25, "lsun-64": 1,
              "celeba-64": 25}[name]
    return TrainConfig(dataset, "train", size, m, epochs=epochs)


def _mnist_cond(profile: str, bn_affine: bool) -> TrainConfig:
    """§8.1's label-conditional DCGAN (chapter 09), with or without BatchNorm's scale and bias."""
    if profile == "smoke":
        m = ModelConfig(image_size=32, channels=1, nz=32, ngf=8, ndf=8, n_classes=10, bn_affine=bn_affine)
        return TrainConfig("mnist-10k", "train", 32, m, epochs=1, max_steps=16, batch_size=64)
    if profile == "book":
        m = ModelConfig(image_size=32, channels=1, nz=64, ngf=32, ndf=32, n_classes=10, bn_affine=bn_affine)
        return TrainConfig("mnist-10k", "train", 32, m, epochs=BOOK_EPOCHS["mnist-cond"], batch_size=64)
    m = ModelConfig(image_size=32, channels=1, nz=100, ngf=64, ndf=64, n_classes=10, bn_affine=bn_affine)
    return TrainConfig("mnist", "train", 32, m, epochs=25)


# ----------------------------------------------------------------------------- precision / device


def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(cfg: TrainConfig, device: torch.device) -> str:
    """'fp32' or 'bf16' for this config on this device ('auto': bf16 where fast, fp32 when deterministic)."""
    if cfg.precision != "auto":
        return cfg.precision
    if cfg.deterministic:
        return "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def adam(net: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """§4's optimiser for one net: Adam(lr, (beta1, beta2)), one fused kernel for all parameters.

    The default Adam on CPU loops over parameters in Python; the fused kernel
    (CPU and CUDA) does the same update in one call, which matters for the
    book's small nets, whose steps are bound by overhead rather than FLOPs.
    """
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in net.parameters())
    return torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused or None)


# ----------------------------------------------------------------------------- checkpoints


def _write_failed(path: Path, e: BaseException) -> CheckpointError:
    """A write error that names the file and the free space (a full disk made torch say "unexpected pos")."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return CheckpointError(
        f"could not write {path} ({type(e).__name__}: {e}); {free} on its disk ({path.parent}). Free some space "
        "(or point DCGAN_RUNS at a larger disk) and run again: training resumes from the last complete checkpoint"
    )


def _atomic_save(obj: Any, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # ENOSPC, or torch's "unexpected pos" on a full disk
        raise _write_failed(path, e) from e
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint atomically: a crash mid-write leaves the previous file intact."""
    _atomic_save({"format": "dcgan-ckpt", "code_version": CODE_VERSION, **state}, path)


def _read_weights(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True`` (no pickled code runs); a damaged file raises :class:`CheckpointError`."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, ...
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e}); delete it to fall back "
            "to the previous checkpoint, or delete the run folder to start over"
        ) from e


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint with ``weights_only=True``; a damaged file raises :class:`CheckpointError`."""
    path = Path(path)
    state = _read_weights(path)
    if not isinstance(state, dict) or state.get("format") not in ("dcgan-ckpt", "dcgan-net"):
        raise CheckpointError(f"{path} is not a dcgan checkpoint (no 'format' key)")
    return state


def _net_file(net: nn.Module, cfg: ModelConfig, **extra) -> dict:
    return {"format": "dcgan-net", "model_config": cfg.to_dict(), "state_dict": _cpu_state(net), **extra}


def _cpu_state(net: nn.Module) -> dict:
    net = _unwrap(net)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}


def _unwrap(net: nn.Module) -> nn.Module:
    net = getattr(net, "_orig_mod", net)  # torch.compile
    net = getattr(net, "module", net)  # DDP
    return getattr(net, "_orig_mod", net)


def _is_plain_state_dict(state: Any) -> bool:
    """A bare state_dict (pytorch/examples saves ``netG.state_dict()`` as ``netG_epoch_N.pth``)."""
    return isinstance(state, dict) and bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())


def load_generator(path: str | Path) -> Generator:
    """A generator (CPU, fp32, eval mode) from ``G.pt``, a snapshot, a training checkpoint or a run folder.

    Also from pytorch/examples' ``netG_epoch_N.pth`` (a bare state_dict): the architecture is
    inferred from the tensor shapes, and ``z_dist`` is ``"normal"`` because pytorch/examples draws
    z from N(0, 1); such a generator has ``from_examples = True``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "G.pt"
    state = _read_weights(path)
    if _is_plain_state_dict(state):
        return _examples_generator(state, path)
    if not isinstance(state, dict) or state.get("format") not in ("dcgan-ckpt", "dcgan-net"):
        raise CheckpointError(f"{path} is not a dcgan checkpoint (no 'format' key) nor a bare state_dict")
    if state.get("format") == "dcgan-ckpt" and "model_config" in state:
        sd = state["G"]
    elif state.get("format") == "dcgan-net" and state.get("kind", "G") == "G":
        sd = state["state_dict"]
    else:
        raise CheckpointError(f"{path} holds no generator (expected G.pt, snapshots/G_epoch_*.pt or ckpt/step_*.pt)")
    g = Generator(ModelConfig(**state["model_config"]))
    g.load_state_dict(sd)
    return g.eval()


def _examples_generator(sd: dict, path: Path) -> Generator:
    """A generator for a bare state_dict, its nz/ngf/nc/image size read off the conv weights' shapes."""
    shapes = _shape_config(sd, "G")
    try:
        cfg = ModelConfig(z_dist="normal", **shapes)  # pytorch/examples: z ~ N(0, 1)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path} is a bare state_dict but not a DCGAN generator ({e})") from e
    g = Generator(cfg)
    mapped = _examples_to_ours(sd, g.state_dict())
    _check_fits(mapped, g.state_dict(), "G", path, cfg, shapes)
    g.load_state_dict(mapped)
    g.from_examples = True
    return g.eval()


def _shape_config(sd: dict, kind: str) -> dict:
    """The ModelConfig fields a DCGAN state_dict's conv weights give away (``{}`` when it has too few).

    G's transposed convs have weights (in, out, 4, 4): (nz, 8 ngf) first, (ngf, nc) last; D's
    convs (out, in, 4, 4): (ndf, nc) first. Each conv doubles or halves: size = 4 * 2 ** (convs - 1).
    """
    convs = [v for v in sd.values() if isinstance(v, torch.Tensor) and v.dim() == 4]
    if len(convs) < 3:
        return {}
    size = 2 ** (len(convs) + 1)
    if kind == "G":
        return {"image_size": size, "channels": convs[-1].shape[1], "nz": convs[0].shape[0], "ngf": convs[-1].shape[0]}
    return {"image_size": size, "channels": convs[0].shape[1], "ndf": convs[0].shape[0]}


_FLAGS = {"image_size": "--imageSize", "channels": "--nc", "nz": "--nz", "ngf": "--ngf", "ndf": "--ndf",
          "n_classes": "--n-classes"}


def _check_fits(sd: dict, ref: dict, kind: str, path: Path, cfg: ModelConfig, theirs: dict) -> None:
    """Raise a :class:`CheckpointError` naming both shapes and the setting to change when ``sd`` does not fit."""
    if list(sd) == list(ref) and all(sd[k].shape == ref[k].shape for k in ref):
        return
    pairs = list(zip(sd.items(), ref.items()))
    bad = next(((a, b) for a, b in pairs if a[1].shape != b[1].shape), None)
    if bad is not None:
        (ka, va), (kb, vb) = bad
        what = f"its {ka} has shape {tuple(va.shape)} where this {kind} has {kb} of shape {tuple(vb.shape)}"
    else:
        what = f"it holds {len(sd)} tensors where this {kind} has {len(ref)} (first names: {next(iter(sd))}, {next(iter(ref))})"
    diff = {k: v for k, v in theirs.items() if k in _FLAGS and getattr(cfg, k) != v}
    if diff:
        fix = (f"it was trained with {', '.join(f'{k}={v}' for k, v in diff.items())}: set "
               + " ".join(f"{_FLAGS[k]} {v}" for k, v in diff.items()))
    else:
        fix = "build the model with the settings it was trained with"
    raise CheckpointError(f"{path} does not fit this {kind}: {what}; {fix}")


def _init_state(path: str | Path, kind: str, net: nn.Module) -> dict:
    """Weights to start from: our G.pt/D.pt/checkpoints, or a plain state_dict (pytorch/examples' netG.pth)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no initial {kind} weights at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read initial {kind} weights {path} ({type(e).__name__}: {e})") from e
    ref = net.state_dict()
    if isinstance(state, dict) and state.get("format") in ("dcgan-net", "dcgan-ckpt"):
        sd = state["state_dict"] if state["format"] == "dcgan-net" else state.get(kind)
        theirs = state.get("model_config") or {}
    elif _is_plain_state_dict(state):
        sd, theirs = _examples_to_ours(state, ref), _shape_config(state, kind)
    else:
        sd = None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path} holds no {kind} state_dict")
    _check_fits(sd, ref, kind, path, net.cfg, theirs)
    return sd


def _examples_to_ours(sd: dict, ref: dict) -> dict:
    """pytorch/examples' dcgan names layers ``main.N.*``; ours are already in that order, so map by position."""
    if not any(k.startswith("main.") for k in sd) or len(sd) != len(ref):
        return sd  # not theirs, or another architecture: _check_fits says how it differs
    return dict(zip(ref, sd.values()))


def validate(cfg: TrainConfig, init_g: str | Path | None = None, init_d: str | Path | None = None) -> None:
    """Check what can fail before training, before anything is written: the data set name and split,
    a ``folder:`` that exists, initial weights that exist and fit (nets built on the meta device: no cost)."""
    from .data import DatasetNotFoundError, dataset_splits

    splits = dataset_splits(cfg.dataset)  # UnknownDatasetError for a name not in the registry
    if cfg.split not in splits:
        raise ValueError(f"data set {cfg.dataset!r} has splits {', '.join(splits)}, not {cfg.split!r}")
    if cfg.dataset.startswith("folder:") and not os.path.isdir(cfg.dataset[len("folder:"):]):
        raise DatasetNotFoundError(f"data set {cfg.dataset!r}: there is no folder {cfg.dataset[len('folder:'):]}")
    for p, kind, cls in ((init_g, "G", Generator), (init_d, "D", Discriminator)):
        if p:
            with torch.device("meta"):
                net = cls(cfg.model)
            _init_state(p, kind, net)


def load_discriminator(path: str | Path) -> Discriminator:
    state = load_checkpoint(path)
    if state.get("format") != "dcgan-net" or state.get("kind") != "D":
        raise CheckpointError(f"{path} is not a discriminator file (expected D.pt)")
    d = Discriminator(ModelConfig(**state["model_config"]))
    d.load_state_dict(state["state_dict"])
    return d.eval()


# ----------------------------------------------------------------------------- run


@dataclass
class Run:
    """A finished (or diverged) training run on disk."""

    dir: Path
    config: TrainConfig
    info: dict
    epoch: int | None = None  # the snapshot the run's model is taken at (:meth:`at`); None: the final nets

    @property
    def diverged(self) -> bool:
        return bool(self.info.get("diverged", False))

    @property
    def epochs_done(self) -> int:
        return int(self.info.get("epochs_done", 0))

    @property
    def steps(self) -> int:
        return int(self.info.get("steps", 0))

    @property
    def metrics(self) -> list[dict]:
        if not hasattr(self, "_metrics"):
            p = self.dir / "metrics.jsonl"
            self._metrics = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        return self._metrics

    def _epochs(self, kind: str) -> list[int]:
        return sorted(int(p.stem.split("_")[-1]) for p in (self.dir / "snapshots").glob(f"{kind}_epoch_*.pt"))

    def snapshot_epochs(self) -> list[int]:
        """Epochs that have a generator snapshot."""
        return self._epochs("G")

    def discriminator_epochs(self) -> list[int]:
        """Epochs that have a discriminator snapshot (the last fifth of training)."""
        return self._epochs("D")

    def at(self, epoch: int | None) -> "Run":
        """This run with its model taken at ``epoch``: :meth:`generator` and :meth:`discriminator` then
        default to that snapshot (None: the final nets). How a chapter uses a selected snapshot."""
        if epoch is not None and epoch not in self.snapshot_epochs():
            raise FileNotFoundError(f"no snapshot for epoch {epoch} in {self.dir}; have {self.snapshot_epochs()}")
        return replace(self, epoch=epoch)

    def generator(self, epoch: int | None = None) -> Generator:
        """G after ``epoch`` (1-based), or the run's model (:meth:`at`; by default the final G); CPU, fp32, eval."""
        epoch = self.epoch if epoch is None else epoch
        if epoch is None:
            return load_generator(self.dir / "G.pt")
        p = self.dir / "snapshots" / f"G_epoch_{epoch:03d}.pt"
        if not p.exists():
            raise FileNotFoundError(f"no generator snapshot for epoch {epoch} in {self.dir}; have {self.snapshot_epochs()}")
        return load_generator(p)

    def discriminator(self, epoch: int | None = None) -> Discriminator:
        """D after ``epoch`` (snapshots exist over the last fifth of training), or the run's model (:meth:`at`;
        by default the final D); CPU, fp32, eval mode."""
        epoch = self.epoch if epoch is None else epoch
        if epoch is None or (epoch == self.epochs_done and not self.discriminator_epochs()):
            return load_discriminator(self.dir / "D.pt")
        p = self.dir / "snapshots" / f"D_epoch_{epoch:03d}.pt"
        if not p.exists():
            raise FileNotFoundError(f"no discriminator snapshot for epoch {epoch} in {self.dir}; have "
                                    f"{self.discriminator_epochs()}")
        return load_discriminator(p)

    def fixed_noise(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fixed noise batch (and labels, for conditional runs) behind the sample grids."""
        s = torch.load(self.dir / "fixed_noise.pt", map_location="cpu", weights_only=True)
        return s["z"], s.get("y")

    def sample_grid_path(self, epoch: int) -> Path:
        return self.dir / "samples" / f"epoch_{epoch:03d}.png"

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}, epochs_done={self.epochs_done}, steps={self.steps}, diverged={self.diverged})"


def last_fifth_start(epochs: int) -> int:
    """First epoch of the last fifth of ``epochs`` (at least three epochs where there are three): the span of
    the quality gate's convergence test and of the snapshots a model may be selected from."""
    start = max(1, round(0.8 * epochs))
    start = min(start, epochs - 1) if epochs > 1 else epochs
    return min(start, epochs - 2) if epochs >= 3 else start


def load_run(path: str | Path) -> Run:
    """Open a finished run folder."""
    path = Path(path)
    info_p = path / "run.json"
    if not info_p.is_file():
        raise FileNotFoundError(f"{path} is not a finished run (no run.json); train it with dcgan.train.train(cfg)")
    info = json.loads(info_p.read_text())
    return Run(path, TrainConfig.from_dict(info["config"]), info)


# ----------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1


def _dist_from_env() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _barrier(d: _Dist) -> None:
    if d.on:
        import torch.distributed as dist

        dist.barrier()


# ----------------------------------------------------------------------------- training


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # say why nothing seems to happen, then wait
            print(f"waiting for another process that is training the same config (lock {path}); its run will be "
                  "used when it finishes", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def train(
    cfg: TrainConfig,
    runs_root: str | Path | None = None,
    progress: bool = True,
    *,
    init_g: str | Path | None = None,
    init_d: str | Path | None = None,
    device: str | torch.device | None = None,
    _stop_after: int | None = None,
) -> Run:
    """Train ``cfg`` (or return the cached run) and return the :class:`Run`.

    ``runs_root`` defaults to ``$DCGAN_RUNS`` or ``<repo>/runs``. A killed run
    resumes from its last checkpoint in ``runs/.partial``. ``init_g``/``init_d``
    start from saved weights (pytorch/examples' ``--netG/--netD``); they are
    part of the cache key through their file hash. ``_stop_after`` (tests)
    simulates a kill after that many steps (nothing is written at that point).
    """
    root = Path(runs_root) if runs_root is not None else _default_runs_root()
    validate(cfg, init_g, init_d)  # before any folder is made: a bad input leaves nothing behind
    name = run_name(cfg, init_g, init_d)
    final = root / name
    if (final / "run.json").is_file():
        return load_run(final)
    dist = _dist_from_env()
    partial = root / ".partial" / name
    lock = root / ".locks" / f"{name}.lock"
    ctx = _file_lock(lock) if dist.main else contextlib.nullcontext()
    with ctx:
        if (final / "run.json").is_file():  # another process finished it while we waited
            return load_run(final)
        if dist.main:
            partial.mkdir(parents=True, exist_ok=True)
        _barrier(dist)
        was_det = torch.are_deterministic_algorithms_enabled()
        try:
            finished = _train_in(cfg, partial, progress, dist, init_g, init_d, device, _stop_after)
        except BaseException:
            if dist.main:
                _drop_unresumable(partial)
            raise
        finally:
            torch.use_deterministic_algorithms(was_det)
        _barrier(dist)
        if not finished:
            raise SimulatedKill(f"stopped after {_stop_after} steps (test hook); resume by calling train again")
        if dist.main:
            os.replace(partial, final)
        _barrier(dist)
    return load_run(final)


_WORKER = ("import json, sys, torch; from dcgan.train import TrainConfig, train; "
           "torch.set_num_threads(int(sys.argv[3])); "
           "train(TrainConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2], progress=False)")


def train_many(cfgs: list[TrainConfig], runs_root: str | Path | None = None, progress: bool = True,
               workers: int | None = None) -> list[Run]:
    """Train several configs (or load them from the cache), ``workers`` at a time; the runs in ``cfgs``' order.

    The book's small nets (32x32, widths 16-32) are bound by per-op overhead,
    not FLOPs, so two one-thread processes on two cores train more images a
    second than one two-thread process (``bench/train_throughput.py`` measures
    both). ``workers`` None: one per thread torch uses here (``torch.get_num_threads()``),
    at most one per run still to train; each worker process gets an equal share
    of the threads. With one worker (one thread, e.g. the single-threaded
    ``smoke`` profile) the runs train one after another in this process. Each
    run is what :func:`train` makes of its config (same cache key), up to the
    float rounding of another thread count. Workers are fresh interpreters
    (``python -c``), so this works the same from a script, a notebook or the CLI.
    """
    import subprocess

    root = Path(runs_root) if runs_root is not None else _default_runs_root()
    for cfg in cfgs:
        validate(cfg)  # every bad config fails before any training starts
    todo = list({run_name(c): c for c in cfgs if not (root / run_name(c) / "run.json").is_file()}.values())
    threads = torch.get_num_threads()
    workers = max(1, min(workers or threads, len(todo)))
    if workers > 1:
        from tqdm.auto import tqdm

        per = str(max(1, threads // workers))
        env = {**os.environ, "OMP_NUM_THREADS": per}
        queue, active, failed = list(todo), [], []
        bar = tqdm(total=len(todo), desc=f"training ({workers} processes)", disable=not progress)
        with tempfile.TemporaryDirectory() as logs, contextlib.ExitStack() as stop:
            # an interrupted caller (Ctrl-C, a killed kernel) stops its workers: their runs resume next time
            stop.callback(lambda: [p.kill() for _, p, _ in active if p.poll() is None])
            while queue or active:
                while queue and len(active) < workers:
                    c = queue.pop(0)
                    log = Path(logs) / f"{run_name(c)}.err"
                    with open(log, "w") as err:  # a file, not a pipe: a chatty worker can never block on it
                        p = subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(c.to_dict()), str(root), per],
                                             env=env, stdout=subprocess.DEVNULL, stderr=err)
                    active.append((c, p, log))
                done = [a for a in active if a[1].poll() is not None]
                if not done:
                    time.sleep(0.2)
                for c, p, log in done:
                    active.remove((c, p, log))
                    if p.returncode:
                        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
                        failed.append((c, tail[0] if tail else f"exit status {p.returncode}"))
                    bar.update()
        bar.close()
        if failed:
            c, why = failed[0]
            raise RuntimeError(f"{len(failed)} of {len(todo)} runs failed in their worker process; the first, "
                               f"{run_name(c)}: {why}")
    return [train(c, root, progress=progress) for c in cfgs]


def _drop_unresumable(partial: Path) -> None:
    """Remove a failed attempt's folder when it holds no checkpoint (nothing to resume; no empty leftovers)."""
    if not any((partial / "ckpt").glob("step_*.pt")):
        shutil.rmtree(partial, ignore_errors=True)


def _batches(n: int, batch: int, epoch: int, seed: int, dist: _Dist) -> list[torch.Tensor]:
    """This rank's index batches for ``epoch`` (DistributedSampler: the same on a resume)."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    idx = torch.tensor(list(sampler), dtype=torch.long)
    per = batch // dist.world
    nb = len(idx) // per
    return [idx[i * per : (i + 1) * per] for i in range(nb)]


def _load_data(cfg: TrainConfig):
    from .data import load_dataset

    ds = load_dataset(cfg.dataset, cfg.split, cfg.image_size)
    if ds.channels != cfg.model.channels:
        raise ValueError(
            f"{cfg.dataset} has {ds.channels} channel(s) but model.channels={cfg.model.channels}; "
            f"set ModelConfig(channels={ds.channels})"
        )
    images = ds.images
    labels = ds.labels
    if cfg.subset is not None:
        images = images[: cfg.subset]
        labels = labels[: cfg.subset] if labels is not None else None
    if cfg.model.n_classes:
        if labels is None:
            raise ValueError(f"{cfg.dataset} has no labels; a conditional model (n_classes>0) needs them")
        if len(ds.classes) != cfg.model.n_classes:
            raise ValueError(f"{cfg.dataset} has {len(ds.classes)} classes; set model.n_classes={len(ds.classes)}")
    return images, labels


def _save_grid(g: nn.Module, z: torch.Tensor, y: torch.Tensor | None, path: Path, nrow: int = 8) -> None:
    from torchvision.utils import save_image

    was = g.training
    g.eval()
    with torch.no_grad():
        x = g(z, y) if y is not None else g(z)
    g.train(was)
    save_image(x.float().cpu(), path, nrow=nrow, normalize=True, value_range=(-1, 1))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, path)
    except OSError as e:
        raise _write_failed(path, e) from e
    finally:
        tmp.unlink(missing_ok=True)  # a failed write leaves no temporary file behind


def _ranks_in_sync(dist: _Dist, *nets: nn.Module) -> bool:
    """DDP sanity check: every rank ends with the same parameters (compares a float64 checksum)."""
    if not dist.on:
        return True
    import torch.distributed as tdist

    c = torch.stack([torch.cat([p.detach().double().flatten().cpu() for p in n.parameters()]).sum() for n in nets])
    if torch.cuda.is_available():
        c = c.cuda()
    lo, hi = c.clone(), c.clone()
    tdist.all_reduce(lo, op=tdist.ReduceOp.MIN)
    tdist.all_reduce(hi, op=tdist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise RuntimeError(f"DDP ranks ended with different parameters (checksums {lo.tolist()} vs {hi.tolist()})")
    return True


# A step blew up when a loss passes this. BCE on a logit l that is wrong costs about |l|, so 1e4
# means D's logits reached 1e4: its weights exploded (lr 1e6 gives 1e13 from step 2). Healthy runs
# stay below ~20 (D winning: loss_g 10-15 for a while); even lr 1 peaks near 200.
_LOSS_BLOWUP = 1e4
# G is dead when this share of its output values is exactly +-1: tanh is saturated there, its gradient
# is 0, and G cannot learn again (lr 1e6: 100%). Healthy G's on the book's data keep far fewer at +-1
# (tiny runs at lr 2e-4: 0%, lr 0.1: <2%); even binary-looking MNIST has anti-aliased edges.
_SATURATED_SHARE = 0.999


def _check_blowup(loss_d: float, loss_g: float) -> str | None:
    """Why this step's losses end the run (non-finite, or exploded past :data:`_LOSS_BLOWUP`), or None."""
    if not (math.isfinite(loss_d) and math.isfinite(loss_g)):
        return "loss became non-finite"
    if max(abs(loss_d), abs(loss_g)) > _LOSS_BLOWUP:
        return f"loss exploded past {_LOSS_BLOWUP:g} (the weights blew up)"
    return None


def _g_saturated(G: nn.Module, z: torch.Tensor, y: torch.Tensor | None, device) -> str | None:
    """Why G is dead (its output saturated at exactly +-1 almost everywhere), or None.

    Measured on the fixed noise with batch statistics, as G trains (the running statistics of an
    early G are poorly calibrated, so eval mode would mislead), without updating them: the run's
    state stays bit-identical with or without this probe.
    """
    g = _unwrap(G)
    bns = [m for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    was = g.training
    try:
        for m in bns:
            m.track_running_stats = False  # batch statistics; running ones left alone
        g.train()
        with torch.no_grad():
            x = g(z.to(device), y.to(device) if y is not None else None)
    finally:
        for m in bns:
            m.track_running_stats = True
        g.train(was)
    share = float((x.float().abs() >= 1.0).float().mean())
    if share >= _SATURATED_SHARE:
        return f"G's output saturated ({share:.1%} of its values are exactly +-1, where tanh passes no gradient)"
    return None


def _kept_note(ckpt_dir: Path) -> str:
    """What is left to resume from, said truthfully (nothing when it failed before the first checkpoint)."""
    ckpts = sorted(ckpt_dir.glob("step_*.pt")) if ckpt_dir.exists() else []
    if ckpts:
        return f"the last checkpoint before it ({ckpts[-1].name}) is kept in {ckpt_dir}"
    return "it failed before the first checkpoint, so there is none to resume from"


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """BCE on D's logits against a constant label, in fp32 (the sigmoid of §3 lives here)."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def gan_step(
    G: nn.Module,
    D: nn.Module,
    optG: torch.optim.Optimizer,
    optD: torch.optim.Optimizer,
    real: torch.Tensor,
    z: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    nets: tuple[nn.Module, nn.Module] | None = None,
    freeze_d: bool = True,
) -> dict:
    """One DCGAN step as in pytorch/examples: D on a real and a fake batch, then G (non-saturating).

    ``nets`` are the wrapped (DDP/compiled) G and D to run; ``G``/``D`` the
    plain modules. An optimizer only steps on a finite loss, so a NaN leaves
    the weights as they were. Returns the step's losses, D(x), D(G(z)) before
    (``d_g_z``) and after (``d_g_z2``) D's update.
    """
    Gt, Dt = nets or (G, D)
    device = torch.device(device)
    cond = y is not None
    # --- D step: maximise log D(x) + log(1 - D(G(z)))
    optD.zero_grad(set_to_none=True)
    with _autocast(device, precision):
        out_real = Dt(real, y) if cond else Dt(real)
        loss_real = _bce(out_real, 1.0)
    loss_real.backward()
    with _autocast(device, precision):
        fake = Gt(z, y) if cond else Gt(z)
        out_fake = Dt(fake.detach(), y) if cond else Dt(fake.detach())
        loss_fake = _bce(out_fake, 0.0)
    loss_fake.backward()
    ld = float((loss_real + loss_fake).detach())
    lg, d_g_z2 = float("nan"), float("nan")
    if math.isfinite(ld):
        optD.step()
        # --- G step: maximise log D(G(z)) under the updated D
        optG.zero_grad(set_to_none=True)
        if freeze_d:  # D's weight grads are not needed here (DDP expects every grad: keep them there)
            D.requires_grad_(False)
        try:
            with _autocast(device, precision):
                out_g = Dt(fake, y) if cond else Dt(fake)
                loss_g = _bce(out_g, 1.0)
            loss_g.backward()
        finally:
            D.requires_grad_(True)
        lg = float(loss_g.detach())
        d_g_z2 = float(torch.sigmoid(out_g.detach().float()).mean())
        if math.isfinite(lg):
            optG.step()
    return {
        "loss_d": ld,
        "loss_g": lg,
        "d_x": float(torch.sigmoid(out_real.detach().float()).mean()),
        "d_g_z": float(torch.sigmoid(out_fake.detach().float()).mean()),
        "d_g_z2": d_g_z2,
    }


def _train_in(cfg, out: Path, progress: bool, dist: _Dist, init_g, init_d, device, stop_after) -> bool:
    from tqdm.auto import tqdm

    if device is None:
        device = torch.device(f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    precision = resolve_precision(cfg, device)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = False
    if cfg.sync_bn and device.type != "cuda":
        raise ValueError("sync_bn needs GPUs (SyncBatchNorm has no CPU kernels); drop sync_bn on CPU")
    if cfg.batch_size % dist.world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {dist.world} DDP ranks")

    images, labels = _load_data(cfg)
    n = images.shape[0]
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"only {n} images for batch_size {cfg.batch_size}: lower batch_size or raise subset")
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    # D is saved too over the last fifth: the snapshots a chapter may pick its model from (dcgan.gate.select_epoch)
    d_snapshots_from = last_fifth_start(-(-total // steps_per_epoch))

    torch.manual_seed(cfg.seed)
    G, D = build_models(cfg.model)
    if init_g:
        G.load_state_dict(_init_state(init_g, "G", G))
    if init_d:
        D.load_state_dict(_init_state(init_d, "D", D))
    mem = torch.channels_last if precision == "bf16" else torch.contiguous_format
    G.to(device, memory_format=mem)
    D.to(device, memory_format=mem)
    optG, optD = adam(G, cfg), adam(D, cfg)
    noise_gen = torch.Generator().manual_seed(cfg.seed + 1 + 7919 * dist.rank)  # each DDP rank its own z
    fixed_z = sample_noise(cfg.model, cfg.n_samples, torch.Generator().manual_seed(cfg.seed + 2))
    fixed_y = torch.arange(cfg.n_samples) % cfg.model.n_classes if cfg.model.n_classes else None

    ckpt_dir = out / "ckpt"
    metrics: list[dict] = []
    step = 0
    diverged = False
    ckpts = sorted(ckpt_dir.glob("step_*.pt")) if ckpt_dir.exists() else []
    if ckpts:  # resume
        state = load_checkpoint(ckpts[-1])
        if state.get("config_key") != config_key(cfg):
            raise CheckpointError(f"{ckpts[-1]} belongs to another config; delete {out} to start over")
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        optG.load_state_dict(state["optG"])
        optD.load_state_dict(state["optD"])
        noise_gen.set_state(state["noise_rng"])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        metrics = list(state["metrics"])
        diverged = bool(state.get("diverged", False))
    if dist.main:
        (out / "samples").mkdir(exist_ok=True)
        (out / "snapshots").mkdir(exist_ok=True)
        ckpt_dir.mkdir(exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
        torch.save({"z": fixed_z, **({"y": fixed_y} if fixed_y is not None else {})}, out / "fixed_noise.pt")

    Gt, Dt = G, D
    if dist.on:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if cfg.sync_bn:
            Gt = nn.SyncBatchNorm.convert_sync_batchnorm(Gt)
            Dt = nn.SyncBatchNorm.convert_sync_batchnorm(Dt)
        ids = [device.index] if device.type == "cuda" else None
        Gt, Dt = DDP(Gt, device_ids=ids), DDP(Dt, device_ids=ids)
    if cfg.compile:
        Gt, Dt = torch.compile(Gt), torch.compile(Dt)
    cond = cfg.model.n_classes > 0
    per_rank = cfg.batch_size // dist.world

    def checkpoint(keep: int = 2) -> None:
        if not dist.main:
            return
        save_checkpoint(
            ckpt_dir / f"step_{step:08d}.pt",
            {
                "config_key": config_key(cfg),
                "model_config": cfg.model.to_dict(),
                "step": step,
                "G": _cpu_state(G),
                "D": _cpu_state(D),
                "optG": optG.state_dict(),
                "optD": optD.state_dict(),
                "noise_rng": noise_gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "metrics": metrics,
                "diverged": diverged,
            },
        )
        _write_jsonl(out / "metrics.jsonl", metrics)
        for old in sorted(ckpt_dir.glob("step_*.pt"))[:-keep]:  # keep the last two
            old.unlink()

    def end_of_epoch(epoch: int) -> None:  # epoch is 1-based
        if not dist.main:
            return
        _atomic_save(_net_file(G, cfg.model, kind="G", epoch=epoch), out / "snapshots" / f"G_epoch_{epoch:03d}.pt")
        if epoch >= d_snapshots_from:
            _atomic_save(_net_file(D, cfg.model, kind="D", epoch=epoch), out / "snapshots" / f"D_epoch_{epoch:03d}.pt")
        if epoch == 1 or epoch % cfg.sample_every == 0 or epoch == cfg.epochs:
            g = _unwrap(G)
            g_cpu = Generator(cfg.model)
            g_cpu.load_state_dict(_cpu_state(g))
            _save_grid(g_cpu, fixed_z, fixed_y, out / "samples" / f"epoch_{epoch:03d}.png")

    bar = tqdm(total=total * cfg.batch_size, initial=step * cfg.batch_size, unit="img", unit_scale=True,
               disable=not (progress and dist.main), desc=out.name[:40], smoothing=0.1)
    t0 = time.perf_counter()
    step0 = step
    G.train()
    D.train()
    while step < total and not diverged:
        epoch = step // steps_per_epoch
        batches = _batches(n, cfg.batch_size, epoch, cfg.seed, dist)
        for b in range(step % steps_per_epoch, steps_per_epoch):
            if step >= total:
                break
            idx = batches[b]
            real = images[idx].to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
            if mem is torch.channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            y = labels[idx].to(device) if cond else None
            z = sample_noise(cfg.model, per_rank, noise_gen, device)
            st = gan_step(G, D, optG, optD, real, z, y, device=device, precision=precision, nets=(Gt, Dt),
                          freeze_d=not dist.on)
            ld, lg = st["loss_d"], st["loss_g"]
            why = _check_blowup(ld, lg)
            if why is None and ((step + 1) % steps_per_epoch == 0 or step + 1 == total
                                or (cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0)):
                why = _g_saturated(G, fixed_z, fixed_y, device)  # before each save: a dead G is never kept as good
            if why is not None:
                if cfg.nan_policy == "raise":
                    bar.close()
                    raise TrainingDiverged(
                        f"{why} at step {step} (loss_d={ld:.4g}, loss_g={lg:.4g}); {_kept_note(ckpt_dir)}. Lower lr, "
                        "use precision='fp32', or nan_policy='stop' to end the run marked diverged"
                    )
                diverged = True
                break
            step += 1
            metrics.append({"step": step, "epoch": epoch + (b + 1) / steps_per_epoch, **st})
            bar.update(cfg.batch_size)
            if step % steps_per_epoch == 0:
                end_of_epoch(step // steps_per_epoch)
                checkpoint()
            elif cfg.ckpt_every and step % cfg.ckpt_every == 0:
                checkpoint()
            if stop_after is not None and step - step0 >= stop_after and step < total:
                bar.close()  # simulated kill: nothing more is written
                return False
    bar.close()
    elapsed = time.perf_counter() - t0
    epochs_done = step // steps_per_epoch
    in_sync = _ranks_in_sync(dist, G, D)
    if dist.main:
        if step % steps_per_epoch and not diverged:  # max_steps stopped mid-epoch: still keep a final grid
            g_cpu = Generator(cfg.model)
            g_cpu.load_state_dict(_cpu_state(G))
            _save_grid(g_cpu, fixed_z, fixed_y, out / "samples" / "final.png")
        checkpoint()
        _atomic_save(_net_file(G, cfg.model, kind="G", epoch=epochs_done, step=step), out / "G.pt")
        _atomic_save(_net_file(D, cfg.model, kind="D", epoch=epochs_done, step=step), out / "D.pt")
        info = {
            "config": cfg.to_dict(),
            "config_key": config_key(cfg),
            "code_version": CODE_VERSION,
            "steps": step,
            "steps_per_epoch": steps_per_epoch,
            "epochs_done": epochs_done,
            "diverged": diverged,
            "precision": precision,
            "device": str(device),
            "world_size": dist.world,
            "ddp_params_in_sync": in_sync,
            "torch": torch.__version__,
            "seconds_last_session": elapsed,
            "img_per_s_last_session": (step - step0) * cfg.batch_size / elapsed if elapsed > 0 else None,
        }
        (out / "run.json").write_text(json.dumps(info, indent=2))
    return True
