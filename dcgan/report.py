"""The book's results page: every claim of the paper against what the chapters measured.

The claims are data (``dcgan/claims.yaml``, loaded by :func:`load_claims`;
the paper page ``book/paper.md`` lists them). Each :class:`Claim` names the
results (by name pattern) that bear on it, the quality gates of the models it
relies on, and a rule of :data:`RULES` that turns the results into a verdict.
The order of the checks (:func:`claim_rows`):

1. no matching result: *not run*;
2. a number on the paper's data set that ours measured on a stand-in:
   *needs the paper's data*;
3. the claim needs a trained model (``Claim.gates``): a gate recorded as 0
   gives *inconclusive: model below the quality gate*, no gate recorded
   gives *inconclusive: no quality gate recorded*;
4. the rule. Comparative claims use the 95 % interval of the claimed
   difference (:func:`interval_verdict`): *reproduced* when it excludes zero
   in the paper's direction, *not reproduced* when it excludes zero in the
   other, *inconclusive (within noise)* otherwise, and *inconclusive (no
   interval)* when the chapter recorded none. A rule that looks at several
   measures of one claim corrects for the looks (the ablations' rule,
   :func:`_variant_worse`: two measures, each at 97.5 %, Bonferroni).

Conventions of the results registry this module reads:

* a result ``X`` may come with ``X_ci_lo`` and ``X_ci_hi`` (a 95 % interval);
* a comparison is recorded as ``<a>_minus_<b>`` with its own interval;
* a chapter records the quality gate of each model it uses as ``<model>_gate``
  (1 pass, 0 fail) with ``<model>_gate_fid``, ``_gate_precision`` and
  ``_gate_recall``, their limits (``_gate_fid_limit`` ...) and the feature
  classifier's held-out accuracy (``_gate_classifier_accuracy``) (e.g. ``emoji-32_gate``; ``stability_dcgan_gate`` for the
  ablations' reference DCGAN).

Checks of our own implementation (architecture, initialisation) are not
claims of the paper: they are in :data:`CHECKS`, shown in their own table and
left out of the tally. The page is generated from the results registry
(:func:`dcgan.results.load_results`), so it shows the numbers of the last
executed chapters; the full list of recorded results follows the tables.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .evidence import DIFF, LINE, PAPER, Measure, Point, number, points
from .results import Result, load_results

__all__ = ["Claim", "CLAIMS", "CHECKS", "VERDICTS", "CHECK_VERDICTS", "REPRODUCED", "PARTLY", "NOT_REPRODUCED",
           "WITHIN_NOISE", "NO_INTERVAL", "BELOW_GATE", "NO_GATE", "INCONCLUSIVE", "PAPER_DATA_NEEDED", "NOT_RUN",
           "interval_verdict", "no_excess_verdict", "combine", "claim_rows", "check_rows", "claims_table", "checks_table",
           "results_table", "chapter_verdicts", "control_line", "at_a_glance", "gate_status", "seed_gates", "tally",
           "write_results_page", "on_paper_data",
           "RULES", "make_rule", "load_claims", "chapter_ref", "paper_claims", "write_paper_page"]

REPRODUCED, PARTLY, NOT_REPRODUCED = "reproduced", "partly", "not reproduced"
WITHIN_NOISE, NO_INTERVAL = "inconclusive (within noise)", "inconclusive (no interval)"
BELOW_GATE, NO_GATE = "inconclusive: model below the quality gate", "inconclusive: no quality gate recorded"
INCONCLUSIVE = "inconclusive"  # the experiment ran but cannot decide for another stated reason
PAPER_DATA_NEEDED, NOT_RUN = "needs the paper's data", "not run"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, WITHIN_NOISE, NO_INTERVAL, BELOW_GATE, NO_GATE, INCONCLUSIVE,
            PAPER_DATA_NEEDED, NOT_RUN)
CHECK_VERDICTS = ("passes", "fails", NOT_RUN)

PAPER_DATA = ("cifar10", "svhn", "mnist", "lsun", "celeba", "imagenet", "faces")
STAND_INS = ("mnist-10k", "fashion-mnist")  # names that contain a paper set's name but are not it
AUTHORS_MODEL = "authors' SVHN model"  # data-column mark of results measured on the authors' released nets (ch. 10)
CI_SUFFIXES = ("_ci_lo", "_ci_hi")


class Found:
    """The results that matched a claim, looked up by name."""

    def __init__(self, results: list[Result]):
        self.results = results

    def __call__(self, pattern: str) -> list[Result]:
        return [r for r in self.results if fnmatch.fnmatchcase(r.name, pattern)]

    def one(self, pattern: str) -> Result | None:
        rs = self(pattern)
        return rs[0] if rs else None

    def value(self, pattern: str) -> float | None:
        r = self.one(pattern)
        return _num(r.value) if r is not None else None

    def interval(self, name: str) -> tuple[float, float] | None:
        """``(name_ci_lo, name_ci_hi)`` when both were recorded (exact name, no pattern)."""
        lo, hi = self.value(_escape(name) + "_ci_lo"), self.value(_escape(name) + "_ci_hi")
        return None if lo is None or hi is None else (lo, hi)


def _escape(name: str) -> str:
    """A result name as an fnmatch pattern that matches only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _num(v) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, str) and "/" in v:  # "k/n" counts
        a, b = v.split("/", 1)
        try:
            return float(a) / float(b)
        except (ValueError, ZeroDivisionError):
            return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _count(v) -> tuple[int, int] | None:
    """A "k/n" count as (k, n)."""
    if isinstance(v, str) and "/" in v:
        try:
            k, n = (int(s) for s in v.split("/", 1))
        except ValueError:
            return None
        return (k, n) if 0 <= k <= n and n > 0 else None
    return None


def on_paper_data(r: Result) -> bool:
    d = r.dataset.lower().replace(AUTHORS_MODEL.lower(), "")  # the model's name is not its data
    for s in STAND_INS:
        d = d.replace(s, "")
    return any(p in d for p in PAPER_DATA)


