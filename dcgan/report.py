"""The book's results page: every claim of the paper (../shared/PAPER.md) against what the chapters measured.

Each :class:`Claim` names the results (by name pattern) that bear on it, the
quality gates of the models it relies on, and a rule that turns the results
into a verdict. The order of the checks (:func:`claim_rows`):

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
   interval)* when the chapter recorded none.

Conventions of the results registry this module reads:

* a result ``X`` may come with ``X_ci_lo`` and ``X_ci_hi`` (a 95 % interval);
* a comparison is recorded as ``<a>_minus_<b>`` with its own interval;
* a chapter records the quality gate of each model it uses as ``<model>_gate``
  (1 pass, 0 fail) with ``<model>_gate_fid``, ``_gate_precision`` and
  ``_gate_recall`` (e.g. ``emoji-32_gate``; ``stability_dcgan_gate`` for the
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .results import Result, load_results

__all__ = ["Claim", "CLAIMS", "CHECKS", "VERDICTS", "CHECK_VERDICTS", "REPRODUCED", "PARTLY", "NOT_REPRODUCED",
           "WITHIN_NOISE", "NO_INTERVAL", "BELOW_GATE", "NO_GATE", "INCONCLUSIVE", "PAPER_DATA_NEEDED", "NOT_RUN",
           "interval_verdict", "combine", "claim_rows", "check_rows", "claims_table", "checks_table",
           "results_table", "chapter_verdicts", "at_a_glance", "gate_status", "tally", "write_results_page", "on_paper_data"]

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
    d = r.dataset.lower()
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

    return rule


def _all(*rules: Callable[[Found], str]) -> Callable[[Found], str]:
    """Several measures of one claim, combined (:func:`combine`); a measure that did not run is left out."""
    return lambda f: combine(rule(f) for rule in rules)


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


def _variant_worse(v: str) -> Callable[[Found], str]:
    """A broken guideline should cost FID or make more runs unstable, beyond noise.

    FID: the interval of ``stability_<v>_minus_dcgan_fid`` when recorded; else,
    with a seed spread for both, the difference +- 2 x the spread of a
    difference of two runs (conservative: a spread, not a standard error).
    Instability: the Newcombe interval of the difference in the share of
    unstable runs. One measure beyond noise in the paper's direction (and
    none in the other) reproduces the claim.
    """
    from .intervals import newcombe_diff_ci

    def rule(f: Found) -> str:
        name = f"stability_{v}_minus_dcgan_fid"
        fid, base = f.value(f"stability_{v}_fid"), f.value("stability_dcgan_fid")
        iv = f.interval(name)
        if iv is None and fid is not None and base is not None:
            sd = math.hypot(f.value(f"stability_{v}_fid_std") or 0.0, f.value("stability_dcgan_fid_std") or 0.0)
            if sd > 0:
                iv = (fid - base - 2 * sd, fid - base + 2 * sd)
        verdicts = [interval_verdict(*iv) if iv else NO_INTERVAL]
        uv, ub = _unstable(f, v), _unstable(f, "dcgan")
        if uv and ub:
            _, lo, hi = newcombe_diff_ci(uv[0], uv[1], ub[0], ub[1])
            verdicts.append(interval_verdict(lo, hi))
        if fid is None and uv is None and f.one(_escape(name)) is None:
            return NOT_RUN  # only the reference ran
        if REPRODUCED in verdicts and NOT_REPRODUCED in verdicts:
            return PARTLY  # worse on one measure, better on the other
        for v_ in (REPRODUCED, NOT_REPRODUCED, WITHIN_NOISE):
            if v_ in verdicts:
                return v_
        return NO_INTERVAL

    return rule


def _smooth(prefix: str) -> Callable[[Found], str]:
    """No cut (one frame carrying over half of a walk's change) in more than 10 % of the slerp walks."""
    return _threshold(f"{prefix}_slerp_*_cut_rate", 0.1, direction=-1)


def _nn_matches(f: Found) -> str:
    """Generated-data 1-NN error within a margin of the real-data error (an equivalence claim).

    ``mnist_nn_error_generated_<variant>_minus_real`` with its interval; the margin is
    10 % of the real-data error plus half a point. The best variant decides (the paper's
    claim is about its best model).
    """
    real = f.value("mnist_nn_error_real")
    margin = 0.1 * real + 0.5 if real is not None else 1.0
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


def _guidelines(f: Found) -> str:
    v = f.value("guidelines_hold")
    return NOT_RUN if v is None else "passes" if v == 1 else "fails"


def _init(f: Found) -> str:
    v = f.value("init_std")
    return NOT_RUN if v is None else "passes" if abs(v - 0.02) <= 0.001 else "fails"


# ---------------------------------------------------------------- the claims

ABLATION_GATE = ("stability_dcgan_gate",)
EMOJI_GATE, FASHION_GATE = ("emoji-*_gate",), ("fashion-mnist-*_gate",)
MODELS = (("emoji", "emoji generator", EMOJI_GATE), ("fashion", "Fashion-MNIST generator", FASHION_GATE))


def _ablation(section: str, text: str, v: str, instability: str) -> Claim:
    return Claim(section, text, "no number",
                 (f"stability_{v}_minus_dcgan_fid", f"stability_{v}_fid", "stability_dcgan_fid",
                  f"stability_{v}_{instability}", "stability_dcgan_" + instability),
                 _variant_worse(v), gates=ABLATION_GATE)


CHECKS: tuple[Claim, ...] = (
    Claim("§3", "The four architecture guidelines hold in our G and D (all-convolutional, no FC hidden layers, BN "
          "except G's output/D's input, ReLU/LeakyReLU)", "architecture, Fig. 1", ("guidelines_hold",), _guidelines),
    Claim("§4", "Our weights are initialised from N(0, 0.02)", "std 0.02", ("init_std",), _init),
)

CLAIMS: tuple[Claim, ...] = (
    _ablation("§3 (1)", "Strided convolutions instead of pooling make training more stable", "max-pooling",
              "oscillating"),
    _ablation("§3 (2)", "No fully connected hidden layers", "fc-hidden", "oscillating"),
    _ablation("§3 (3)", "BatchNorm is critical (without it G collapses)", "no-batchnorm", "mode_collapse"),
    _ablation("§3 (3)", "BatchNorm on G's output and D's input causes sample oscillation and instability",
              "bn-everywhere", "oscillating"),
    _ablation("§3 (4)", "LeakyReLU in D works well (better than ReLU)", "relu-in-d", "oscillating"),
    _ablation("§4", "Learning rate 0.001 is too high (0.0002 used)", "lr-0.001", "diverged"),
    _ablation("§4", "Adam beta1 = 0.9 causes oscillation and instability (0.5 used)", "beta1-0.9", "oscillating"),
    Claim("§4.1", "Samples after training are not memorised training images (Fashion-MNIST generator)",
          "figures only", ("fashion-mnist-*_nn_ratio",), _threshold("fashion-mnist-*_nn_ratio", 0.9),
          gates=FASHION_GATE),
    Claim("§4.1", "Samples after training are not memorised training images (emoji generator)", "figures only",
          ("emoji-*_nn_ratio",), _threshold("emoji-*_nn_ratio", 0.9), gates=EMOJI_GATE),
    Claim("§4.1.1", "Semantic-hash de-duplication has a false-positive rate under 1 in 100 (radius chosen on one "
          "half of the planted pairs, scored on the other)", "< 1%",
          ("*hash_fp_rate",), _threshold("*hash_fp_rate", 0.01, direction=-1)),
    Claim("§5.1 Table 1", "DCGAN D features + L2-SVM on CIFAR-10", "82.8% accuracy",
          ("transfer_dcgan_test_accuracy",), _paper_number("transfer_dcgan_test_accuracy", 82.8, 1.5, 5),
          data_bound=True, gates=FASHION_GATE + ("imagenet*_gate",)),
    Claim("§5.1 Table 1", "1-layer K-means (4800 maps) on CIFAR-10", "80.6% accuracy",
          ("transfer_kmeans_test_accuracy",), _paper_number("transfer_kmeans_test_accuracy", 80.6, 1.5, 5),
          data_bound=True),
    Claim("§5.1", "DCGAN features beat K-means features", "+2.2 points",
          ("transfer_dcgan_minus_kmeans",), _diff("transfer_dcgan_minus_kmeans"),
          gates=FASHION_GATE + ("imagenet*_gate",)),
    Claim("§5.2 Table 2", "SVHN, 1000 labels: DCGAN D features + L2-SVM", "22.48% test error",
          ("semi_dcgan_test_error",), _paper_number("semi_dcgan_test_error", 22.48, 1.5, 5), data_bound=True,
          gates=FASHION_GATE + ("svhn*_gate",)),
    Claim("§5.2", "The same CNN trained supervised on the 1000 labels does worse", "28.87% validation error",
          ("semi_supervised_minus_dcgan_error", "semi_supervised_cnn_val_error"),
          _diff("semi_supervised_minus_dcgan_error"), gates=FASHION_GATE + ("svhn*_gate",)),
    *(Claim("§6.1", f"Walks in the latent space change the images smoothly, no cuts ({what})", "figures only",
            (f"{k}_slerp_pixel_cut_rate", f"{k}_slerp_feature_cut_rate"), _smooth(k), gates=gate)
      for k, what, gate in MODELS),
    *(Claim("§6.2", f"D's last-layer features respond to semantic parts; random filters do not "
            f"({what.replace('generator', 'discriminator')})",
            "figures only", (f"{k}_purity_trained_minus_random", f"{k}_purity_trained", f"{k}_purity_random",
                             f"{k}_purity_chance"),
            _diff(f"{k}_purity_trained_minus_random"), gates=gate)
      for k, what, gate in MODELS),
    Claim("§6.3.1", "Dropping the maps that predict an object makes G forget to draw it (emoji generator)",
          "figures only",
          ("emoji_forget_removed_minus_control", "emoji_forget_removed", "emoji_forget_removed_control"),
          _diff("emoji_forget_removed_minus_control"), gates=EMOJI_GATE),
    *(Claim("§6.3.2", f"Vector arithmetic on averaged z gives the target concept, more often than pixel arithmetic "
            f"and than random samples, by an independent judge ({what})", "figures only",
            (f"{k}_arith_latent_minus_pixel", f"{k}_arith_latent_minus_base", f"{k}_arith_latent_rate",
             f"{k}_arith_pixel_rate", f"{k}_arith_base_rate"),
            _all(_diff(f"{k}_arith_latent_minus_pixel"), _diff(f"{k}_arith_latent_minus_base")), gates=gate)
      for k, what, gate in MODELS),
    *(Claim("§6.3.2 Fig. 8", f"An averaged direction vector added along a walk changes the attribute, by an "
            f"independent judge ({what})", "figures only",
            (f"{k}_direction_*_turned_minus_plain", f"{k}_direction_*_turned", f"{k}_direction_*_plain"),
            _diff(f"{k}_direction_*_turned_minus_plain"), gates=gate)
      for k, what, gate in MODELS),
    Claim("§7", "Longer training collapses a subset of filters", "no number",
          ("filter_collapse_dcgan_last_minus_first", "filter_collapse_dcgan_first_epoch",
           "filter_collapse_dcgan_last_epoch"), _diff("filter_collapse_dcgan_last_minus_first"), gates=ABLATION_GATE),
    Claim("§8.1", "1-NN on conditional DCGAN samples matches 1-NN on real MNIST", "plot only",
          ("mnist_nn_error_generated_*_minus_real", "mnist_nn_error_real", "mnist_nn_error_generated_affine",
           "mnist_nn_error_generated_noaffine"), _nn_matches, gates=("mnist-cond*_gate",)),
    Claim("§8.1", "Removing BatchNorm's scale and bias helps", "plot only",
          ("mnist_nn_error_generated_affine_minus_noaffine", "mnist_nn_error_generated_noaffine",
           "mnist_nn_error_generated_affine"),
          _diff("mnist_nn_error_generated_affine_minus_noaffine"), gates=("mnist-cond*_gate",)),
    Claim("other", "Inception FID of GANs: Fashion-MNIST 26.5, MNIST 6.8 (Lucic et al.); DCGAN CelebA 21.4, LSUN "
          "70.4 (Heusel et al.)", "FID (Inception)", ("*_fid_final",), lambda f: PAPER_DATA_NEEDED,
          data_bound=True),
)


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
    gates: dict[str, Result] = {}
    for p in c.gates:
        for r in f(p):
            if r.name.endswith("_gate"):
                gates.setdefault(r.name, r)
    if not gates:
        return NO_GATE, f"no quality gate recorded ({', '.join(c.gates)})"
    parts, failed = [], False
    for name, r in gates.items():
        model = name[: -len("_gate")]
        ok = _num(r.value) == 1
        failed |= not ok
        nums = ", ".join(f"{k} {_fmt(f.value(_escape(f'{name}_{k}')))}" for k in ("fid", "precision", "recall")
                         if f.one(_escape(f"{name}_{k}")) is not None)
        parts.append(f"gate {model}: {'passed' if ok else 'below'}" + (f" ({nums})" if nums and not ok else ""))
    return (BELOW_GATE if failed else None), "; ".join(parts)


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
        if ruled == NOT_RUN:
            verdict, gate_text = NOT_RUN, ""
        elif c.data_bound and not any(on_paper_data(r) for r in matched):
            verdict, gate_text = PAPER_DATA_NEEDED, ""
        elif gate_verdict is not None:
            verdict = gate_verdict
        else:
            verdict = ruled
        if verdict not in allowed:
            raise ValueError(f"claim {c.section}: rule returned {verdict!r}, not one of {allowed}")
        ours, behind = _evidence(matched[:6], f)
        if matched and gate_text:
            ours = f"{ours}; {gate_text}" if ours else gate_text
        rows.append(dict(section=c.section, claim=c.text, paper=c.paper, ours=ours or "–", behind=behind or "–",
                         verdict=verdict))
    return rows


def claim_rows(results: list[Result], claims: tuple[Claim, ...] = CLAIMS) -> list[dict]:
    """One dict per claim of the paper: section, claim, paper, ours, behind (data/profile), verdict."""
    return _rows(results, claims, VERDICTS)


def check_rows(results: list[Result], checks: tuple[Claim, ...] = CHECKS) -> list[dict]:
    """The same for the implementation checks (verdicts: passes, fails, not run)."""
    return _rows(results, checks, CHECK_VERDICTS)


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict]) -> str:
    head = "| § | claim | paper | ours [95% interval] | data (profile) | verdict |\n|---|---|---|---|---|---|\n"
    lines = [f"| {_cell(r['section'])} | {_cell(r['claim'])} | {_cell(r['paper'])} | {_cell(r['ours'])} | "
             f"{_cell(r['behind'])} | **{r['verdict']}** |" for r in rows]
    return head + "\n".join(lines) + "\n"


