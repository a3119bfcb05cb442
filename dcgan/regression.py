"""The results regression of ``make test``, portable across machines (infrastructure: no paper section).

The smoke chapters (``tests/notebooks/``) record a few hundred numbers. What each one may be compared
with depends on what it depends on:

* **exact**: computed from fixed inputs (data counts, architecture sizes, init statistics, planted
  duplicate pairs, pixel-space distances). Identical whatever kernels the CPU picks, so compared
  exactly on every machine: ints and strings equal, floats within :data:`EXACT_RTOL`.
* **bounded**: a number that depends on a trained model. A one-epoch GAN is chaotic: the rounding of
  bf16/oneDNN kernels, which differs between CPU kinds (AMX, AVX-512 BF16, AVX2, GPUs), moves every
  number trained from it. Compared with bounds calibrated from the spread of that number over several
  runs that differ in those kernels and in the seed: ``[lo - w, hi + w]``, ``w`` the larger of
  :data:`BOUND_MARGIN` calibrated ranges and :data:`BOUND_FLOOR` of its magnitude.
* **shape**: a string that depends on a trained model ("1/3 runs diverged"): its digits may change,
  its words may not.
* **timing**: wall-clock and throughput numbers: not compared.

Which class a result is in is measured, not declared: ``python -m dcgan.regression calibrate`` executes
the smoke chapters again under :data:`VARIANTS` (other CPU instruction sets for ATen, oneDNN and MKL,
bf16 kernels off, another seed), each in a fresh runs folder, and writes ``tests/notebooks/regression.json``:
a result identical under every kernel variant is *exact*; one that moves is *bounded* or *shape*.
Invariants hold on every machine besides: every number is finite and an interval ``X_ci_lo``/``X_ci_hi``
contains its point ``X``. The calibration records the hardware of every run, and a report of moved
numbers names the check that moved and the hardware on each side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .results import Result, load_results

__all__ = [
    "EXACT_RTOL", "BOUND_MARGIN", "BOUND_FLOOR", "VARIANTS", "Variant", "Check", "Calibration", "Comparison", "is_timing",
    "classify", "calibrate_from", "compare", "load_calibration", "machine",
]

EXACT_RTOL = 1e-4  # floats of the exact class: the same computation on other kernels agrees to ~1e-7 in fp32
EXACT_ATOL = 1e-9
BOUND_MARGIN = 1.5  # a bounded result's margin on each side, in calibrated ranges (held-out runs needed > 1)
BOUND_FLOOR = 0.05  # ... and at least 5% of its magnitude (few calibration runs see few values)
CALIBRATION = "regression.json"

TIMING_UNITS = ("s", "ms", "min", "h")
TIMING_WORDS = {"s", "ms", "seconds", "second", "time", "times", "minutes", "min", "hours", "throughput"}


def is_timing(r: Result) -> bool:
    """A wall-clock or throughput number: it moves with the machine's load, not with the code."""
    unit = r.unit.strip()
    return unit in TIMING_UNITS or unit.endswith("/s") or bool(TIMING_WORDS & set(r.name.lower().split("_")))


# ---------------------------------------------------------------- the machine

def machine() -> str:
    """The device a calibration run used, with its kind of CPU kernels (:func:`dcgan.provenance.hardware`)."""
    from .provenance import hardware

    return re.sub(r"\(\d+ threads; ", "(", hardware())


# ---------------------------------------------------------------- calibration runs