@dataclass(frozen=True)
class Claim:
    section: str
    text: str
    paper: str  # the paper's number or statement
    patterns: tuple[str, ...]  # result names (fnmatch) that bear on it; the first match of each is shown
    rule: Callable[[Found], str]  # -> a verdict
    data_bound: bool = False  # a number on the paper's data: stand-in results cannot reproduce it
    gates: tuple[str, ...] = ()  # quality-gate results (fnmatch) of the models the claim relies on
    id: str = ""  # its anchor on the paper page is claim-<id>
    chapter: str = ""  # the chapter that tests it (NN_name) and the label of its section there
    anchor: str = ""
    group: str = ""  # the paper page's heading it sits under
    says: tuple[dict, ...] = ()  # the words for the numbers its rule judges (dcgan.evidence.sentence)


# ---------------------------------------------------------------- verdict rules

def interval_verdict(lo: float | None, hi: float | None, direction: int = 1, at: float = 0.0) -> str:
    """The verdict on a claimed difference from its 95 % interval [lo, hi].

    ``direction=+1``: the paper claims the quantity is above ``at`` (a
    positive difference, by default); ``-1``: below ``at``. *reproduced* when
    the whole interval lies on the paper's side, *not reproduced* when it
    lies wholly on the other side, *inconclusive (within noise)* when it
    contains ``at``; *inconclusive (no interval)* without one.
    """
    if lo is None or hi is None:
        return NO_INTERVAL
    if lo > hi:
        raise ValueError(f"interval bounds out of order: [{lo}, {hi}]")
    above, below = lo > at, hi < at
    if direction > 0:
        return REPRODUCED if above else NOT_REPRODUCED if below else WITHIN_NOISE
    return REPRODUCED if below else NOT_REPRODUCED if above else WITHIN_NOISE


def combine(verdicts: Iterable[str]) -> str:
    """One verdict from several (data sets, or measures of one claim).

    All agree: that verdict. Reproduced somewhere and not everywhere: *partly*.
    Otherwise not reproduced somewhere: *not reproduced*. Otherwise the first
    inconclusive kind in :data:`VERDICTS` order.
    """
    vs = [v for v in verdicts if v != NOT_RUN]
    if not vs:
        return NOT_RUN
    if len(set(vs)) == 1:
        return vs[0]
    if REPRODUCED in vs or PARTLY in vs:
        return PARTLY
    if NOT_REPRODUCED in vs:
        return NOT_REPRODUCED
    return min(vs, key=VERDICTS.index)


def _primary(f: Found, pattern: str) -> list[Result]:
    return [r for r in f(pattern) if not r.name.endswith(CI_SUFFIXES)]


def _diff(pattern: str, direction: int = 1, at: float = 0.0) -> Callable[[Found], str]:
    """A difference ``<a>_minus_<b>`` the paper claims is positive (or negative): judged on its interval.

    Rules run only when some result of the claim was recorded, so a missing
    difference means the chapter measured the two sides without an interval.
    """

    def rule(f: Found) -> str:
        diffs = _primary(f, pattern)
        if not diffs:
            return NO_INTERVAL
        return combine(interval_verdict(*(f.interval(r.name) or (None, None)), direction, at) for r in diffs)

    rule.measures = [Measure(pattern, direction, at, DIFF)]
    return rule


def _all(*rules: Callable[[Found], str]) -> Callable[[Found], str]:
    """Several measures of one claim, combined (:func:`combine`); a measure that did not run is left out."""

    def rule(f: Found) -> str:
        return combine(r(f) for r in rules)

    rule.measures = [m for r in rules for m in getattr(r, "measures", [])]
    return rule


def _threshold(pattern: str, at: float, direction: int = 1) -> Callable[[Found], str]:
    """A measurement the claim puts above (below) ``at``: its interval when recorded, else its value.

    These are single measurements against a fixed line (not a difference
    between two conditions), so a point value still decides; an interval,
    when the chapter recorded one, has to clear the line as a whole.
    """

    def rule(f: Found) -> str:
        out = []
        for r in _primary(f, pattern):
            v = _num(r.value)  # None: the chapter recorded why there is no number (e.g. "nothing flagged")
            out.append(INCONCLUSIVE if v is None else interval_verdict(*(f.interval(r.name) or (v, v)), direction, at))
        return combine(out)

    rule.measures = [Measure(pattern, direction, at, LINE)]
    return rule


def no_excess_verdict(lo: float | None, hi: float | None, margin: float) -> str:
    """The verdict on a claim that a quantity is *not above* a reference (an excess ``<a>_minus_<ref>``), from
    the 95 % interval [lo, hi] of the excess: *not reproduced* when it lies above 0 (an excess beyond noise);
    *reproduced* when it does not and its upper bound is under ``margin`` (an excess of ``margin`` or more is
    ruled out); *inconclusive (within noise)* otherwise; *inconclusive (no interval)* without one."""
    if lo is None or hi is None:
        return NO_INTERVAL
    if lo > hi:
        raise ValueError(f"interval bounds out of order: [{lo}, {hi}]")
    return NOT_REPRODUCED if lo > 0 else REPRODUCED if hi < margin else WITHIN_NOISE


def _no_excess(pattern: str, margin: float) -> Callable[[Found], str]:
    """:func:`no_excess_verdict` on every result matching ``pattern`` (e.g. §4.1's share of near-copies among
    samples minus among held-out test images, :mod:`dcgan.memorisation`), combined over them."""

    def rule(f: Found) -> str:
        rs = _primary(f, pattern)
        if not rs:
            return NO_INTERVAL
        return combine(no_excess_verdict(*(f.interval(r.name) or (None, None)), margin) for r in rs)

    rule.measures = [Measure(pattern, -1, margin, LINE)]
    return rule


def _close(ours: float | None, paper: float, tol_yes: float, tol_partly: float,
           iv: tuple[float, float] | None = None) -> str:
    if ours is None:
        return NOT_RUN
    lo, hi = iv or (ours, ours)
    gap = max(lo - paper, paper - hi, 0.0)  # distance from the paper's number to our interval
    return REPRODUCED if gap <= tol_yes else PARTLY if gap <= tol_partly else NOT_REPRODUCED


def _paper_number(name: str, paper: float, tol_yes: float, tol_partly: float) -> Callable[[Found], str]:
    def rule(f: Found) -> str:
        return _close(f.value(name), paper, tol_yes, tol_partly, f.interval(name))

    rule.measures = [Measure(_escape(name), 0, paper, PAPER, tol=tol_yes)]
    return rule


