"""Results registry: each chapter records its key numbers with their provenance.

A chapter calls :meth:`ResultsRecorder.record` for every number it reports;
the numbers go to ``<results_dir>/<chapter>.results.json`` next to the
executed notebook, and the book's results page is generated from all such
files (:func:`load_results`).
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from .paths import REPO_ROOT
from .provenance import hardware

__all__ = ["Result", "ResultsRecorder", "load_results", "results_dir", "compare_results", "Comparison", "is_timing"]


def results_dir() -> Path:
    """``$DCGAN_RESULTS_DIR`` (the runner sets it to the executed notebooks' folder) or ``<repo>/book``."""
    return Path(os.environ.get("DCGAN_RESULTS_DIR", REPO_ROOT / "book"))


@dataclass
class Result:
    chapter: str
    name: str  # short id, e.g. "svhn_1000_test_error"
    value: float | int | str
    paper: float | int | str | None  # the paper's number for the same quantity, if any
    unit: str  # e.g. "%", "FID", "img/s"
    dataset: str
    profile: str
    hardware: str
    seed: int | None
    claim: str = ""  # the paper's section it bears on, e.g. "§5.2" (book/paper.md)
    note: str = ""


class ResultsRecorder:
    """Collects one chapter's results and writes them atomically after every record."""

    def __init__(self, chapter: str, profile: str, seed: int | None, directory: str | Path | None = None):
        self.chapter, self.profile, self.seed = chapter, profile, seed
        self.path = Path(directory or results_dir()) / f"{chapter}.results.json"
        self.results: dict[str, Result] = {}

    def record(self, name: str, value, *, dataset: str, paper=None, unit: str = "", claim: str = "",
               note: str = "", seed: int | None = None):
        """Record ``value`` under ``name`` and return it (so a cell can glue it too)."""
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"result {name!r} is not finite ({value}); refusing to record it")
        if hasattr(value, "item"):
            value = value.item()
        self.results[name] = Result(self.chapter, name, value, paper, unit, dataset, self.profile, hardware(),
                                    self.seed if seed is None else seed, claim, note)
        self.save()
        return value

    def reuse(self, chapter: str, patterns: Sequence[str], directory: str | Path | None = None) -> list[Result]:
        """Re-record, under the same names, what ``chapter`` recorded under this profile (e.g. chapter 02's
        quality gates, ``emoji-32_gate*``), so this chapter's verdicts see them; [] when it has not run."""
        src = Path(directory or self.path.parent) / f"{chapter}.results.json"
        if not src.exists():
            return []
        out = []
        for r in (Result(**d) for d in json.loads(src.read_text())):
            if r.profile == self.profile and any(fnmatch.fnmatchcase(r.name, p) for p in patterns):
                note = f"from chapter {chapter}; {r.note}".strip("; ")
                self.results[r.name] = Result(self.chapter, r.name, r.value, r.paper, r.unit, r.dataset, self.profile,
                                              r.hardware, r.seed, r.claim, note)
                out.append(self.results[r.name])
        if out:
            self.save()
        return out

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps([asdict(r) for r in self.results.values()], indent=1))
        os.replace(tmp, self.path)


def load_results(directory: str | Path | None = None) -> list[Result]:
    """Every result recorded under ``directory`` (default :func:`results_dir`), chapter order."""
    d = Path(directory or results_dir())
    out: list[Result] = []
    for p in sorted(d.glob("*.results.json")):
        out.extend(Result(**r) for r in json.loads(p.read_text()))
    return out


# ---------------------------------------------------------------- results regression (make test)

TIMING_UNITS = ("s", "ms", "min", "h")
TIMING_WORDS = {"s", "ms", "seconds", "second", "time", "times", "minutes", "min", "hours", "throughput"}


def is_timing(r: Result) -> bool:
    """A wall-clock or throughput number: it moves with the machine's load, not with the code."""
    unit = r.unit.strip()
    return unit in TIMING_UNITS or unit.endswith("/s") or bool(TIMING_WORDS & set(r.name.lower().split("_")))