@dataclass(frozen=True)
class Variant:
    """One calibration run of the smoke chapters: environment variables for the kernels, and the seed."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    why: str = ""

    @property
    def kernels_only(self) -> bool:
        """Same seed as the baseline: anything it moves depends on kernel rounding, i.e. on the CPU."""
        return self.seed == 0


# Each variant makes the CPU pick other kernels, as another kind of machine would. ATen's vectorised
# kernels, oneDNN's convolutions and MKL's BLAS each dispatch on the instruction set: capping it at AVX2
# gives the code paths of an older CPU (and emulated bf16); capping oneDNN at AVX-512 without bf16 gives
# other bf16 kernels than both the AMX Xeon and the AVX-512-BF16 EPYC; another seed gives the spread that
# a different training trajectory has.
VARIANTS: tuple[Variant, ...] = (
    Variant("isa-avx2", {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
            why="ATen, oneDNN and MKL capped at AVX2 (an older CPU's code paths)"),
    Variant("onednn-avx512-core", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
            why="oneDNN's AVX-512 kernels without native bf16 or AMX"),
    Variant("seed-1", {}, seed=1, why="the chapters' seed 1 instead of 0 (other samples, subsets and draws)"),
)


def run_variant(variant: Variant, out_dir: Path, only: Sequence[str] | None = None) -> Path:
    """Execute the smoke chapters under ``variant`` into ``out_dir`` (a fresh runs folder; a child process)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **variant.env, "DCGAN_RUNS": str(out_dir / "runs")}
    code = ("import sys; from dcgan.book import execute_chapters; "
            "execute_chapters('smoke', sys.argv[1], sys.argv[3:] or None, keep_going=True, seed=int(sys.argv[2]), "
            "stderr_ok=True)")  # its numbers matter, not its pages
    cmd = [sys.executable, "-c", code, str(out_dir), str(variant.seed), *(only or [])]
    print(f"[regression] variant {variant.name}: {variant.why}", flush=True)
    subprocess.run(cmd, env=env, check=True)
    shutil.rmtree(out_dir / "runs", ignore_errors=True)
    return out_dir


# ---------------------------------------------------------------- classes and checks

@dataclass
class Check:
    """How one result is compared: its class, the baseline's value and (bounded) the calibrated range."""

    kind: str  # "exact" | "bounded" | "shape" | "timing"
    base: object
    lo: float | None = None
    hi: float | None = None
    samples: dict[str, object] = field(default_factory=dict)  # calibration run -> value
    scale: float | None = None  # magnitude of the result's family (point and interval), for the margin's floor

    def limits(self) -> tuple[float, float]:
        """The accepted interval of a bounded result."""
        assert self.lo is not None and self.hi is not None
        scale = max(abs(self.lo), abs(self.hi), self.scale or 0.0)
        w = max(BOUND_MARGIN * (self.hi - self.lo), BOUND_FLOOR * scale, EXACT_ATOL)
        return self.lo - w, self.hi + w

    def accepts(self, value) -> bool:
        if self.kind == "timing":
            return True
        if self.kind == "exact":
            return _same(self.base, value)
        if self.kind == "shape":
            return isinstance(value, str) and _shape(value) == _shape(str(self.base))
        if not _is_number(value):
            return False
        lo, hi = self.limits()
        return lo <= float(value) <= hi

    def describe(self) -> str:
        if self.kind == "bounded":
            lo, hi = self.limits()
            return f"calibrated {self.lo:.6g}..{self.hi:.6g} over {len(self.samples)} runs, accepted {lo:.6g}..{hi:.6g}"
        if self.kind == "shape":
            return f"a string shaped like {self.base!r}"
        return f"exactly {self.base!r}" + (f" (floats within {EXACT_RTOL:g} relative)" if isinstance(self.base, float) else "")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(a, b) -> bool:
    """Ints, bools and strings equal; a float (either side) within :data:`EXACT_RTOL`."""
    if not (_is_number(a) and _is_number(b)):
        return type(a) is type(b) and a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=EXACT_RTOL, abs_tol=EXACT_ATOL)


def _shape(s: str) -> str:
    return re.sub(r"-?\d+(\.\d+)?", "#", s)


def classify(result: Result, kernel_values: Iterable, all_values: Iterable) -> Check:
    """The check of one baseline result, from its values under the kernel variants and under every variant.

    Exact when every kernel variant gave the baseline's value; else bounded by every calibration value
    (numbers) or compared by shape (strings).
    """
    base = result.value
    if is_timing(result):
        return Check("timing", base)
    if all(_same(base, v) for v in kernel_values):
        return Check("exact", base)
    if not _is_number(base):
        return Check("shape", base)
    nums = [float(v) for v in (base, *all_values) if _is_number(v)]
    return Check("bounded", base, min(nums), max(nums))


