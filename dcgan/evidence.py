"""What a verdict rests on, in numbers and in words (the results page's and each chapter's evidence).

Every rule of :mod:`dcgan.report` carries its :class:`Measure` s: which recorded results it judges,
against which line (0 for a difference ``<a>_minus_<b>``), in which direction the paper claims,
and whether it compares two conditions (``"diff"``), one measurement with a fixed line
(``"line"``) or a number with the paper's (``"paper"``). :func:`points` turns a claim's recorded
results into :class:`Point` s (the rows of the forest plots, :mod:`dcgan.forest`), and
:func:`sentence` says one in words from its numbers and the claim's ``says`` entry in
``dcgan/claims.yaml``: "ReLU in D: FID 4.0 lower than LeakyReLU [1.1, 7.0]". Nothing here is
typed by hand but the words for what was measured.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from typing import Callable

__all__ = ["Measure", "Point", "points", "sentence", "number"]

DIFF, LINE, PAPER = "diff", "line", "paper"


@dataclass(frozen=True)
class Measure:
    """One quantity a rule judges: the results matching ``pattern``, against ``at`` in ``direction``.

    ``direction`` +1: the paper claims the quantity is above ``at``; -1: below; 0: close to ``at``
    (the paper's number, within ``tol``). ``line(found)`` computes ``at`` when it depends on other
    results (None: ``at`` is fixed); ``interval(found, name)`` gives the interval the rule falls back
    on when the chapter recorded none (None: no fallback); ``derive(found)`` the number itself, from
    other results, when the chapter recorded the two sides but not their difference.
    """

    pattern: str
    direction: int
    at: float
    kind: str
    tol: float = 0.0
    line: Callable | None = None
    interval: Callable | None = None
    derive: Callable | None = None  # found -> (value, interval, unit, dataset) when no result matches pattern


@dataclass
class Point:
    """One number behind a verdict: a row of a forest plot and a clause of the "ours" sentence."""

    claim_id: str
    section: str
    group: str
    name: str  # the recorded result
    value: float
    lo: float | None
    hi: float | None
    at: float
    direction: int
    kind: str
    tol: float
    unit: str
    dataset: str
    what: str  # "ReLU in D"
    than: str  # "LeakyReLU" (a difference), "" otherwise
    sentence: str
    verdict: str = ""  # the claim's verdict, filled in by dcgan.report

    @property
    def label(self) -> str:
        return f"{self.what} vs {self.than}" if self.than and self.kind == DIFF else self.what


def number(x: float) -> str:
    """A number as a reader takes it in: 295, 4.0, 0.17 (about three significant digits, no exponent)."""
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 1:
        return f"{x:.1f}"
    if a == 0:
        return "0"
    return f"{x:.2g}" if a >= 1e-3 else f"{x:.1e}"


def _star(pattern: str, name: str) -> str:
    """The part of ``name`` that the first ``*`` of ``pattern`` matched, in words ("fashion_mnist_" -> "fashion mnist")."""
    if "*" not in pattern:
        return ""
    rx = "".join("(.*?)" if c == "*" else re.escape(c) for c in pattern)
    m = re.fullmatch(rx, name)
    return m.group(1).replace("_", " ").strip() if m else ""


def _unit_words(unit: str, measure: str) -> str:
    """What follows a number: " points", " %", "" (FID and shares say their unit in the measure)."""
    if unit in ("points", "%", "% filters"):
        return " points" if unit == "points" else " %"
    return ""


def sentence(say: dict, name: str, value: float, iv: tuple[float, float] | None, unit: str, kind: str,
             at: float = 0.0) -> str:
    """One number in words: "ReLU in D: FID 4.0 lower than LeakyReLU [1.1, 7.0]" (a difference, its interval
    turned with the word), "Hash on emoji: false-positive rate 0.094 [0.032, 0.24], above the 0.01 line",
    "DCGAN features: test accuracy 89.7 % [86.0, 93.0], 6.9 points from the paper's 82.8"."""
    star = _star(say.get("result", ""), name)
    what, measure = say["what"].replace("{}", star), say["measure"].replace("{}", star)
    than = str(say.get("than", "")).replace("{}", star)
    u = _unit_words(unit, measure)
    if than:  # a difference a - b
        if value == 0:
            core = f"{measure} the same as {than}"
        else:
            core = f"{measure} {number(abs(value))}{u} {'higher' if value > 0 else 'lower'} than {than}"
        if iv is not None:
            lo, hi = iv if value >= 0 else (-iv[1], -iv[0])
            core += f" [{number(lo)}, {number(hi)}]"
    else:
        core = f"{measure} {number(value)}{u}" + (f" [{number(iv[0])}, {number(iv[1])}]" if iv is not None else "")
    if kind == PAPER:
        gap = value - at
        core += f", {number(abs(gap))}{' points' if unit == '%' else u} {'from' if gap else 'at'} the paper's {number(at)}"
    elif kind == LINE:
        side = "above" if value > at else "below" if value < at else "on"
        core += f", {side} the {number(at)} {'margin' if than else 'line'}"
    return f"{what}: {core}"


def _num(v) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(v) else None
    return None


def points(claim, found, primary: Callable) -> list[Point]:
    """The :class:`Point` s behind ``claim`` among the results ``found`` (a :class:`dcgan.report.Found`),
    one per result its rule's measures judge that has a number; ``primary(found, pattern)`` lists the
    results of a pattern without their ``_ci_lo``/``_ci_hi`` companions."""
    says = {s["result"]: s for s in claim.says}
    out = []
    for m in getattr(claim.rule, "measures", ()):
        at = m.line(found) if m.line is not None else m.at
        rows = []
        for r in primary(found, m.pattern):
            iv = found.interval(r.name) or (m.interval(found, r.name) if m.interval is not None else None)
            rows.append((r.name, _num(r.value), iv, r.unit, r.dataset))
        if not rows and m.derive is not None and m.derive(found) is not None:
            rows.append((m.pattern, *m.derive(found)))
        for name, v, iv, unit, dataset in rows:
            if v is None:
                continue
            say = says.get(m.pattern) or next((s for p, s in says.items() if fnmatch.fnmatchcase(name, p)), None)
            say = say or {"result": m.pattern, "what": name.replace("_", " "), "measure": "value"}
            star = _star(say["result"], name)
            out.append(Point(claim.id, claim.section, claim.group, name, v, *(iv or (None, None)), at, m.direction,
                             m.kind, m.tol, unit, dataset, say["what"].replace("{}", star),
                             str(say.get("than", "")).replace("{}", star), sentence(say, name, v, iv, unit, m.kind, at)))
    return out