def same_value(a, b, rtol: float, atol: float) -> bool:
    """Floats within ``atol + rtol * |a|`` (either side a float); ints, bools and strings exactly."""
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool) or not (isinstance(a, num) and isinstance(b, num)):
        return type(a) is type(b) and a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=rtol, abs_tol=atol)


@dataclass
class Comparison:
    """What changed between two result sets, by (chapter, name)."""

    moved: list[tuple[str, str, object, object]]  # chapter, name, expected, actual
    missing: list[tuple[str, str]]  # in the expected set, not in the actual one
    new: list[tuple[str, str]]  # in the actual set only (not an error: regenerate the baseline to keep them)
    skipped: int  # timing results, not compared
    compared: int

    @property
    def ok(self) -> bool:
        return not self.moved and not self.missing

    def report(self, rtol: float, atol: float) -> str:
        lines = [f"results regression: {self.compared} results compared (float tolerance {atol} + {rtol} x |expected|; "
                 f"ints and strings exact), {self.skipped} timing results skipped"]
        lines += [f"  MOVED   {c} {n}: expected {e!r}, got {a!r}" for c, n, e, a in self.moved]
        lines += [f"  MISSING {c} {n}" for c, n in self.missing]
        lines += [f"  new     {c} {n}" for c, n in self.new]
        lines.append("results regression: " + ("ok" if self.ok else
                     f"{len(self.moved)} moved, {len(self.missing)} missing; if the change is intended, regenerate the "
                     "baseline (make nbval-baseline ONLY=<chapter>) and commit tests/notebooks/*.results.json"))
        return "\n".join(lines)


def compare_results(expected: list[Result], actual: list[Result], rtol: float = 0.05, atol: float = 0.01,
                    chapters: set[str] | None = None) -> Comparison:
    """Compare two sets of recorded results (e.g. the committed smoke baseline and a fresh nbval run).

    Timing results (:func:`is_timing`) are skipped; ``chapters`` limits the
    comparison to those chapters (default: every chapter of ``expected``).
    """
    exp = {(r.chapter, r.name): r for r in expected if chapters is None or r.chapter in chapters}
    act = {(r.chapter, r.name): r for r in actual if chapters is None or r.chapter in chapters}
    moved, missing, skipped, compared = [], [], 0, 0
    for key, e in exp.items():
        if is_timing(e):
            skipped += 1
            continue
        a = act.get(key)
        if a is None:
            missing.append(key)
            continue
        compared += 1
        if not same_value(e.value, a.value, rtol, atol):
            moved.append((*key, e.value, a.value))
    new = [k for k in act if k not in exp and not is_timing(act[k])]
    return Comparison(moved, missing, new, skipped, compared)


def main(argv: list[str] | None = None) -> int:
    """``python -m dcgan.results compare EXPECTED_DIR ACTUAL_DIR [--rtol R] [--atol A]``: exit 1 when results moved."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m dcgan.results")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="compare the results recorded in two folders (*.results.json)")
    c.add_argument("expected", help="folder with the reference results (e.g. tests/notebooks)")
    c.add_argument("actual", help="folder with the results of a fresh run")
    c.add_argument("--rtol", type=float, default=0.05, help="relative tolerance for floats (default 0.05)")
    c.add_argument("--atol", type=float, default=0.01, help="absolute tolerance for floats (default 0.01)")
    c.add_argument("--only-run", action="store_true",
                   help="compare only the chapters that have results in ACTUAL (a partial run)")
    args = p.parse_args(argv)
    expected, actual = load_results(args.expected), load_results(args.actual)
    if not actual:
        print(f"results regression: no *.results.json in {args.actual}")
        return 1
    chapters = {r.chapter for r in actual} if args.only_run else None
    cmp = compare_results(expected, actual, args.rtol, args.atol, chapters)
    print(cmp.report(args.rtol, args.atol))
    return 0 if cmp.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