INSTABILITY = ("diverged", "oscillating", "mode_collapse")


def _unstable(f: Found, v: str) -> tuple[int, int] | None:
    """Runs of variant ``v`` with any instability, from its "k/n" counts (capped at n; runs may count twice)."""
    counts = [_count(r.value) for k in INSTABILITY for r in f(f"stability_{v}_{k}")]
    counts = [c for c in counts if c is not None]
    if not counts:
        return None
    n = max(c[1] for c in counts)
    return min(n, sum(c[0] for c in counts)), n


VARIANT_LOOKS = 2  # measures _variant_worse judges each claim on: FID and the share of unstable runs
VARIANT_LEVEL = 1 - 0.05 / VARIANT_LOOKS  # Bonferroni: each measure at 97.5 %, so the claim's error stays at 5 %


def _runs(f: Found, v: str) -> int | None:
    """Seeds variant ``v`` ran with (the n of its "k/n" instability counts)."""
    counts = [c for k in INSTABILITY for r in f(f"stability_{v}_{k}") if (c := _count(r.value)) is not None]
    return max(c[1] for c in counts) if counts else None


def _fid_interval_corrected(f: Found, v: str) -> tuple[float, float] | None:
    """The interval of variant ``v``'s FID minus the DCGAN's at :data:`VARIANT_LEVEL` (97.5 %).

    In order: the Welch interval from the two sides' recorded means, spreads and seed counts (what chapter
    08's 95 % interval is computed from, at the corrected level), when at 95 % it gives back the recorded
    interval (it does not when a seed's FID was not finite, so the counts overstate the seeds); else the
    recorded 95 % interval widened by the ratio of the normal quantiles (2.24 / 1.96); else the seeds'
    spreads (:func:`_spread_fallback`) widened by the same ratio (2 x 2.24 / 1.96 = 2.29 spreads instead
    of 2). None: no interval.
    """
    from .intervals import welch_summary_ci, z_of

    name = f"stability_{v}_minus_dcgan_fid"
    iv, d = f.interval(name), f.value(_escape(name))
    fid, base = f.value(f"stability_{v}_fid"), f.value("stability_dcgan_fid")
    sd, sd_base = f.value(f"stability_{v}_fid_std"), f.value("stability_dcgan_fid_std")
    n, n_base = _runs(f, v), _runs(f, "dcgan")
    if None not in (fid, base, sd, sd_base, n, n_base):
        _, lo, hi = welch_summary_ci(fid, sd, n, base, sd_base, n_base, VARIANT_LEVEL)
        _, lo95, hi95 = welch_summary_ci(fid, sd, n, base, sd_base, n_base, 0.95)
        # the recorded numbers are rounded to 3 decimals: agreement within 1 % of the half-width (or 0.01 FID)
        same = iv is None or (math.isfinite(lo95) and max(abs(lo95 - iv[0]), abs(hi95 - iv[1]))
                              <= max(0.01, 0.01 * (hi95 - lo95) / 2))
        if math.isfinite(lo) and math.isfinite(hi) and same:
            return lo, hi
    widen = z_of(VARIANT_LEVEL) / z_of(0.95)
    if iv is not None and d is not None:
        return d - widen * (d - iv[0]), d + widen * (iv[1] - d)
    return _spread_fallback(v, k=2.0 * widen)(f, name)


def _variant_worse(v: str) -> Callable[[Found], str]:
    """A broken guideline should cost FID or make more runs unstable, beyond noise, with the two looks
    corrected for (Bonferroni): each measure is judged on its 97.5 % interval (:data:`VARIANT_LEVEL`).

    FID: the Welch interval of ``stability_<v>_minus_dcgan_fid`` at 97.5 %, rebuilt from the recorded
    means, spreads and seed counts (:func:`_fid_interval_corrected` lists the fallbacks). Instability: the
    Newcombe interval at 97.5 % of the difference in the share of unstable runs. One measure beyond noise in
    the paper's direction (and none in the other) reproduces the claim; one in each direction is *partly*.
    Either measure alone at 95 % would give the claim two chances at a 5 % error (up to ~10 %); at 97.5 %
    each, the claim's error is at most 5 %. The forest plot and the results table show the 95 % intervals
    the chapter recorded; the verdict's sentence gives the 97.5 % ones it rests on.
    """
    from .intervals import newcombe_diff_ci, z_of

    def unstable_iv(f: Found) -> tuple[float, float] | None:
        uv, ub = _unstable(f, v), _unstable(f, "dcgan")
        if not (uv and ub):
            return None
        _, lo, hi = newcombe_diff_ci(uv[0], uv[1], ub[0], ub[1], z=z_of(VARIANT_LEVEL))
        return lo, hi

    def rule(f: Found) -> str:
        name = f"stability_{v}_minus_dcgan_fid"
        if f.value(f"stability_{v}_fid") is None and _unstable(f, v) is None and f.one(_escape(name)) is None:
            return NOT_RUN  # only the reference ran
        iv = _fid_interval_corrected(f, v)
        verdicts = [interval_verdict(*iv) if iv else NO_INTERVAL]
        uiv = unstable_iv(f)
        if uiv is not None:
            verdicts.append(interval_verdict(*uiv))
        if REPRODUCED in verdicts and NOT_REPRODUCED in verdicts:
            return PARTLY  # worse on one measure, better on the other
        for v_ in (REPRODUCED, NOT_REPRODUCED, WITHIN_NOISE):
            if v_ in verdicts:
                return v_
        return NO_INTERVAL

    def words(f: Found) -> str:
        uv, ub = _unstable(f, v), _unstable(f, "dcgan")
        parts = [f"unstable runs {uv[0]}/{uv[1]} against {ub[0]}/{ub[1]}"] if uv and ub else []
        iv, uiv = _fid_interval_corrected(f, v), unstable_iv(f)
        looks = ([f"FID difference [{number(iv[0])}, {number(iv[1])}]"] if iv else []) + (
            [f"unstable share difference [{number(uiv[0])}, {number(uiv[1])}]"] if uiv else [])
        if looks:
            parts.append(f"judged on 97.5% intervals (Bonferroni, two measures): {', '.join(looks)}")
        return "; ".join(parts)

    def derive(f: Found) -> tuple | None:  # the two sides without their difference: FID difference, spread interval
        fid, base = f.one(_escape(f"stability_{v}_fid")), f.value("stability_dcgan_fid")
        if fid is None or _num(fid.value) is None or base is None:
            return None
        return _num(fid.value) - base, _spread_fallback(v)(f, ""), "FID", fid.dataset

    rule.measures = [Measure(_escape(f"stability_{v}_minus_dcgan_fid"), 1, 0.0, DIFF, interval=_spread_fallback(v),
                             derive=derive)]
    rule.words = words
    return rule