@dataclass
class Calibration:
    """``tests/notebooks/regression.json``: one :class:`Check` per baseline result, and where it was made."""

    baseline_machine: str
    runs: dict[str, str]  # calibration run -> "machine; what differs"
    checks: dict[str, Check]  # "chapter/name" -> check

    def save(self, path: Path) -> None:
        data = {"baseline_machine": self.baseline_machine, "runs": self.runs,
                "checks": {k: asdict(c) for k, c in sorted(self.checks.items())}}
        tmp = Path(path).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)


def load_calibration(path: str | Path) -> Calibration:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no calibration {p}: run `make regression-calibrate` (python -m dcgan.regression "
                                f"calibrate) after regenerating the smoke baseline")
    d = json.loads(p.read_text())
    return Calibration(d["baseline_machine"], d["runs"], {k: Check(**c) for k, c in d["checks"].items()})


def _key(r: Result) -> str:
    return f"{r.chapter}/{r.name}"


def calibrate_from(baseline: list[Result], samples: dict[str, tuple[Variant | None, list[Result]]],
                   baseline_machine: str, machines: dict[str, str] | None = None,
                   previous: Calibration | None = None, chapters: set[str] | None = None) -> Calibration:
    """The calibration of ``baseline`` from the results of calibration runs (``name -> (variant, results)``).

    A run whose variant is None (e.g. the same chapters on another kind of machine) counts as a kernel
    variant: what it moves depends on the CPU. With ``chapters``, only those chapters are recalibrated and the
    ``previous`` calibration's checks of the others are kept.
    """
    machines = machines or {}
    by_run = {n: {_key(r): r.value for r in res} for n, (_, res) in samples.items()}
    kernel_runs = [n for n, (v, _) in samples.items() if v is None or v.kernels_only]
    checks = {}
    if previous is not None and chapters is not None:
        checks = {k: c for k, c in previous.checks.items() if k.split("/", 1)[0] not in chapters}
    for r in baseline:
        if chapters is not None and r.chapter not in chapters:
            continue
        k = _key(r)
        kv = [by_run[n][k] for n in kernel_runs if k in by_run[n]]
        av = [by_run[n][k] for n in by_run if k in by_run[n]]
        c = classify(r, kv, av)
        c.samples = {n: by_run[n][k] for n in by_run if k in by_run[n]}
        checks[k] = c
    _widen_families(checks)
    runs = dict(previous.runs) if previous is not None and chapters is not None else {}
    for n, (v, _) in samples.items():
        runs[n] = f"{machines.get(n, baseline_machine)}; {v.why if v else 'the baseline code on that machine'}"
    return Calibration(baseline_machine, runs, checks)


def _family(key: str) -> str:
    for suffix in ("_ci_lo", "_ci_hi"):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def _widen_families(checks: dict[str, Check]) -> None:
    """A point and its interval are one computation: if one of them moved under other kernels, all depend on
    training, and a member that happened to land on the same rounded value is bounded too (seen: a bootstrap
    bound of a trained difference equal on three machines, moved on a fourth)."""
    moved = {_family(k) for k, c in checks.items() if c.kind in ("bounded", "shape")}
    scale: dict[str, float] = {}
    for k, c in checks.items():
        vals = [abs(float(v)) for v in (c.base, *c.samples.values()) if _is_number(v)]
        scale[_family(k)] = max([scale.get(_family(k), 0.0), *vals])
    for k, c in checks.items():
        if c.kind == "exact" and _family(k) in moved and _is_number(c.base):
            nums = [float(v) for v in (c.base, *c.samples.values()) if _is_number(v)]
            c.kind, c.lo, c.hi = "bounded", min(nums), max(nums)
        if c.kind == "bounded":
            c.scale = scale[_family(k)]


# ---------------------------------------------------------------- comparing a fresh run

