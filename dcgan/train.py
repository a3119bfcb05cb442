"""DCGAN training engine (paper §4 "Training details"): the loop around :func:`dcgan.step.gan_step`.

The recipe is pytorch/examples' ``dcgan/main.py`` (Adam lr 2e-4, betas (0.5, 0.999), batch 128,
BCE on D's logits, G's non-saturating loss). Around it:

* a run folder (``config.json``, ``metrics.jsonl``, a fixed-noise sample grid per epoch, a G
  snapshot per epoch, final ``G.pt`` and ``D.pt``) and checkpoints of G, D, both optimizers, RNG
  states and the step (:mod:`dcgan.checkpoints`); a killed run resumes to bit-identical weights on
  CPU with ``deterministic=True`` (fp32);
* a cache: :func:`train` on a config already trained on the same data returns that run
  (:func:`dcgan.config.cache_key`: the config, :data:`~dcgan.config.CODE_VERSION`, the data's
  fingerprint); training happens in ``runs/.partial/<key>`` under a file lock and is renamed into
  place when done, so two processes never train the same config twice;
* divergence (:mod:`dcgan.divergence`) raises :class:`TrainingDiverged` or ends the run marked
  ``diverged``, so a blown-up run is never cached as a good one;
* fast paths: bf16 autocast + channels_last where :mod:`dcgan.precision` says bf16 is native,
  optional ``torch.compile``; DDP under ``torchrun`` (:mod:`dcgan.distributed`); several runs in
  worker processes (:mod:`dcgan.workers`).

The loop's phases are named functions over a :class:`_Loop` state: set-up, build, resume, wrap,
an epoch, one step, the divergence check, an epoch's end (snapshots), a checkpoint, the finish.
Their time is recorded by :mod:`dcgan.timing` as phases of "training": "set-up", "steps" (the step and its
divergence check) and "snapshots and checkpoints" (an epoch's end, a checkpoint, the finish); a worker
process's phases reach the parent's (:mod:`dcgan.workers`).
The public names of :mod:`dcgan.step`, :mod:`dcgan.divergence`, :mod:`dcgan.config`,
:mod:`dcgan.checkpoints` and ``cpu_supports_bf16`` are re-exported, so
``from dcgan.train import TrainConfig, preset, load_run, gan_step, adam`` keeps working.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

# Re-exported: these lived here before the split, and users, notebooks and tests import them from here.
from .checkpoints import (CheckpointError, Run, _cpu_state, _init_state, _net_file, _save_grid, _unwrap, _write_jsonl,
                          atomic_save, last_fifth_start, load_checkpoint, load_discriminator, load_generator, load_run,
                          save_checkpoint)
from .config import CODE_VERSION, PRESETS, TrainConfig, cache_key, config_key, preset, run_name
from .distributed import _barrier, _batches, _Dist, _dist_from_env, _ranks_in_sync
from .divergence import TrainingDiverged, _check_blowup, _g_saturated, _kept_note
from .models import Discriminator, Generator, build_models, sample_noise
from .paths import runs_root as _default_runs_root
from .precision import cpu_supports_bf16, default_device
from .precision import resolve_precision as _resolve_precision
from .progress import bar as progress_bar
from .step import adam, gan_step
from .timing import phase, phased
from .workers import train_in_workers

__all__ = [
    # the engine
    "SimulatedKill", "train", "train_many", "validate", "resolve_precision",
    # re-exported from dcgan.step, dcgan.divergence, dcgan.config, dcgan.checkpoints and dcgan.precision
    "gan_step", "adam", "TrainingDiverged", "CODE_VERSION", "TrainConfig", "preset", "PRESETS", "config_key",
    "cache_key", "run_name", "CheckpointError", "Run", "load_run", "last_fifth_start", "save_checkpoint",
    "load_checkpoint", "load_generator", "load_discriminator", "cpu_supports_bf16",
]


class SimulatedKill(RuntimeError):
    """Raised by ``train(..., _stop_after=n)``: the tests' stand-in for a killed process."""


# ----------------------------------------------------------------------------- precision, checks


def resolve_precision(cfg: TrainConfig, device: torch.device) -> str:
    """'fp32' or 'bf16' for this config on this device ('auto': bf16 where fast, fp32 when deterministic).

    The policy is :func:`dcgan.precision.resolve_precision`; this reads it off the config.
    """
    return _resolve_precision(cfg.precision, device, cfg.deterministic)


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


# ----------------------------------------------------------------------------- train, train_many


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


@phased("training")  # the whole call (a cached run: loading it); nested: set-up, steps, snapshots
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