def _spread_fallback(v: str, k: float = 2.0) -> Callable[[Found, str], tuple[float, float] | None]:
    """Variant ``v``'s FID difference +- ``k`` x the spread of a difference of two runs, from the seeds' spreads
    (when the chapter recorded no interval for the difference itself)."""
    from .intervals import spread_interval

    def interval(f: Found, name: str) -> tuple[float, float] | None:
        fid, base = f.value(f"stability_{v}_fid"), f.value("stability_dcgan_fid")
        if fid is None or base is None:
            return None
        return spread_interval(fid - base, f.value(f"stability_{v}_fid_std"), f.value("stability_dcgan_fid_std"), k)

    return interval


def _nn_margin(f: Found) -> float:
    """The 1-NN claim's margin: 10 % of the real-data error plus half a point (1 without a real-data error)."""
    real = f.value("mnist_nn_error_real")
    return 0.1 * real + 0.5 if real is not None else 1.0


def _nn_matches(f: Found) -> str:
    """Generated-data 1-NN error within a margin of the real-data error (an equivalence claim).

    ``mnist_nn_error_generated_<variant>_minus_real`` with its interval; the margin is
    10 % of the real-data error plus half a point. The best variant decides (the paper's
    claim is about its best model).
    """
    margin = _nn_margin(f)
    best = None
    for r in _primary(f, "mnist_nn_error_generated_*_minus_real"):
        iv = f.interval(r.name)
        v = NO_INTERVAL if iv is None else REPRODUCED if iv[1] <= margin else NOT_REPRODUCED if iv[0] > margin \
            else WITHIN_NOISE
        key = (_num(r.value) if _num(r.value) is not None else math.inf)
        if best is None or key < best[0]:
            best = (key, v)
    if best is not None:
        return best[1]
    return NO_INTERVAL if f.one("mnist_nn_error_generated_*") is not None else NOT_RUN


_nn_matches.measures = [Measure("mnist_nn_error_generated_*_minus_real", -1, 1.0, LINE, line=_nn_margin)]


def _init_std(name: str, std: float, tol: float) -> Callable[[Found], str]:
    def rule(f: Found) -> str:
        v = f.value(name)
        return NOT_RUN if v is None else "passes" if abs(v - std) <= tol else "fails"

    return rule


def _flag(name: str) -> Callable[[Found], str]:
    def rule(f: Found) -> str:
        v = f.value(name)
        return NOT_RUN if v is None else "passes" if v == 1 else "fails"

    return rule


# The rules a claim in claims.yaml can name: {name: factory}; the YAML's arguments are passed to the factory
# (a mapping as keywords, a list as positional arguments, a scalar as the one argument, null as none).
RULES: dict[str, Callable[..., Callable[[Found], str]]] = {
    "diff": _diff,
    "threshold": _threshold,
    "no_excess": _no_excess,
    "paper_number": _paper_number,
    "variant_worse": _variant_worse,
    "nn_matches": lambda: _nn_matches,
    "needs_paper_data": lambda: (lambda f: PAPER_DATA_NEEDED),
    "guidelines": _flag,
    "init_std": _init_std,
    "all": lambda *rules: _all(*(make_rule(r) for r in rules)),
}
CLAIMS_FILE = Path(__file__).with_name("claims.yaml")


def make_rule(spec: dict) -> Callable[[Found], str]:
    """A verdict rule from its YAML form ``{name: arguments}`` (see :data:`RULES`)."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(f"a rule is one mapping {{name: arguments}}, got {spec!r}")
    (name, args), = spec.items()
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r}; known: {', '.join(RULES)}")
    factory = RULES[name]
    if args is None:
        return factory()
    if isinstance(args, dict):
        return factory(**args)
    if isinstance(args, list):
        return factory(*args)
    return factory(args)


_CLAIM_KEYS = {"id", "group", "section", "text", "paper", "results", "rule", "gates", "data_bound", "chapter", "anchor",
               "says"}


def load_claims(path: str | Path = CLAIMS_FILE) -> tuple[tuple[Claim, ...], tuple[Claim, ...]]:
    """(claims, checks) of a claims table (by default ``dcgan/claims.yaml``), validated."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    out = []
    seen: set[str] = set()
    for kind in ("claims", "checks"):
        items = []
        for e in data.get(kind) or []:
            unknown = set(e) - _CLAIM_KEYS
            missing = {"id", "section", "text", "paper", "results", "rule", "chapter", "anchor"} - set(e)
            if unknown or missing:
                raise ValueError(f"{path}: entry {e.get('id', e)!r}: unknown keys {sorted(unknown)}, "
                                 f"missing keys {sorted(missing)}")
            if e["id"] in seen:
                raise ValueError(f"{path}: claim id {e['id']!r} is used twice")
            seen.add(e["id"])
            items.append(Claim(str(e["section"]), " ".join(str(e["text"]).split()), str(e["paper"]),
                               tuple(e["results"]), make_rule(e["rule"]), bool(e.get("data_bound", False)),
                               tuple(e.get("gates") or ()), id=e["id"], chapter=e["chapter"], anchor=e["anchor"],
                               group=e.get("group", ""), says=tuple(e.get("says") or ())))
        out.append(tuple(items))
    return out[0], out[1]


CLAIMS, CHECKS = load_claims()


# ---------------------------------------------------------------- rows and tables

def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _with_ci(r: Result, f: Found) -> str:
    """"value [lo, hi] unit" (the interval only when recorded)."""
    iv = f.interval(r.name)
    unit = f" {r.unit}" if r.unit and len(r.unit) < 12 else ""
    return f"{_fmt(r.value)}" + (f" [{_fmt(iv[0])}, {_fmt(iv[1])}]" if iv else "") + unit


