"""DCGAN training engine (paper §4 "Training details").

The loop follows pytorch/examples' ``dcgan/main.py``: Adam(lr 2e-4,
betas (0.5, 0.999)), batch 128, BCE on D's logits (real label 1, fake 0), G
trained with the non-saturating loss ``-log D(G(z))``. Around it:

* a run folder (``config.json``, ``metrics.jsonl``, a fixed-noise sample grid
  per epoch, a G snapshot per epoch for per-epoch metrics, final ``G.pt`` and
  ``D.pt``);
* checkpoints of G, D, both optimizers, RNG states and the step
  (:mod:`dcgan.checkpoints`: atomic writes, ``weights_only=True`` reads);
  a killed run resumes to bit-identical weights on CPU with
  ``deterministic=True`` (fp32);
* a cache: :func:`train` on a config that was already trained on the same data
  returns that run (:func:`dcgan.config.cache_key` hashes the config,
  :data:`~dcgan.config.CODE_VERSION` and a fingerprint of the data's files);
  training happens in ``runs/.partial/<key>`` under a file lock and is renamed
  into place when done, so two processes never train the same config twice;
* NaN/inf losses, exploded ones (|loss| > 1e4) and a G saturated at +-1 raise
  :class:`TrainingDiverged` (``nan_policy="raise"``) or end the run marked
  ``diverged`` (``"stop"``), so a blown-up run is never cached as a good one;
* fast paths: bf16 autocast + channels_last where :mod:`dcgan.precision` says
  bf16 is native (CPUs with bf16 kernels, GPUs), optional ``torch.compile``;
  DDP when launched by ``torchrun`` (DistributedSampler, rank-0
  logging/checkpoints, optional SyncBatchNorm).

What a run is lives in :mod:`dcgan.config` (:class:`TrainConfig`, the presets,
the cache key) and how it is stored in :mod:`dcgan.checkpoints` (:class:`Run`,
:func:`load_run`, :func:`load_generator`, ...). This module re-exports those
names, and :func:`cpu_supports_bf16` from :mod:`dcgan.precision`, so
``from dcgan.train import TrainConfig, preset, load_run`` keeps working.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

# Re-exported: these lived here before the split, and users, notebooks and tests import them from here.
from .checkpoints import (
    CheckpointError,
    Run,
    _cpu_state,
    _init_state,
    _net_file,
    _unwrap,
    _write_failed,
    atomic_save,
    last_fifth_start,
    load_checkpoint,
    load_discriminator,
    load_generator,
    load_run,
    save_checkpoint,
)
from .config import CODE_VERSION, PRESETS, TrainConfig, cache_key, config_key, preset, run_name
from .models import Discriminator, Generator, build_models, sample_noise
from .paths import runs_root as _default_runs_root
from .precision import autocast, cpu_supports_bf16, default_device
from .precision import resolve_precision as _resolve_precision

__all__ = [
    # the engine
    "TrainingDiverged",
    "SimulatedKill",
    "train",
    "train_many",
    "validate",
    "resolve_precision",
    "gan_step",
    "adam",
    # re-exported from dcgan.config, dcgan.checkpoints and dcgan.precision
    "CODE_VERSION",
    "TrainConfig",
    "preset",
    "PRESETS",
    "config_key",
    "cache_key",
    "run_name",
    "CheckpointError",
    "Run",
    "load_run",
    "last_fifth_start",
    "save_checkpoint",
    "load_checkpoint",
    "load_generator",
    "load_discriminator",
    "cpu_supports_bf16",
]


class TrainingDiverged(FloatingPointError):
    """A loss became NaN/inf or exploded, or G saturated (nan_policy="raise"); earlier checkpoints are kept."""


class SimulatedKill(RuntimeError):
    """Raised by ``train(..., _stop_after=n)``: the tests' stand-in for a killed process."""


# ----------------------------------------------------------------------------- precision, optimiser, checks


def resolve_precision(cfg: TrainConfig, device: torch.device) -> str:
    """'fp32' or 'bf16' for this config on this device ('auto': bf16 where fast, fp32 when deterministic).

    The policy is :func:`dcgan.precision.resolve_precision`; this reads it off the config.
    """
    return _resolve_precision(cfg.precision, device, cfg.deterministic)


def adam(net: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """§4's optimiser for one net: Adam(lr, (beta1, beta2)), one fused kernel for all parameters.

    The default Adam on CPU loops over parameters in Python; the fused kernel
    (CPU and CUDA) does the same update in one call, which matters for the
    book's small nets, whose steps are bound by overhead rather than FLOPs.
    """
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in net.parameters())
    return torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused or None)


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
        backend = "nccl" if default_device().type == "cuda" else "gloo"
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
    c = c.to(default_device())  # NCCL reduces on the GPU
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
    (``d_g_z``) and after (``d_g_z2``) D's update. ``precision`` is applied with
    :func:`dcgan.precision.autocast` (pass a resolved one, :func:`resolve_precision`).
    """
    Gt, Dt = nets or (G, D)
    device = torch.device(device)
    cond = y is not None
    # --- D step: maximise log D(x) + log(1 - D(G(z)))
    optD.zero_grad(set_to_none=True)
    with autocast(precision, device):
        out_real = Dt(real, y) if cond else Dt(real)
        loss_real = _bce(out_real, 1.0)
    loss_real.backward()
    with autocast(precision, device):
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
            with autocast(precision, device):
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
        device = default_device(dist.local_rank)  # each DDP rank its own GPU
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
        atomic_save(_net_file(G, cfg.model, kind="G", epoch=epoch), out / "snapshots" / f"G_epoch_{epoch:03d}.pt")
        if epoch >= d_snapshots_from:
            atomic_save(_net_file(D, cfg.model, kind="D", epoch=epoch), out / "snapshots" / f"D_epoch_{epoch:03d}.pt")
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
        atomic_save(_net_file(G, cfg.model, kind="G", epoch=epochs_done, step=step), out / "G.pt")
        atomic_save(_net_file(D, cfg.model, kind="D", epoch=epochs_done, step=step), out / "D.pt")
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