@phased("training")
def train_many(cfgs: list[TrainConfig], runs_root: str | Path | None = None, progress: bool = True,
               workers: int | None = None) -> list[Run]:
    """Train several configs (or load them from the cache), ``workers`` at a time; the runs in ``cfgs``' order.

    ``workers`` None: one per thread torch uses here (``torch.get_num_threads()``), at most one per
    run still to train, each a process with an equal share of the threads (:mod:`dcgan.workers` says
    why that is faster for the book's small nets). With one worker (e.g. the single-threaded ``smoke``
    profile) the runs train one after another in this process. Each run is what :func:`train` makes
    of its config (same cache key), up to the float rounding of another thread count.
    """
    root = Path(runs_root) if runs_root is not None else _default_runs_root()
    for cfg in cfgs:
        validate(cfg)  # every bad config fails before any training starts
    todo = list({run_name(c): c for c in cfgs if not (root / run_name(c) / "run.json").is_file()}.values())
    threads = torch.get_num_threads()
    workers = max(1, min(workers or threads, len(todo)))
    if workers > 1:
        train_in_workers(todo, root, workers, threads, progress)
    return [train(c, root, progress=progress) for c in cfgs]


def _drop_unresumable(partial: Path) -> None:
    """Remove a failed attempt's folder when it holds no checkpoint (nothing to resume; no empty leftovers)."""
    if not any((partial / "ckpt").glob("step_*.pt")):
        shutil.rmtree(partial, ignore_errors=True)


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


# ----------------------------------------------------------------------------- the loop


@dataclass
class _Loop:
    """What the loop's phases share: the run, its data and schedule, the nets and optimizers, and where it is."""

    cfg: TrainConfig
    out: Path
    dist: _Dist
    device: torch.device
    precision: str
    images: torch.Tensor
    labels: torch.Tensor | None
    steps_per_epoch: int
    total: int  # steps in the whole run
    d_snapshots_from: int  # first epoch whose D is saved (the last fifth: dcgan.gate.select_epoch picks from it)
    G: nn.Module
    D: nn.Module
    optG: torch.optim.Optimizer
    optD: torch.optim.Optimizer
    noise_gen: torch.Generator
    fixed_z: torch.Tensor
    fixed_y: torch.Tensor | None
    mem: torch.memory_format
    Gt: nn.Module | None = None  # what runs: G and D wrapped (DDP, compile) by _wrap
    Dt: nn.Module | None = None
    step: int = 0
    metrics: list[dict] = field(default_factory=list)
    diverged: bool = False

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "ckpt"


def _set_up(cfg: TrainConfig, dist: _Dist, device) -> tuple[torch.device, str]:
    """The device (each DDP rank its own GPU) and precision; determinism; what the device cannot do, refused."""
    if device is None:
        device = default_device(dist.local_rank)
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
    return device, precision