def _evidence(rs: list[Result], f: Found) -> tuple[str, str]:
    ours = "; ".join(f"{r.name} = {_with_ci(r, f)}" for r in rs)
    behind = "; ".join(sorted({f"{r.dataset} ({r.profile})" for r in rs}))
    return ours, behind


def _gate(c: Claim, f: Found) -> tuple[str | None, str]:
    """(verdict forced by the gate or None when it passed, the gate's evidence)."""
    if not c.gates:
        return None, ""
    gates: dict[str, list[Result]] = {}
    for p in c.gates:
        for r in f(p):
            if r.name.endswith("_gate") and r not in gates.setdefault(r.name, []):
                gates[r.name].append(r)
    if not gates:
        return NO_GATE, f"no quality gate recorded ({', '.join(c.gates)})"
    # one entry per model: its GAN seeds' gates (<model>_s<seed>_gate, issue 22) count under the model's name
    by_model: dict[str, list[str]] = {}
    for name in gates:
        by_model.setdefault(_gate_model(name), []).append(name)
    parts, failed = [], False
    for model, names in by_model.items():
        # every chapter that gated the model, and every seed of it, must have passed (one chapter's or one
        # seed's failed gate is not hidden by another's pass)
        ok = all(_num(r.value) == 1 for n in names for r in gates[n])
        failed |= not ok
        seeds = [n for n in names if n != f"{model}_gate"]
        below = [n for n in names if not all(_num(r.value) == 1 for r in gates[n])]
        # with per-seed gates, the numbers are theirs, labelled by seed: `<model>_gate` is the chapter's summary over
        # the seeds it used (dcgan.seeds.gate_seeds); a hand-made one with numbers would repeat a seed's unlabelled
        shown = [n for n in below if n in seeds] if seeds else below
        nums = "; ".join(filter(None, (_gate_numbers(f, n[: -len("_gate")], label="" if n == f"{model}_gate" else
                                                     "seed " + n[len(model) + 2: -len("_gate")]) for n in shown)))
        n_below = sum(n in below for n in seeds)
        n_seeds = ("" if not seeds else f" in all {len(seeds)} GAN seeds" if not n_below
                   else f" in {n_below} of {len(seeds)} GAN seeds")
        parts.append(f"gate {model}: {'passed' if ok else 'below'}{n_seeds}" + (f" ({nums})" if nums and not ok else ""))
    return (BELOW_GATE if failed else None), "; ".join(parts)


_SEED_GATE = re.compile(r"_s(\d+)_gate$")  # one GAN seed's gate; group 1: the seed


def _gan_seeds(f: Found, matched: list[Result]) -> int:
    """How many GAN seeds the claim's numbers rest on: the most per-seed records (``<name>_s<seed>``,
    :func:`dcgan.intervals.record_over_seeds`) of any of them; 0 when none has any."""
    return max((len(f(_escape(r.name) + "_s[0-9]*")) for r in matched), default=0)


def _gate_model(gate_name: str) -> str:
    """The model a ``..._gate`` result belongs to: ``emoji-32_s1_gate`` (one GAN seed's) -> ``emoji-32``."""
    return _SEED_GATE.sub("", gate_name) if _SEED_GATE.search(gate_name) else gate_name[: -len("_gate")]


def _gate_numbers(f: Found, name: str, label: str = "") -> str:
    """"fid 312, precision 0.01, recall 0" of ``<name>_gate``'s numbers (prefixed "seed 1: " with a label)."""
    nums = ", ".join(f"{k} {_fmt(f.value(_escape(f'{name}_gate_{k}')))}" for k in ("fid", "precision", "recall")
                     if f.one(_escape(f"{name}_gate_{k}")) is not None)
    return f"{label}: {nums}" if label and nums else nums


def seed_gates(results: Iterable[Result], model: str) -> dict[int, bool]:
    """{seed: passed} of ``model``'s per-seed gates (``<model>_s<seed>_gate``, :func:`dcgan.seeds.gate_seeds`)."""
    out: dict[int, bool] = {}
    for r in results:
        m = re.fullmatch(re.escape(model) + r"_s(\d+)_gate", r.name)
        if m:
            out[int(m.group(1))] = out.get(int(m.group(1)), True) and _num(r.value) == 1
    return out


def _rows(results: list[Result], claims: tuple[Claim, ...], allowed: tuple[str, ...]) -> list[dict]:
    f = Found(results)
    rows = []
    for c in claims:
        matched: list[Result] = []
        for p in c.patterns:
            for r in _primary(f, p):
                if r not in matched:
                    matched.append(r)
        gate_verdict, gate_text = _gate(c, f)
        ruled = c.rule(f) if matched else NOT_RUN  # a rule says "not run" when the claim's own results are missing
        if c.data_bound and not any(on_paper_data(r) for r in matched):
            # before the rule: a stand-in's numbers (or none: a claim only the paper's data can test) answer "needs
            # the paper's data", even where the rule's own result is one only the paper profile records (§5.2)
            verdict, gate_text = PAPER_DATA_NEEDED, ""
        elif ruled == NOT_RUN:
            verdict, gate_text = NOT_RUN, ""
        elif gate_verdict is not None:
            verdict = gate_verdict
        else:
            verdict = ruled
        if verdict not in allowed:
            raise ValueError(f"claim {c.section}: rule returned {verdict!r}, not one of {allowed}")
        numbers, behind = _evidence(matched[:6], f)
        if matched and gate_text:
            numbers = f"{numbers}; {gate_text}" if numbers else gate_text
        pts = points(c, f, _primary)
        for pt in pts:
            pt.verdict = verdict
        words = ours = "–" if verdict == NOT_RUN else _sentence(c, f, pts, matched)
        n_seeds = _gan_seeds(f, matched)
        if n_seeds and words != "–":  # issue 22: say what the numbers rest on
            words = ours = f"{words}; over {n_seeds} GAN seeds"
        if verdict in (BELOW_GATE, NO_GATE) and gate_text:
            ours += f"; {gate_text}"
        rows.append(dict(section=c.section, claim=c.text, paper=c.paper, ours=ours, words=words,
                         numbers=numbers or "–", behind=behind or "–", verdict=verdict, measured=bool(matched),
                         points=pts, gate=gate_text, id=c.id))
    return rows


