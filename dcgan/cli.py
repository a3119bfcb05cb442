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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