def _build(cfg: TrainConfig, out: Path, dist: _Dist, device: torch.device, precision: str,
           init_g, init_d) -> _Loop:
    """The data and schedule, G and D (seeded, or from ``init_g``/``init_d``), §4's optimizers, the noise."""
    images, labels = _load_data(cfg)
    n = images.shape[0]
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"only {n} images for batch_size {cfg.batch_size}: lower batch_size or raise subset")
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
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
    return _Loop(cfg, out, dist, device, precision, images, labels, steps_per_epoch, total,
                 last_fifth_start(-(-total // steps_per_epoch)), G, D, optG, optD, noise_gen, fixed_z, fixed_y, mem)


def _resume(lp: _Loop) -> None:
    """Load the last checkpoint of an interrupted run, if any: nets, optimizers, RNG states, step, metrics."""
    ckpts = sorted(lp.ckpt_dir.glob("step_*.pt")) if lp.ckpt_dir.exists() else []
    if not ckpts:
        return
    state = load_checkpoint(ckpts[-1])
    if state.get("config_key") != config_key(lp.cfg):
        raise CheckpointError(f"{ckpts[-1]} belongs to another config; delete {lp.out} to start over")
    lp.G.load_state_dict(state["G"])
    lp.D.load_state_dict(state["D"])
    lp.optG.load_state_dict(state["optG"])
    lp.optD.load_state_dict(state["optD"])
    lp.noise_gen.set_state(state["noise_rng"])
    torch.set_rng_state(state["torch_rng"])
    lp.step = int(state["step"])
    lp.metrics = list(state["metrics"])
    lp.diverged = bool(state.get("diverged", False))


def _prepare_folder(lp: _Loop) -> None:
    """The run folder's layout, its ``config.json`` and the fixed noise of its sample grids (rank 0)."""
    if not lp.dist.main:
        return
    for sub in ("samples", "snapshots", "ckpt"):
        (lp.out / sub).mkdir(exist_ok=True)
    (lp.out / "config.json").write_text(json.dumps(lp.cfg.to_dict(), indent=2, sort_keys=True))
    extra = {"y": lp.fixed_y} if lp.fixed_y is not None else {}
    torch.save({"z": lp.fixed_z, **extra}, lp.out / "fixed_noise.pt")


def _wrap(lp: _Loop) -> None:
    """What runs the step: G and D as they are, in DDP (optionally SyncBatchNorm) and/or ``torch.compile``."""
    Gt, Dt = lp.G, lp.D
    if lp.dist.on:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if lp.cfg.sync_bn:
            Gt = nn.SyncBatchNorm.convert_sync_batchnorm(Gt)
            Dt = nn.SyncBatchNorm.convert_sync_batchnorm(Dt)
        ids = [lp.device.index] if lp.device.type == "cuda" else None
        Gt, Dt = DDP(Gt, device_ids=ids), DDP(Dt, device_ids=ids)
    if lp.cfg.compile:
        Gt, Dt = torch.compile(Gt), torch.compile(Dt)
    lp.Gt, lp.Dt = Gt, Dt


def _train_in(cfg, out: Path, progress: bool, dist: _Dist, init_g, init_d, device, stop_after) -> bool:
    """Train in ``out`` (the run's partial folder) to the end; False when the tests' ``stop_after`` ended it."""
    with phase("set-up"):  # data, nets, a resumed checkpoint
        lp = _build(cfg, out, dist, *_set_up(cfg, dist, device), init_g, init_d)
        _resume(lp)
        _prepare_folder(lp)
        _wrap(lp)
    bar = progress_bar(total=lp.total * cfg.batch_size, initial=lp.step * cfg.batch_size, unit="img", unit_scale=True,
               disable=not (progress and dist.main), desc=out.name[:40], smoothing=0.1)
    t0, step0 = time.perf_counter(), lp.step
    lp.G.train()
    lp.D.train()
    try:
        while lp.step < lp.total and not lp.diverged:
            if not _run_epoch(lp, bar, stop_after, step0):
                return False  # simulated kill: nothing more is written
    finally:
        bar.close()
    with phase("snapshots and checkpoints"):
        _finish(lp, time.perf_counter() - t0, step0)
    return True


def _run_epoch(lp: _Loop, bar, stop_after: int | None, step0: int) -> bool:
    """Train from ``lp.step`` to the end of its epoch (or of the run, or a divergence); False: the simulated kill."""
    spe = lp.steps_per_epoch
    epoch = lp.step // spe
    batches = _batches(lp.images.shape[0], lp.cfg.batch_size, epoch, lp.cfg.seed, lp.dist)
    for b in range(lp.step % spe, spe):
        if lp.step >= lp.total:
            break
        with phase("steps"):
            stats = _train_step(lp, batches[b])  # (1) D on a real and a fake batch, (2) G: dcgan.step.gan_step
            healthy = _healthy(lp, stats)  # (3) divergence checks: raise, or end the run marked diverged
        if not healthy:
            break
        lp.step += 1
        lp.metrics.append({"step": lp.step, "epoch": epoch + (b + 1) / spe, **stats})
        bar.update(lp.cfg.batch_size)
        if lp.step % spe == 0:  # (4) an epoch's end: snapshots and a checkpoint
            with phase("snapshots and checkpoints"):
                _end_of_epoch(lp, lp.step // spe)
                _save_checkpoint(lp)
        elif lp.cfg.ckpt_every and lp.step % lp.cfg.ckpt_every == 0:
            with phase("snapshots and checkpoints"):
                _save_checkpoint(lp)
        if stop_after is not None and lp.step - step0 >= stop_after and lp.step < lp.total:
            return False
    return True


def _train_step(lp: _Loop, idx: torch.Tensor) -> dict:
    """One step on the images ``idx``: a real batch in [-1, 1], fresh noise, :func:`dcgan.step.gan_step`."""
    real = lp.images[idx].to(lp.device, non_blocking=True).float().div_(127.5).sub_(1.0)
    if lp.mem is torch.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    y = lp.labels[idx].to(lp.device) if lp.cfg.model.n_classes > 0 else None
    z = sample_noise(lp.cfg.model, lp.cfg.batch_size // lp.dist.world, lp.noise_gen, lp.device)
    return gan_step(lp.G, lp.D, lp.optG, lp.optD, real, z, y, device=lp.device, precision=lp.precision,
                    nets=(lp.Gt, lp.Dt), freeze_d=not lp.dist.on)


def _healthy(lp: _Loop, stats: dict) -> bool:
    """False (run marked diverged) or :class:`TrainingDiverged` when the step blew up or G died (:mod:`dcgan.divergence`).

    G's saturation is probed before each save, so a dead G is never kept as good.
    """
    ld, lg = stats["loss_d"], stats["loss_g"]
    why = _check_blowup(ld, lg)
    nxt, every = lp.step + 1, lp.cfg.ckpt_every
    if why is None and (nxt % lp.steps_per_epoch == 0 or nxt == lp.total or (every and nxt % every == 0)):
        why = _g_saturated(lp.G, lp.fixed_z, lp.fixed_y, lp.device)
    if why is None:
        return True
    if lp.cfg.nan_policy == "raise":
        raise TrainingDiverged(
            f"{why} at step {lp.step} (loss_d={ld:.4g}, loss_g={lg:.4g}); {_kept_note(lp.ckpt_dir)}. Lower lr, "
            "use precision='fp32', or nan_policy='stop' to end the run marked diverged"
        )
    lp.diverged = True
    return False


def _save_checkpoint(lp: _Loop, keep: int = 2) -> None:
    """A resumable checkpoint (rank 0) and the metrics so far; only the last ``keep`` checkpoints stay."""
    if not lp.dist.main:
        return
    state = {
        "config_key": config_key(lp.cfg),
        "model_config": lp.cfg.model.to_dict(),
        "step": lp.step,
        "G": _cpu_state(lp.G),
        "D": _cpu_state(lp.D),
        "optG": lp.optG.state_dict(),
        "optD": lp.optD.state_dict(),
        "noise_rng": lp.noise_gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "metrics": lp.metrics,
        "diverged": lp.diverged,
    }
    save_checkpoint(lp.ckpt_dir / f"step_{lp.step:08d}.pt", state)
    _write_jsonl(lp.out / "metrics.jsonl", lp.metrics)
    for old in sorted(lp.ckpt_dir.glob("step_*.pt"))[:-keep]:
        old.unlink()


def _grid(lp: _Loop, name: str) -> None:
    """G's samples for the fixed noise, drawn by a CPU copy of G, as ``samples/<name>``."""
    g_cpu = Generator(lp.cfg.model)
    g_cpu.load_state_dict(_cpu_state(_unwrap(lp.G)))
    _save_grid(g_cpu, lp.fixed_z, lp.fixed_y, lp.out / "samples" / name)


def _end_of_epoch(lp: _Loop, epoch: int) -> None:
    """Snapshots of G (every epoch) and D (the last fifth), and a sample grid every ``sample_every`` epochs."""
    if not lp.dist.main:
        return
    snaps = lp.out / "snapshots"
    atomic_save(_net_file(lp.G, lp.cfg.model, kind="G", epoch=epoch), snaps / f"G_epoch_{epoch:03d}.pt")
    if epoch >= lp.d_snapshots_from:
        atomic_save(_net_file(lp.D, lp.cfg.model, kind="D", epoch=epoch), snaps / f"D_epoch_{epoch:03d}.pt")
    if epoch == 1 or epoch % lp.cfg.sample_every == 0 or epoch == lp.cfg.epochs:
        _grid(lp, f"epoch_{epoch:03d}.png")


def _finish(lp: _Loop, elapsed: float, step0: int) -> None:
    """The last checkpoint, ``G.pt``/``D.pt`` and ``run.json`` (what was run, on what, how fast)."""
    cfg, step = lp.cfg, lp.step
    epochs_done = step // lp.steps_per_epoch
    in_sync = _ranks_in_sync(lp.dist, lp.G, lp.D)
    if not lp.dist.main:
        return
    if step % lp.steps_per_epoch and not lp.diverged:  # max_steps stopped mid-epoch: still keep a final grid
        _grid(lp, "final.png")
    _save_checkpoint(lp)
    atomic_save(_net_file(lp.G, cfg.model, kind="G", epoch=epochs_done, step=step), lp.out / "G.pt")
    atomic_save(_net_file(lp.D, cfg.model, kind="D", epoch=epochs_done, step=step), lp.out / "D.pt")
    info = {
        "config": cfg.to_dict(), "config_key": config_key(cfg), "code_version": CODE_VERSION,
        "steps": step, "steps_per_epoch": lp.steps_per_epoch, "epochs_done": epochs_done,
        "diverged": lp.diverged, "precision": lp.precision, "device": str(lp.device),
        "world_size": lp.dist.world, "ddp_params_in_sync": in_sync, "torch": torch.__version__,
        "seconds_last_session": elapsed,
        "img_per_s_last_session": (step - step0) * cfg.batch_size / elapsed if elapsed > 0 else None,
    }
    (lp.out / "run.json").write_text(json.dumps(info, indent=2))