def claims_table(results: list[Result], claims: tuple[Claim, ...] = CLAIMS) -> str:
    """The Markdown table of every claim with the paper's number, ours, the data behind ours and a verdict."""
    return _table(claim_rows(results, claims))


def checks_table(results: list[Result], checks: tuple[Claim, ...] = CHECKS) -> str:
    """The Markdown table of the implementation checks."""
    return _table(check_rows(results, checks))


def results_table(results: list[Result]) -> str:
    """A Markdown table of every recorded result with its provenance; intervals beside their values."""
    f = Found(results)
    head = ("| chapter | result | ours [95% interval] | paper | unit | data set | profile | hardware | seed |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in results:
        iv = f.interval(r.name)
        if r.name.endswith(CI_SUFFIXES) and any(q.name == r.name.rsplit("_ci_", 1)[0] for q in results):
            continue  # shown beside its value
        ours = _fmt(r.value) + (f" [{_fmt(iv[0])}, {_fmt(iv[1])}]" if iv else "")
        rows.append(f"| {r.chapter} | {r.name} | {_cell(ours)} | {_cell(_fmt(r.paper))} | {_cell(r.unit)} | "
                    f"{_cell(r.dataset)} | {r.profile} | {_cell(r.hardware)} | {r.seed} |")
    return head + "\n".join(rows) + "\n"


def tally(rows: list[dict], verdicts: tuple[str, ...] = VERDICTS) -> str:
    """"3 reproduced, 1 partly, ..." over the given rows, in verdict order."""
    counts = {v: sum(r["verdict"] == v for r in rows) for v in verdicts}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n)