def _sentence(c: Claim, f: Found, pts: list[Point], matched: list[Result]) -> str:
    """The "ours" cell in words, from the numbers: one clause per number the rule judges (dcgan.evidence),
    or, for a claim whose rule judges none of them (a check, a claim only the paper's data can test), its
    first results as "name value [interval] unit"."""
    parts = [p.sentence for p in pts]
    extra = getattr(c.rule, "words", None)
    if extra is not None and extra(f):
        parts.append(extra(f))
    if not parts:
        parts = [f"{r.name.replace('_', ' ')}: {_with_ci(r, f)}" for r in matched[:2]]
    return "; ".join(parts) or "–"


def claim_rows(results: list[Result], claims: tuple[Claim, ...] = CLAIMS) -> list[dict]:
    """One dict per claim of the paper: section, claim, paper, verdict, measured (whether any of its results
    was recorded), ours (the numbers in words, :mod:`dcgan.evidence`, and the quality gate's when it
    decided), words (the same without the gate), numbers (the results behind it by name: "name = value
    [interval] unit"), behind (data and profile), gate, points (:class:`dcgan.evidence.Point`) and id."""
    return _rows(results, claims, VERDICTS)


def check_rows(results: list[Result], checks: tuple[Claim, ...] = CHECKS) -> list[dict]:
    """The same for the implementation checks (verdicts: passes, fails, not run)."""
    return _rows(results, checks, CHECK_VERDICTS)


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict]) -> str:
    """claim | paper | ours | verdict: the claim with its section and chapter, ours as a sentence from the numbers.

    The raw result names and every number behind a verdict are in :func:`_details_table` (folded on the
    results page) and in :func:`results_table`.
    """
    head = "| claim | paper | ours [95% interval] | verdict |\n|---|---|---|---|\n"
    lines = []
    for r in rows:
        where = r.get("where", "–")
        claim = f"{r.get('section_ref') or _cell(r['section'])} {_cell(r['claim'])}" + (
            f" ({where})" if where != "–" else "")
        lines.append(f"| {claim} | {_cell(r['paper'])} | {_cell(r['ours'])} | **{r['verdict']}** |")
    return head + "\n".join(lines) + "\n"


def _details_table(rows: list[dict]) -> str:
    """Per claim: the recorded results behind its verdict by name (value [interval] unit), the data and
    profile, and its models' quality gates."""
    head = "| § | results behind the verdict | data (profile) |\n|---|---|---|\n"
    lines = [f"| {_cell(r['section'])} | {_cell(r['numbers'])} | {_cell(r['behind'])} |" for r in rows if r["measured"]]
    return head + "\n".join(lines) + "\n" if lines else "No claim has recorded results yet.\n"


CLAIM_LABEL = "claim-"  # the paper page's label of a claim is claim-<id>


def chapter_ref(c: Claim, present: set[str] | None = None) -> str:
    """A MyST reference to the section of the chapter that tests ``c`` (plain text when that chapter is not
    in ``present``, the chapters in this build; None: all)."""
    if not c.chapter:
        return "–"
    num = c.chapter.split("_", 1)[0]
    if present is not None and c.chapter not in present:
        return f"chapter {num} (not in this build)"
    return f"{{ref}}`chapter {num} <{c.anchor}>`"


def _link_rows(rows: list[dict], claims: tuple[Claim, ...], present: set[str] | None, on_paper_page: bool) -> list[dict]:
    for r, c in zip(rows, claims):
        r["where"] = chapter_ref(c, present)
        if on_paper_page and c.id:
            r["section_ref"] = f"{{ref}}`{_cell(c.section)} <{CLAIM_LABEL}{c.id}>`"
    return rows


def claims_table(results: list[Result], claims: tuple[Claim, ...] = CLAIMS, present: set[str] | None = set()) -> str:
    """The Markdown table of every claim with the paper's number, ours, the data behind ours and a verdict.

    Each row links back to its claim on the paper page and to the chapter section that tests it when that
    chapter is in ``present`` (None: every chapter; the default, an empty set, links none).
    """
    return _table(_link_rows(claim_rows(results, claims), claims, present, True))


def checks_table(results: list[Result], checks: tuple[Claim, ...] = CHECKS, present: set[str] | None = set()) -> str:
    """The Markdown table of the implementation checks (linked to their chapters as in :func:`claims_table`)."""
    return _table(_link_rows(check_rows(results, checks), checks, present, False))


PAPER_BEGIN = "<!-- the claims below are generated from dcgan/claims.yaml (dcgan.report.paper_claims): do not edit -->"
PAPER_END = "<!-- end of the generated claims -->"


def paper_claims(present: set[str] | None = None, claims: tuple[Claim, ...] = CLAIMS) -> str:
    """The paper page's list of claims (Markdown), grouped by the paper's sections.

    Each claim gets the label ``claim-<id>`` (the results page links to it), the paper's number, and links
    to the chapter section that tests it (when that chapter is in ``present``; None: all) and to the results
    page, where its verdict is.
    """
    lines, group = [PAPER_BEGIN, ""], None
    for c in claims:
        if c.group != group:
            group = c.group
            lines += [f"### {group}", ""]
        lines += [f"({CLAIM_LABEL}{c.id})=", f"#### {c.section}: {c.text}", "",
                  f"*The paper:* {c.paper}. *Tested in* {chapter_ref(c, present)}; *verdict:* on the "
                  "{ref}`results page <results-claims>`.", ""]
    return "\n".join(lines + [PAPER_END]) + "\n"


def write_paper_page(template: str | Path, out_path: str | Path, present: set[str] | None = None) -> Path:
    """Copy the paper page ``template`` to ``out_path`` with its generated claims replaced by
    :func:`paper_claims` for the chapters in ``present`` (so a partial build links only what it has)."""
    text = Path(template).read_text()
    if PAPER_BEGIN not in text or PAPER_END not in text:
        raise ValueError(f"{template} has no generated claims section ({PAPER_BEGIN!r} ... {PAPER_END!r})")
    head, rest = text.split(PAPER_BEGIN, 1)
    tail = rest.split(PAPER_END, 1)[1]
    out = Path(out_path)
    out.write_text(head + paper_claims(present).rstrip("\n") + tail)
    return out


