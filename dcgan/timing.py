"""Where a chapter's minutes go: wall and CPU seconds per named phase (training steps, FID features, SVM fitting...).

``with phase("steps"): ...`` (or ``@phased("steps")``) adds the block's wall time (``time.perf_counter``) and CPU
time (this process's, every thread, plus its finished child processes': ``RUSAGE_CHILDREN``) to a per-process
registry. CPU / wall is how many cores the phase kept busy (2.0: both of the book machine's cores).

Nesting: phases form a tree and each phase keeps its *own* (exclusive) time, the time spent in it outside the
phases opened inside it. A second is therefore counted once, in the innermost open phase, the sum over the tree
is the time spent in phases, and a phase's total is its own time plus its descendants' (:func:`totals`).
Re-entering the phase that is already innermost (``train_many`` -> ``train``, both "training") opens no new level.

Worker processes (:mod:`dcgan.workers`) keep their own registry and send it back (:func:`report`); the parent
adds it under its innermost open phase with :func:`merge_workers`. The workers' wall time is process-seconds
(two workers side by side for 10 s: 20 s), so it is shared out: the parent's wall while it waited is divided
among the workers' phases in proportion to their process-seconds; their CPU seconds are added as they are and
taken off the waiting phase's own CPU, which (through ``RUSAGE_CHILDREN``) already held them.

A chapter's kernel writes its tree to ``<results dir>/<chapter>.timing.json`` after every cell
(:func:`dcgan.book.setup_chapter`); the book runner prints it with :func:`phase_table`. The registry follows
the main thread only (the book's code opens phases nowhere else).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, TypeVar

__all__ = ["LOW_CORES", "PhaseStat", "Registry", "REGISTRY", "phase", "phased", "report", "reset", "merge_workers",
           "process_so_far", "totals", "write_report", "load_report", "phase_table", "low_mark"]

LOW_CORES = 1.8  # 90% of the book machine's two cores: a heavy phase below it leaves a core idle
SEP = "/"  # joins a phase's path in the JSON report ("training/steps")

F = TypeVar("F", bound=Callable)


def cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its finished, reaped children (training workers)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


@dataclass
class PhaseStat:
    """One phase of the tree: its own (exclusive) wall and CPU seconds, how often it was entered."""

    wall: float = 0.0
    cpu: float = 0.0
    calls: int = 0
    workers: int = 0  # worker processes whose time is in here (0: this process's own)


@dataclass
class _Frame:
    path: tuple[str, ...]
    wall0: float
    cpu0: float
    child_wall: float = 0.0  # time of the phases nested in this one: not its own
    child_cpu: float = 0.0


@dataclass
class Registry:
    """Phase times of one process. ``clock`` and ``cpu`` are injectable so that tests never depend on real time."""

    clock: Callable[[], float] = time.perf_counter
    cpu: Callable[[], float] = cpu_seconds
    stats: dict[tuple[str, ...], PhaseStat] = field(default_factory=dict)
    stack: list[_Frame] = field(default_factory=list)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not name or SEP in name:
            raise ValueError(f"a phase name is a non-empty string without {SEP!r}; got {name!r}")
        if self.stack and self.stack[-1].path[-1] == name:  # re-entered (train_many -> train): one level
            yield
            return
        path = (self.stack[-1].path if self.stack else ()) + (name,)
        frame = _Frame(path, self.clock(), self.cpu())
        self.stack.append(frame)
        try:
            yield
        finally:
            wall, cpu = self.clock() - frame.wall0, self.cpu() - frame.cpu0
            self.stack.pop()
            st = self.stats.setdefault(path, PhaseStat())
            st.wall += wall - frame.child_wall
            st.cpu += cpu - frame.child_cpu
            st.calls += 1
            if self.stack:  # the enclosing phase's own time excludes this one
                self.stack[-1].child_wall += wall
                self.stack[-1].child_cpu += cpu

    def add(self, name: str, wall: float, cpu: float) -> None:
        """Count time measured elsewhere (a kernel's start-up) as a call of phase ``name`` under the innermost open
        phase; that phase's own time excludes it, as for a nested phase."""
        if not name or SEP in name:
            raise ValueError(f"a phase name is a non-empty string without {SEP!r}; got {name!r}")
        st = self.stats.setdefault((self.stack[-1].path if self.stack else ()) + (name,), PhaseStat())
        st.wall += wall
        st.cpu += cpu
        st.calls += 1
        if self.stack:
            self.stack[-1].child_wall += wall
            self.stack[-1].child_cpu += cpu

    def merge_workers(self, reports: list[dict], waited_wall: float, process_seconds: float) -> None:
        """Add worker processes' phase trees (:meth:`report`) under the innermost open phase.

        ``waited_wall``: the parent's wall time while the workers ran; ``process_seconds``: the workers'
        lifetimes summed. Each worker phase gets ``waited_wall * its process-seconds / process_seconds`` of wall
        (so the phases a core was busy with share the wall that passed) and its own CPU seconds.
        """
        if not reports:
            return
        if process_seconds <= 0:
            raise ValueError(f"process_seconds must be positive with worker reports, got {process_seconds}")
        top = self.stack[-1].path if self.stack else ()
        share = waited_wall / process_seconds
        added_wall = added_cpu = 0.0
        for rep in reports:
            for row in rep["phases"]:
                path = tuple(row["path"].split(SEP))
                if top and path[0] == top[-1]:  # the worker's "training" is the parent's "training"
                    path = path[1:]
                if not path:  # the worker's own time in the re-entered phase: the waiting phase's own
                    continue
                st = self.stats.setdefault(top + path, PhaseStat())
                st.wall += row["wall"] * share
                st.cpu += row["cpu"]
                st.calls += row["calls"]
                st.workers += 1
                added_wall += row["wall"] * share
                added_cpu += row["cpu"]
        if self.stack:
            self.stack[-1].child_wall += added_wall
            self.stack[-1].child_cpu += added_cpu

    def report(self) -> list[dict]:
        """The closed phases as JSON-able rows (path joined by ``/``), in the order they were first entered."""
        return [{"path": SEP.join(p), "wall": s.wall, "cpu": s.cpu, "calls": s.calls, "workers": s.workers}
                for p, s in self.stats.items()]

    def reset(self) -> None:
        if self.stack:
            raise RuntimeError(f"phase {SEP.join(self.stack[-1].path)!r} is still open; reset after it ends")
        self.stats.clear()


REGISTRY = Registry()  # this process's phases


def phase(name: str) -> contextlib.AbstractContextManager[None]:
    """``with phase("steps"): ...``: add the block's wall and CPU time to phase ``name`` of this process."""
    return REGISTRY.phase(name)


def phased(name: str) -> Callable[[F], F]:
    """Decorator: every call of the function is a ``phase(name)``."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with REGISTRY.phase(name):
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def report() -> dict:
    """This process's phase tree, for :func:`write_report` or a worker's answer to its parent."""
    return {"phases": REGISTRY.report()}


def reset() -> None:
    REGISTRY.reset()


def merge_workers(reports: list[dict], waited_wall: float, process_seconds: float) -> None:
    REGISTRY.merge_workers(reports, waited_wall, process_seconds)


def process_so_far() -> tuple[float, float]:
    """(wall, CPU) seconds of this process since it started: a kernel's start-up and imports, counted at the
    chapter's set-up. Wall from the process's start time (psutil, which the Jupyter kernel depends on)."""
    import psutil

    return max(time.time() - psutil.Process().create_time(), 0.0), time.process_time()


def write_report(path: str | Path, **extra) -> Path:
    """Write :func:`report` (plus ``extra`` keys) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**extra, **report()}, indent=1))
    os.replace(tmp, path)
    return path


