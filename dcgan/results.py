"""Results registry: each chapter records its key numbers with their provenance.

A chapter calls :meth:`ResultsRecorder.record` for every number it reports;
the numbers go to ``<results_dir>/<chapter>.results.json`` next to the
executed notebook, and the book's results page is generated from all such
files (:func:`load_results`). The results regression of ``make test`` that compares them
with the smoke baseline is :mod:`dcgan.regression`.
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

__all__ = ["Result", "ResultsRecorder", "load_results", "results_dir"]


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