def results_table(results: list[Result]) -> str:
    """A Markdown table of every recorded result (intervals beside their values), after a line per chapter
    with the profile, seed and hardware its numbers come from (kept out of the table so that it fits the page)."""
    f = Found(results)
    runs: dict[str, list[str]] = {}  # profile, seed and hardware -> the chapters whose numbers they made
    for r in results:
        chapters = runs.setdefault(f"`{r.profile}` profile, seed {r.seed}, {r.hardware}", [])
        if r.chapter not in chapters:
            chapters.append(r.chapter)
    head = "Where the numbers come from: " + "; ".join(
        f"{k} (chapters {', '.join(ch.split('_', 1)[0] for ch in v)})" for k, v in runs.items()) + ".\n\n" if runs else ""
    head += ("| chapter | result | ours [95% interval] | paper | unit | data set |\n"
             "|---|---|---|---|---|---|\n")
    rows = []
    for r in results:
        iv = f.interval(r.name)
        if r.name.endswith(CI_SUFFIXES) and any(q.name == r.name.rsplit("_ci_", 1)[0] for q in results):
            continue  # shown beside its value
        ours = _fmt(r.value) + (f" [{_fmt(iv[0])}, {_fmt(iv[1])}]" if iv else "")
        rows.append(f"| {r.chapter} | {r.name} | {_cell(ours)} | {_cell(_fmt(r.paper))} | {_cell(r.unit)} | "
                    f"{_cell(r.dataset)} |")
    return head + "\n".join(rows) + "\n"


def tally(rows: list[dict], verdicts: tuple[str, ...] = VERDICTS) -> str:
    """"3 reproduced, 1 partly, ..." over the given rows, in verdict order."""
    counts = {v: sum(r["verdict"] == v for r in rows) for v in verdicts}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n)


def gate_status(results: Iterable[Result], model: str) -> tuple[bool | None, str]:
    """(passed, a phrase for the prose) of ``<model>_gate`` among ``results``; passed is None when not recorded.

    The phrase completes "the generator ...": "passes the quality gate (fid 40, precision 0.6, recall 0.3)".
    """
    results = list(results)
    f = Found(results)
    r = f.one(_escape(f"{model}_gate"))
    seeds = seed_gates(results, model)
    if r is None and not seeds:
        return None, "has no quality gate recorded (chapter 02 has not run under this profile)"
    ok = (r is None or _num(r.value) == 1) and all(seeds.values())
    if seeds:  # several GAN seeds (issue 22): the model passes only when every seed does
        below = [s for s, passed in seeds.items() if not passed]
        nums = "; ".join(filter(None, (_gate_numbers(f, f"{model}_s{s}", label=f"seed {s}") for s in below)))
        head = (f"passes the quality gate in all {len(seeds)} GAN seeds" if ok else
                f"is below the quality gate in {len(below)} of {len(seeds)} GAN seeds")
        return ok, head + (f" ({nums})" if nums else "")
    nums = _gate_numbers(f, model)
    return ok, ("passes" if ok else "is below") + " the quality gate" + (f" ({nums})" if nums else "")


def chapter_verdicts(results: Iterable[Result]) -> str:
    """Markdown bullets, one per claim these results bear on, with the results page's verdict and evidence.

    A chapter passes its own results (``res.results.values()``, gates
    included), so its verdict sentences come from the same rules as the
    results page and are never typed by hand.
    """
    results = list(results)
    lines = []
    for r in claim_rows(results):
        if not r["measured"]:  # a claim these results do not bear on (not run, or only the paper's data can test it)
            continue
        ours = f" ({r['ours']})" if r["ours"] != "–" else ""
        lines.append(f"- **{r['section']}** {r['claim']}: **{r['verdict']}**{ours}.")
    return "\n".join(lines) if lines else "No claim of the paper is decided by this chapter's results."


def control_line(text: str, diff: float, lo: float, hi: float, gate_ok: bool, unit: str = "points") -> str:
    """A chapter's control (not a claim of the paper) as a Markdown bullet, judged like the results page judges a
    difference: *holds* when the 95% interval [lo, hi] of ``diff`` lies above zero, *does not hold* below it,
    *inconclusive (within noise)* across it; a model below the quality gate (``gate_ok`` False) decides nothing."""
    word = interval_verdict(lo, hi)
    word = BELOW_GATE if not gate_ok else {REPRODUCED: "holds", NOT_REPRODUCED: "does not hold"}.get(word, word)
    return f"- *{text}*: **{word}** ({diff:+.1f} {unit}, paired 95% interval {lo:+.1f} to {hi:+.1f})."


