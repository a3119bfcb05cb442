"""Checkpoint and run-folder I/O (infrastructure: no paper section; it keeps §4's runs safe to reuse).

* Writes are atomic (:func:`atomic_save`: a temporary file, ``fsync``, then ``os.replace``), so a
  crash or a full disk mid-write leaves the previous file intact, and a failed write says which
  file and how much space is left (:class:`CheckpointError`).
* Reads use ``torch.load(..., weights_only=True)``: a checkpoint can hold tensors and plain
  containers only, never pickled code.
* The formats: ``"dcgan-ckpt"`` (a training checkpoint: G, D, both optimizers, RNG states, step,
  metrics; :func:`save_checkpoint`), ``"dcgan-net"`` (one net and its :class:`ModelConfig`:
  ``G.pt``, ``D.pt``, the per-epoch snapshots), and pytorch/examples' bare state_dicts
  (``netG_epoch_N.pth``), whose architecture is read off the tensor shapes.
* :class:`Run` is a finished run folder (:func:`load_run`): its config, its metrics, its
  generator and discriminator at any saved epoch; while it trains, its ``metrics.jsonl``
  (:func:`_write_jsonl`, atomic too) and a sample grid per epoch (:func:`_save_grid`).

``from dcgan.train import load_generator, load_run, Run, ...`` keeps working.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import CODE_VERSION, TrainConfig
from .models import Discriminator, Generator, ModelConfig

__all__ = [
    "CheckpointError",
    "atomic_save",
    "save_checkpoint",
    "load_checkpoint",
    "load_generator",
    "load_discriminator",
    "Run",
    "load_run",
    "last_fifth_start",
]


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, truncated or not one of ours, or could not be written (full disk)."""


# ----------------------------------------------------------------------------- writing


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


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically: a temporary file beside it, ``fsync``, then ``os.replace``.

    A crash mid-write leaves the previous file (or none); a failed write raises :class:`CheckpointError`
    naming the file and the free space, and leaves no temporary file behind. One implementation for
    every file the library caches (checkpoints, snapshots, the metrics' classifiers).
    """
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
    atomic_save({"format": "dcgan-ckpt", "code_version": CODE_VERSION, **state}, path)


def _save_grid(g: nn.Module, z: torch.Tensor, y: torch.Tensor | None, path: Path, nrow: int = 8) -> None:
    """G's samples for the noise ``z`` (labels ``y``), in eval mode, as one PNG grid (a run's per-epoch picture)."""
    from torchvision.utils import save_image

    was = g.training
    g.eval()
    with torch.no_grad():
        x = g(z, y) if y is not None else g(z)
    g.train(was)
    save_image(x.float().cpu(), path, nrow=nrow, normalize=True, value_range=(-1, 1))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` as JSON lines atomically (a run's ``metrics.jsonl``); a failed write names the disk."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, path)
    except OSError as e:
        raise _write_failed(path, e) from e
    finally:
        tmp.unlink(missing_ok=True)  # a failed write leaves no temporary file behind


# ----------------------------------------------------------------------------- reading


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
    """One net as a ``"dcgan-net"`` file: its config travels with it, so it loads without the run."""
    return {"format": "dcgan-net", "model_config": cfg.to_dict(), "state_dict": _cpu_state(net), **extra}


def _cpu_state(net: nn.Module) -> dict:
    """A CPU copy of the plain module's state_dict: files load on any machine, and stay apart from training."""
    net = _unwrap(net)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}


def _unwrap(net: nn.Module) -> nn.Module:
    """The plain module under torch.compile and DDP wrappers (their state_dict keys carry prefixes)."""
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



def load_discriminator(path: str | Path) -> Discriminator:
    """A discriminator (CPU, fp32, eval mode) from ``D.pt`` or a ``snapshots/D_epoch_*.pt``."""
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