def gate_status(results: Iterable[Result], model: str) -> tuple[bool | None, str]:
    """(passed, a phrase for the prose) of ``<model>_gate`` among ``results``; passed is None when not recorded.

    The phrase completes "the generator ...": "passes the quality gate (fid 40, precision 0.6, recall 0.3)".
    """
    f = Found(list(results))
    r = f.one(_escape(f"{model}_gate"))
    if r is None:
        return None, "has no quality gate recorded (chapter 02 has not run under this profile)"
    nums = ", ".join(f"{k} {_fmt(f.value(_escape(f'{model}_gate_{k}')))}" for k in ("fid", "precision", "recall")
                     if f.one(_escape(f"{model}_gate_{k}")) is not None)
    ok = _num(r.value) == 1
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
        if r["verdict"] == NOT_RUN:
            continue
        lines.append(f"- **{r['section']}** {r['claim']}: **{r['verdict']}** ({r['ours']}).")
    return "\n".join(lines) if lines else "No claim of the paper is decided by this chapter's results."


def at_a_glance(results: Iterable[Result]) -> str:
    """The chapter's *at a glance* box (Markdown bullets), generated from its recorded results.

    First the quality gate of every model the chapter builds on (pass/fail with FID against its limit),
    then each claim of the paper its results bear on with the results page's verdict and the first number
    behind it (with its 95 % interval when recorded), then its implementation checks; last, the profile,
    data and hardware behind the numbers. Nothing in it is typed by hand.
    """
    results = list(results)
    f = Found(results)
    lines = []
    for r in results:
        if not r.name.endswith("_gate") or "_seed" in r.name:  # per-seed gates are summarised by their model's
            continue
        model = r.name[: -len("_gate")]
        ok = _num(r.value) == 1
        fid = f.one(_escape(f"{r.name}_fid"))
        nums = f" (FID {_fmt(fid.value)}, limit {_fmt(fid.paper)})" if fid is not None and fid.paper else ""
        lines.append(f"- Quality gate of `{model}` ({r.dataset}): **{'passes' if ok else 'fails'}**{nums}"
                     + ("" if ok else "; no verdict is drawn from it") + ".")
    for row in claim_rows(results) + check_rows(results):
        if row["verdict"] == NOT_RUN:
            continue
        first = row["ours"].split("; ")[0]
        lines.append(f"- **{row['verdict']}**: {row['section']} {row['claim']} ({first}).")
    if not lines:
        lines.append("- This chapter records no verdict on a claim of the paper (see its sections for what it measures).")
    if results:
        r0 = results[0]
        data = ", ".join(sorted({r.dataset for r in results if r.dataset}))
        lines.append(f"\n*`{r0.profile}` profile, seed {r0.seed}, {r0.hardware}; data: {data}. Generated from the "
                     "numbers this chapter recorded when it ran.*")
    return "\n".join(lines)