@dataclass
class Comparison:
    """What a fresh run did against the baseline and its calibration."""

    moved: list[tuple[str, str, object]]  # key, check kind, value of the fresh run
    missing: list[str]
    new: list[str]
    broken: list[str]  # invariants that do not hold in the fresh run
    uncalibrated: list[str]  # baseline results the calibration does not know (or knows with another value)
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        return not (self.moved or self.missing or self.broken or self.uncalibrated)


def invariants(results: list[Result]) -> list[str]:
    """Broken invariants of one run: non-finite numbers, intervals that do not contain their point."""
    by = {(r.chapter, r.name): r.value for r in results}
    out = []
    for (ch, name), v in by.items():
        if _is_number(v) and not math.isfinite(float(v)):
            out.append(f"{ch}/{name} is not finite ({v})")
        if name.endswith("_ci_lo"):
            point, hi = by.get((ch, name[:-6])), by.get((ch, name[:-6] + "_ci_hi"))
            if _is_number(point) and _is_number(hi) and _is_number(v):
                tol = 1e-6 * max(1.0, abs(float(point)))
                if not (float(v) - tol <= float(point) <= float(hi) + tol):
                    out.append(f"{ch}/{name[:-6]} = {point} lies outside its interval [{v}, {hi}]")
    return out


def compare(baseline: list[Result], calibration: Calibration, actual: list[Result],
            chapters: set[str] | None = None) -> Comparison:
    """Compare a fresh run's results with the baseline under the calibration's checks."""
    exp = {_key(r): r for r in baseline if chapters is None or r.chapter in chapters}
    act = {_key(r): r for r in actual if chapters is None or r.chapter in chapters}
    moved, missing, uncal = [], [], []
    counts = {"exact": 0, "bounded": 0, "shape": 0, "timing": 0}
    for k, e in exp.items():
        c = calibration.checks.get(k)
        if c is None or not (c.kind == "timing" or _same(c.base, e.value)):
            uncal.append(k)
            continue
        counts[c.kind] += 1
        a = act.get(k)
        if a is None:
            missing.append(k)
        elif not c.accepts(a.value):
            moved.append((k, c.kind, a.value))
    new = [k for k in act if k not in exp and not is_timing(act[k])]
    broken = invariants([r for r in actual if chapters is None or r.chapter in chapters])
    return Comparison(moved, missing, new, broken, uncal, counts)


def report(cmp: Comparison, calibration: Calibration, baseline: list[Result], actual: list[Result]) -> str:
    """The text ``make nbval`` prints: counts per check, then every moved result with both sides' hardware."""
    hw_exp = {_key(r): r.hardware for r in baseline}
    hw_act = {_key(r): r.hardware for r in actual}
    n = cmp.counts
    lines = [f"results regression: {n['exact']} exact, {n['bounded']} bounded by calibration, {n['shape']} by shape, "
             f"{n['timing']} timing results not compared; baseline made on {calibration.baseline_machine}, "
             f"calibrated over {len(calibration.runs)} runs ({', '.join(calibration.runs)})"]
    for k, kind, v in cmp.moved:
        c = calibration.checks[k]
        lines.append(f"  MOVED [{kind}] {k}: expected {c.describe()}, got {v!r}  "
                     f"(baseline on {hw_exp.get(k, '?')}; this run on {hw_act.get(k, '?')})")
    lines += [f"  MISSING {k}" for k in cmp.missing]
    lines += [f"  BROKEN  {b}" for b in cmp.broken]
    lines += [f"  UNCALIBRATED {k}: the calibration does not match the baseline's value; run `make "
              f"regression-calibrate ONLY={k.split('/')[0]}`" for k in cmp.uncalibrated]
    lines += [f"  new     {k}" for k in cmp.new]
    if cmp.ok:
        lines.append("results regression: ok")
    else:
        lines.append(f"results regression: {len(cmp.moved)} moved, {len(cmp.missing)} missing, {len(cmp.broken)} "
                     f"broken invariants, {len(cmp.uncalibrated)} uncalibrated. If the change is intended, regenerate "
                     f"the baseline and its calibration (make nbval-baseline regression-calibrate ONLY=<chapter>) "
                     f"and commit tests/notebooks/")
    return "\n".join(lines)