def load_report(path: str | Path) -> dict | None:
    """A report written by :func:`write_report`; None when there is none (a chapter without phases)."""
    path = Path(path)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("phases"), list):
        raise ValueError(f"{path} is not a phase report (no 'phases' list)")
    return data


# ---------------------------------------------------------------- reading the tree

def totals(rows: list[dict]) -> dict[str, tuple[float, float]]:
    """Each phase's total (its own time plus its descendants'): path -> (wall, cpu)."""
    out: dict[str, list[float]] = {}
    for r in rows:
        parts = r["path"].split(SEP)
        for k in range(1, len(parts) + 1):
            acc = out.setdefault(SEP.join(parts[:k]), [0.0, 0.0])
            acc[0] += r["wall"]
            acc[1] += r["cpu"]
    return {k: (w, c) for k, (w, c) in out.items()}


def low_mark(wall: float, cpu: float, threshold: float = LOW_CORES) -> str:
    """``"<"`` when ``cpu / wall`` is below ``threshold`` cores (a phase that leaves cores idle), else ``""``."""
    return "<" if wall > 0 and cpu / wall < threshold else ""


def phase_table(rows: list[dict], chapter_wall: float | None = None, chapter_cpu: float | None = None,
                indent: str = "    ", threshold: float = LOW_CORES) -> str:
    """The phase tree as text: wall, CPU and cores of each phase's total, children indented under their parent
    (the parent's own time then on an ``(own)`` row), and, given the chapter's wall and CPU, what no phase covered.
    ``<``: fewer than ``threshold`` cores busy on average; ``(N proc)``: time spent in N worker processes."""
    tot = totals(rows)
    own = {r["path"]: r for r in rows}
    kids: dict[str, list[str]] = {}
    for p in tot:  # first-entered order (dicts keep insertion order)
        kids.setdefault(p.rpartition(SEP)[0], []).append(p)
    width = max([40] + [len(indent) + 2 * p.count(SEP) + len(p.rpartition(SEP)[2]) + 12 for p in tot])

    def line(label: str, wall: float, cpu: float) -> str:
        cores = cpu / wall if wall > 0 else 0.0
        return f"{label:<{width}} {wall:8.1f} {cpu:8.1f} {cores:6.2f} {low_mark(wall, cpu, threshold)}".rstrip()

    out = [f"{indent}{'phase':<{width - len(indent)}} {'wall s':>8} {'CPU s':>8} {'cores':>6}"]

    def walk(p: str, depth: int) -> None:
        name = p.rpartition(SEP)[2]
        r = own.get(p)
        procs = f" ({r['workers']} proc)" if r and r.get("workers") else ""
        out.append(line(f"{indent}{'  ' * depth}{name}{procs}", *tot[p]))
        if kids.get(p) and r and (r["wall"] > 0 or r["cpu"] > 0):
            out.append(line(f"{indent}{'  ' * (depth + 1)}(own)", r["wall"], r["cpu"]))
        for k in kids.get(p, []):
            walk(k, depth + 1)

    for p in kids.get("", []):
        walk(p, 0)
    if chapter_wall is not None:
        in_w = sum(r["wall"] for r in rows)
        in_c = sum(r["cpu"] for r in rows)
        rest_c = (chapter_cpu or 0.0) - in_c
        out.append(line(f"{indent}outside any phase", max(chapter_wall - in_w, 0.0), max(rest_c, 0.0)))
    return "\n".join(out)