INTRO = """# Results

Every claim of the paper, next to what this book measured. The tables are generated from the numbers
the chapters recorded when they were last executed (profile and data in the fifth column); a number
with a 95% interval is shown as "value [low, high]". The order of the checks behind a verdict:

1. **not run**: no chapter recorded a matching result;
2. **needs the paper's data**: the claim is a number on a data set we ran a stand-in for (run the
   chapter with `--profile paper`);
3. a claim about what a trained model does first checks that model's *quality gate* (recorded by
   the chapter as `<model>_gate`): **inconclusive: model below the quality gate** (its numbers are
   shown) or **inconclusive: no quality gate recorded**;
4. a comparative claim is judged on the 95% interval of the claimed difference: **reproduced** when
   it excludes zero in the paper's direction, **not reproduced** when it excludes zero in the other,
   **inconclusive (within noise)** when it contains zero, **inconclusive (no interval)** when the
   chapter recorded none; a measurement against a fixed line (a cut rate, a false-positive rate)
   must clear it with its whole interval when one is recorded. **partly**: reproduced for one
   model, data set or measure and not for another.

The rules are in `dcgan/report.py` (`CLAIMS`); "figures only" and "no number" mark claims the paper
supports with pictures or words, which the chapters turn into measurements.

"""


def write_results_page(results_dir: str | Path, out_path: str | Path) -> Path:
    """Write the Markdown results page for every ``*.results.json`` under ``results_dir``."""
    results = load_results(results_dir)
    rows = claim_rows(results)
    text = INTRO + "## The paper's claims\n\n" + _table(rows)
    text += f"\nTally of the paper's claims: {tally(rows)}.\n"
    text += ("\n## Implementation checks\n\nChecks of this book's own code against the paper's recipe; they are not "
             "claims of the paper and are not in the tally.\n\n" + checks_table(results))
    text += "\n## Every recorded number\n\n"
    text += results_table(results) if results else "No chapter has recorded results yet: run `make book`.\n"
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out