# ---------------------------------------------------------------- command line

def _calibrate(args) -> int:
    baseline_dir = Path(args.baseline)
    baseline = load_results(baseline_dir)
    if not baseline:
        print(f"no *.results.json in {baseline_dir}: make the smoke baseline first (make nbval-baseline)")
        return 1
    chapters = set(args.only) if args.only else None
    only = sorted({r.chapter for r in baseline if chapters is None or any(
        r.chapter == o or r.chapter.split("_", 1)[0] == o for o in chapters)})
    if chapters is not None:
        chapters = set(only)
    path = baseline_dir / CALIBRATION
    previous = load_calibration(path) if path.exists() else None
    samples: dict[str, tuple[Variant | None, list[Result]]] = {}
    machines: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dcgan-calibrate-") as tmp:
        from concurrent.futures import ThreadPoolExecutor

        # each chapter kernel keeps to one thread (smoke), so variants side by side use the cores without
        # changing a number
        runs_dir = Path(args.reuse) if args.reuse else Path(tmp)
        if not args.reuse:
            with ThreadPoolExecutor(max(1, args.jobs)) as pool:
                list(pool.map(lambda v: run_variant(v, Path(tmp) / v.name, only if chapters is not None else None),
                              VARIANTS))
        for v in VARIANTS:
            samples[v.name] = (v, [r for r in load_results(runs_dir / v.name) if r.chapter in only])
            machines[v.name] = machine()
    for extra in args.add_run or []:
        res = [r for r in load_results(extra) if r.chapter in only]
        name = f"other machine: {Path(extra).name}"
        samples[name] = (None, res)
        machines[name] = sorted({r.hardware for r in res})[0] if res else "?"
    cal = calibrate_from(baseline, samples, _baseline_machine(baseline), machines, previous, chapters)
    cal.save(path)
    kinds = {}
    for c in cal.checks.values():
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    print(f"[regression] wrote {path}: " + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())))
    return 0


def _baseline_machine(baseline: list[Result]) -> str:
    return ", ".join(sorted({re.sub(r"\(\d+ threads(; )?", "(", r.hardware).replace(" ()", "") for r in baseline}))


def _check(args) -> int:
    baseline, actual = load_results(args.baseline), load_results(args.actual)
    if not actual:
        print(f"results regression: no *.results.json in {args.actual}")
        return 1
    cal = load_calibration(Path(args.baseline) / CALIBRATION)
    chapters = {r.chapter for r in actual} if args.only_run else None
    cmp = compare(baseline, cal, actual, chapters)
    print(report(cmp, cal, baseline, actual))
    return 0 if cmp.ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dcgan.regression", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compare a fresh smoke run's results with the baseline and its calibration")
    c.add_argument("baseline", help="folder of the baseline (tests/notebooks: *.results.json and regression.json)")
    c.add_argument("actual", help="folder with the results of a fresh smoke run")
    c.add_argument("--only-run", action="store_true", help="only the chapters that have results in ACTUAL")
    k = sub.add_parser("calibrate", help="execute the smoke chapters under other kernels and seeds; write "
                       "BASELINE/regression.json")
    k.add_argument("baseline", nargs="?", default="tests/notebooks", help="folder of the baseline (default tests/notebooks)")
    k.add_argument("--only", nargs="+", metavar="CHAPTER", help="recalibrate only these chapters (NN or NN_name)")
    k.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="variants run side by side (default: cores)")
    k.add_argument("--reuse", metavar="DIR", help="take the variants' results from DIR/<variant> (runs of "
                   "dcgan.regression.run_variant made earlier with the same code) instead of executing them")
    k.add_argument("--add-run", nargs="+", metavar="DIR",
                   help="results of the smoke chapters run on another kind of machine, added as calibration runs")
    args = p.parse_args(argv)
    try:
        return _check(args) if args.cmd == "check" else _calibrate(args)
    except FileNotFoundError as e:
        print(f"results regression: {e}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