def at_a_glance(results: Iterable[Result]) -> str:
    """The chapter's *at a glance* box (Markdown bullets), generated from its recorded results.

    First the quality gate of every model the chapter builds on (pass/fail with FID against its limit),
    then each claim of the paper its results bear on with the results page's verdict and the first number
    behind it (with its 95 % interval when recorded), then its implementation checks; last, the profile,
    seeds (the chapter's, and the GAN seeds its per-seed gates name), data and hardware behind the numbers.
    Nothing in it is typed by hand.
    """
    results = list(results)
    f = Found(results)
    lines = []
    for r in results:
        # per-seed gates are summarised by their model's
        if not r.name.endswith("_gate") or "_seed" in r.name or _SEED_GATE.search(r.name):
            continue
        model = r.name[: -len("_gate")]
        ok = _num(r.value) == 1
        seeds = {s: f.one(_escape(f"{model}_s{s}_gate_fid")) for s in seed_gates(results, model)}
        fid, lim = f.one(_escape(f"{r.name}_fid")), f.one(_escape(f"{r.name}_fid_limit"))
        acc = f.one(_escape(f"{r.name}_classifier_accuracy"))
        if seeds:  # GAN seeds (issue 22): each seed's FID, against the limit they share
            fids = [x for x in seeds.values() if x is not None]
            lims = [f.one(_escape(f"{model}_s{s}_gate_fid_limit")) for s in seeds]
            limit = next((x.value for x in lims if x is not None), None)
            accs = [f.one(_escape(f"{model}_s{s}_gate_classifier_accuracy")) for s in seeds]
            acc = next((x for x in accs if x is not None), acc)
            n_bad = len(seeds) - sum(seed_gates(results, model).values())
            ok = ok and not n_bad  # a failed seed record fails the model, whatever its summary record says
            nums = ((f" in {n_bad} of {len(seeds)} GAN seeds" if n_bad else f" in all {len(seeds)} GAN seeds")
                    + (f" (FID {', '.join(_fmt(x.value) for x in fids)}"
                    + (f", limit {_fmt(limit)}" if limit is not None else "")
                    + (f"; features of a classifier with {_fmt(acc.value)}% held-out accuracy" if acc is not None else "")
                    + ")" if fids else ""))
        else:
            nums = (f" (FID {_fmt(fid.value)}, limit {_fmt(lim.value)}"
                    + (f"; features of a classifier with {_fmt(acc.value)}% held-out accuracy" if acc is not None else "")
                    + ")") if fid is not None and lim is not None else ""
        lines.append(f"- Quality gate of `{model}` ({r.dataset}): **{'passes' if ok else 'fails'}**{nums}"
                     + ("" if ok else "; no verdict is drawn from it") + ".")
    for row in claim_rows(results) + check_rows(results):
        if not row["measured"]:
            continue
        words = f" ({row['words']})" if row["words"] != "–" else ""
        lines.append(f"- **{row['verdict']}**: {row['section']} {row['claim']}{words}.")
    if not lines:
        lines.append("- This chapter records no verdict on a claim of the paper (see its sections for what it measures).")
    if results:
        r0 = results[0]
        data = ", ".join(sorted({r.dataset for r in results if r.dataset}))
        # the chapter's seed draws its labels and noise; its verdicts rest on every GAN seed its per-seed gates name
        gan = sorted({int(m.group(1)) for r in results if (m := _SEED_GATE.search(r.name))})
        gan_seeds = f" (GAN seeds {', '.join(map(str, gan))})" if gan else ""
        lines.append(f"\n*`{r0.profile}` profile, seed {r0.seed}{gan_seeds}, {r0.hardware}; data: {data}. "
                     "Generated from the numbers this chapter recorded when it ran.*")
    return "\n".join(lines)


INTRO = """---
html_theme.sidebar_secondary.remove: true
---

# Results

Every claim of the paper, next to what this book measured (generated from the numbers the chapters last recorded):
{numref}`fig-results-forest` draws every number a verdict rests on, the table says each in words; the results behind
each verdict by name are folded under it, and every recorded number is at the end of the page.

"""

HOW = """```{admonition} How a verdict is reached
:class: dropdown

The checks, in order:

1. **not run**: no chapter recorded a matching result;
2. **needs the paper's data**: the claim is a number on a data set we ran a stand-in for, or one
   that only the paper's data can test (run the chapter with `--profile paper`);
3. a claim about what a trained model does first checks that model's *quality gate* (recorded by
   the chapter as `<model>_gate`): **inconclusive: model below the quality gate** or
   **inconclusive: no quality gate recorded**;
4. a comparative claim is judged on the 95% interval of the claimed difference: **reproduced** when
   it excludes zero in the paper's direction, **not reproduced** when it excludes zero in the other,
   **inconclusive (within noise)** when it contains zero, **inconclusive (no interval)** when the
   chapter recorded none; a measurement against a fixed line (a cut rate, a false-positive rate)
   must clear it with its whole interval when one is recorded. A claim that samples are *not* memorised
   (§4.1) is judged on the excess of near-copies of training images among samples over held-out test
   images: **not reproduced** when its interval lies above zero, **reproduced** when it does not and
   rules out an excess of 3 points, **inconclusive (within noise)** otherwise. **partly**: reproduced for one
   model, data set or measure and not for another. The ablations of §3 and §4 (chapter 08) look at two
   measures, FID and the share of unstable runs, so each is judged on its 97.5% interval (Bonferroni):
   the claim's chance of a false verdict stays at 5%.

The claims are data in `dcgan/claims.yaml`, each naming the rule in `dcgan/report.py` that judges it and
the words that say its numbers; the {doc}`paper page <paper>` states them in the paper's order.
"figures only" and "no number" mark claims the paper supports with pictures or words, which the chapters
turn into measurements. Each row links to its claim there and to the chapter section that tests it.
```

"""

FOREST = "_generated/results_forest.png"  # written next to results.md by write_results_page


def _forest_block(n_points: int) -> str:
    return (f"```{{figure}} {FOREST}\n:name: fig-results-forest\n:width: 100%\n\n"
            f"The {n_points} numbers the verdicts rest on, with their 95% intervals (hollow: none), coloured by "
            "verdict, grouped by section; shaded: the side the paper claims. Left: differences of two conditions "
            "against zero. Right: numbers against a fixed line (or a table's number), divided by it; >: beyond "
            "the axis.\n```\n\n")


def write_results_page(results_dir: str | Path, out_path: str | Path) -> Path:
    """Write the Markdown results page for every ``*.results.json`` under ``results_dir``, and its forest plot
    (:func:`dcgan.forest.write_forest`) as ``_generated/results_forest.png`` next to it."""
    from .forest import write_forest

    results = load_results(results_dir)
    rows = claim_rows(results)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_forest(results, out.parent / FOREST)
    present = {p.stem for p in Path(results_dir).glob("[0-9][0-9]_*.ipynb")}
    text = INTRO + _forest_block(sum(len(r["points"]) for r in rows))
    text += "(results-claims)=\n## The paper's claims\n\n" + _table(_link_rows(rows, CLAIMS, present, True))
    text += f"\nTally of the paper's claims: {tally(rows)}.\n\n"
    text += ("```{admonition} The results behind each verdict, by name\n:class: dropdown\n\n"
             + _details_table(rows) + "```\n\n" + HOW)
    text += ("## Implementation checks\n\nChecks of this book's own code against the paper's recipe; they are not "
             "claims of the paper and are not in the tally.\n\n" + checks_table(results, present=present))
    text += "\n## Every recorded number\n\n"
    text += results_table(results) if results else "No chapter has recorded results yet: run `make book`.\n"
    out.write_text(text)
    return out
