"""The book's results page: every claim of the paper (../shared/PAPER.md) against what the chapters measured.

Each :class:`Claim` names the results (by name pattern) that bear on it and
a rule that turns them into a verdict: *reproduced*, *partly*, *not
reproduced*, *needs the paper's data* (ours ran on a stand-in and the
claim is a number on the paper's data) or *not run* (no chapter recorded a
matching result). The page is generated from the results registry
(:func:`dcgan.results.load_results`), so it always shows the numbers of the
last executed chapters; the full list of recorded results follows the
claims table.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .results import Result, load_results

__all__ = ["Claim", "CLAIMS", "VERDICTS", "claim_rows", "claims_table", "results_table", "write_results_page"]

VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive", "needs the paper's data", "not run")
PAPER_DATA = ("cifar10", "svhn", "mnist", "lsun", "celeba", "imagenet", "faces")
STAND_INS = ("mnist-10k", "fashion-mnist")  # names that contain a paper set's name but are not it


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


def _close(ours: float | None, paper: float, tol_yes: float, tol_partly: float) -> str:
    if ours is None:
        return "not run"
    gap = abs(ours - paper)
    return "reproduced" if gap <= tol_yes else "partly" if gap <= tol_partly else "not reproduced"


def _all_any(flags: list[bool]) -> str:
    if not flags:
        return "not run"
    return "reproduced" if all(flags) else "partly" if any(flags) else "not reproduced"


def _variant_worse(v: str) -> Callable[[Found], str]:
    """A broken guideline should cost FID (beyond the seed spread) or make more runs unstable."""

    def rule(f: Found) -> str:
        fid, base = f.value(f"stability_{v}_fid"), f.value("stability_dcgan_fid")
        if fid is None or base is None:
            return "not run"
        # Against a reference DCGAN that itself collapsed in most seeds, a ranking is no evidence either way.
        if (f.value("stability_dcgan_mode_collapse") or 0.0) > 0.5:
            return "inconclusive"
        sd = math.hypot(f.value(f"stability_{v}_fid_std") or 0.0, f.value("stability_dcgan_fid_std") or 0.0)
        worse_fid = fid - base > max(2 * sd, 0.1 * base)
        unstable = sum(f.value(f"stability_{v}_{k}") or 0.0 for k in ("diverged", "oscillating", "mode_collapse"))
        base_unstable = sum(f.value(f"stability_dcgan_{k}") or 0.0 for k in ("diverged", "oscillating", "mode_collapse"))
        more_unstable = unstable > base_unstable
        return "reproduced" if (worse_fid and more_unstable) else "partly" if (worse_fid or more_unstable) else \
            "not reproduced"

    return rule


def _memorise(f: Found) -> str:
    return _all_any([(_num(r.value) or 0) >= 0.9 for r in f("*_nn_ratio")])


def _fp_rate(f: Found) -> str:
    return _all_any([(_num(r.value) if _num(r.value) is not None else 1) < 0.01 for r in f("*hash_fp_rate")])


def _smooth(f: Found) -> str:
    rates = [_num(r.value) for r in f("*_slerp_*_cut_rate")]
    rates = [r for r in rates if r is not None]
    if not rates:
        return "not run"
    return "reproduced" if max(rates) <= 0.1 else "partly" if min(rates) <= 0.1 else "not reproduced"


def _gbp(f: Found) -> str:
    flags = []
    for r in f("*_purity_trained"):
        k = r.name[: -len("_purity_trained")]
        rand, chance = f.value(f"{k}_purity_random"), f.value(f"{k}_purity_chance")
        if rand is not None and chance is not None:
            flags.append(_num(r.value) > max(rand, chance) + 5)  # percentage points
    return _all_any(flags)


def _forget(f: Found) -> str:
    rem, ctl = f.value("*forget_removed"), f.value("*forget_removed_control")
    if rem is None or ctl is None:
        return "not run"
    return "reproduced" if rem > ctl + 10 else "partly" if rem > ctl else "not reproduced"


def _arith(f: Found) -> str:
    flags = []
    for r in f("*_arith_latent_rate"):
        k = r.name[: -len("_arith_latent_rate")]
        pix, base = f.value(f"{k}_arith_pixel_rate"), f.value(f"{k}_arith_base_rate")
        if pix is not None and base is not None:
            flags.append(_num(r.value) > max(pix, base))
    return _all_any(flags)


def _direction(f: Found) -> str:
    flags = []
    for r in f("*_direction_*_turned"):
        plain = f.value(r.name[: -len("turned")] + "plain")
        if plain is not None:
            flags.append(_num(r.value) > plain + 20)
    return _all_any(flags)


def _filters(f: Found) -> str:
    a, b = f.value("filter_collapse_dcgan_first_epoch"), f.value("filter_collapse_dcgan_last_epoch")
    if a is None or b is None:
        return "not run"
    return "reproduced" if b > a + 1 else "partly" if b > a else "not reproduced"


def _mnist_nn(f: Found) -> str:
    real = f.value("mnist_nn_error_real")
    gen = [v for v in (f.value("mnist_nn_error_generated_affine"), f.value("mnist_nn_error_generated_noaffine"))
           if v is not None]
    if real is None or not gen:
        return "not run"
    best = min(gen)
    return "reproduced" if best <= real * 1.1 + 0.5 else "partly" if best <= 2 * real else "not reproduced"


def _mnist_affine(f: Found) -> str:
    a, n = f.value("mnist_nn_error_generated_affine"), f.value("mnist_nn_error_generated_noaffine")
    if a is None or n is None:
        return "not run"
    return "reproduced" if n < a - 0.5 else "partly" if n <= a else "not reproduced"


def _paper_number(pattern: str, paper: float, tol_yes: float, tol_partly: float) -> Callable[[Found], str]:
    def rule(f: Found) -> str:
        return _close(f.value(pattern), paper, tol_yes, tol_partly)

    return rule


def _sign(pattern: str) -> Callable[[Found], str]:
    """A gap the paper reports as positive: reproduced if ours is positive too."""

    def rule(f: Found) -> str:
        v = f.value(pattern)
        return "not run" if v is None else "reproduced" if v > 0 else "not reproduced"

    return rule


def _guidelines(f: Found) -> str:
    v = f.value("guidelines_hold")
    return "not run" if v is None else "reproduced" if v == 1 else "not reproduced"


def _init(f: Found) -> str:
    return _close(f.value("init_std"), 0.02, 0.001, 0.005)


CLAIMS: tuple[Claim, ...] = (
    Claim("§3", "The four architecture guidelines define the DCGAN (all-convolutional, no FC hidden layers, BN "
          "except G's output/D's input, ReLU/LeakyReLU)", "architecture, Fig. 1", ("guidelines_hold",), _guidelines),
    Claim("§4", "Weights initialised from N(0, 0.02)", "std 0.02", ("init_std",), _init),
    Claim("§3 (1)", "Strided convolutions instead of pooling make training more stable", "no number",
          ("stability_max-pooling_fid", "stability_dcgan_fid", "stability_max-pooling_oscillating"),
          _variant_worse("max-pooling")),
    Claim("§3 (2)", "No fully connected hidden layers", "no number",
          ("stability_fc-hidden_fid", "stability_dcgan_fid", "stability_fc-hidden_oscillating"),
          _variant_worse("fc-hidden")),
    Claim("§3 (3)", "BatchNorm is critical (without it G collapses)", "no number",
          ("stability_no-batchnorm_fid", "stability_dcgan_fid", "stability_no-batchnorm_mode_collapse"),
          _variant_worse("no-batchnorm")),
    Claim("§3 (3)", "BatchNorm on G's output and D's input causes sample oscillation and instability", "no number",
          ("stability_bn-everywhere_fid", "stability_dcgan_fid", "stability_bn-everywhere_oscillating"),
          _variant_worse("bn-everywhere")),
    Claim("§3 (4)", "LeakyReLU in D works well (better than ReLU)", "no number",
          ("stability_relu-in-d_fid", "stability_dcgan_fid", "stability_relu-in-d_oscillating"),
          _variant_worse("relu-in-d")),
    Claim("§4", "Learning rate 0.001 is too high (0.0002 used)", "no number",
          ("stability_lr-0.001_fid", "stability_dcgan_fid", "stability_lr-0.001_diverged"), _variant_worse("lr-0.001")),
    Claim("§4", "Adam beta1 = 0.9 causes oscillation and instability (0.5 used)", "no number",
          ("stability_beta1-0.9_fid", "stability_dcgan_fid", "stability_beta1-0.9_oscillating"),
          _variant_worse("beta1-0.9")),
    Claim("§4.1", "Samples after training are not memorised training images", "figures only",
          ("*_nn_ratio",), _memorise),
    Claim("§4.1.1", "Semantic-hash de-duplication has a false-positive rate under 1 in 100", "< 1%",
          ("*hash_fp_rate",), _fp_rate),
    Claim("§5.1 Table 1", "DCGAN D features + L2-SVM on CIFAR-10", "82.8% accuracy",
          ("transfer_dcgan_test_accuracy",), _paper_number("transfer_dcgan_test_accuracy", 82.8, 1.5, 5),
          data_bound=True),
    Claim("§5.1 Table 1", "1-layer K-means (4800 maps) on CIFAR-10", "80.6% accuracy",
          ("transfer_kmeans_test_accuracy",), _paper_number("transfer_kmeans_test_accuracy", 80.6, 1.5, 5),
          data_bound=True),
    Claim("§5.1", "DCGAN features beat K-means features", "+2.2 points",
          ("transfer_dcgan_minus_kmeans",), _sign("transfer_dcgan_minus_kmeans")),
    Claim("§5.2 Table 2", "SVHN, 1000 labels: DCGAN D features + L2-SVM", "22.48% test error",
          ("semi_dcgan_test_error",), _paper_number("semi_dcgan_test_error", 22.48, 1.5, 5), data_bound=True),
    Claim("§5.2", "The same CNN trained supervised on the 1000 labels does worse", "28.87% validation error",
          ("semi_supervised_cnn_val_error", "semi_supervised_minus_dcgan_error"),
          _sign("semi_supervised_minus_dcgan_error")),
    Claim("§6.1", "Walks in the latent space change the images smoothly (no memorisation)", "figures only",
          ("*_slerp_pixel_cut_rate", "*_slerp_feature_cut_rate"), _smooth),
    Claim("§6.2", "D's last-layer features respond to semantic parts; random filters do not", "figures only",
          ("*_purity_trained", "*_purity_random", "*_purity_chance"), _gbp),
    Claim("§6.3.1", "Dropping the maps that predict an object makes G forget to draw it", "figures only",
          ("emoji_forget_removed", "emoji_forget_removed_control"), _forget),
    Claim("§6.3.2", "Vector arithmetic on averaged z gives the target concept; pixel arithmetic does not",
          "figures only", ("*_arith_latent_rate", "*_arith_pixel_rate", "*_arith_base_rate"), _arith),
    Claim("§6.3.2 Fig. 8", "An averaged direction vector added along a walk changes the attribute",
          "figures only", ("*_direction_*_turned", "*_direction_*_plain"), _direction),
    Claim("§7", "Longer training collapses a subset of filters", "no number",
          ("filter_collapse_dcgan_first_epoch", "filter_collapse_dcgan_last_epoch"), _filters),
    Claim("§8.1", "1-NN on conditional DCGAN samples matches 1-NN on real MNIST", "plot only",
          ("mnist_nn_error_real", "mnist_nn_error_generated_affine", "mnist_nn_error_generated_noaffine"), _mnist_nn),
    Claim("§8.1", "Removing BatchNorm's scale and bias helps", "plot only",
          ("mnist_nn_error_generated_noaffine", "mnist_nn_error_generated_affine"), _mnist_affine),
    Claim("other", "Inception FID of GANs: Fashion-MNIST 26.5, MNIST 6.8 (Lucic et al.); DCGAN CelebA 21.4, LSUN "
          "70.4 (Heusel et al.)", "FID (Inception)", ("*_fid_final",), lambda f: "needs the paper's data",
          data_bound=True),
)


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _evidence(rs: list[Result]) -> tuple[str, str]:
    ours = "; ".join(f"{r.name} = {_fmt(r.value)}{(' ' + r.unit) if r.unit and len(r.unit) < 12 else ''}"
                     for r in rs)
    behind = "; ".join(sorted({f"{r.dataset} ({r.profile})" for r in rs}))
    return ours, behind


def claim_rows(results: list[Result], claims: tuple[Claim, ...] = CLAIMS) -> list[dict]:
    """One dict per claim: section, claim, paper, ours, data/profile, verdict."""
    f = Found(results)
    rows = []
    for c in claims:
        matched: list[Result] = []
        for p in c.patterns:
            for r in f(p):
                if r not in matched:
                    matched.append(r)
        if not matched:
            verdict = "not run"
        else:
            verdict = c.rule(f)
            if c.data_bound and not any(on_paper_data(r) for r in matched):
                verdict = "needs the paper's data"
        if verdict not in VERDICTS:
            raise ValueError(f"claim {c.section}: rule returned {verdict!r}, not one of {VERDICTS}")
        ours, behind = _evidence(matched[:6])
        rows.append(dict(section=c.section, claim=c.text, paper=c.paper, ours=ours or "–", behind=behind or "–",
                         verdict=verdict))
    return rows


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def claims_table(results: list[Result], claims: tuple[Claim, ...] = CLAIMS) -> str:
    """The Markdown table of every claim with the paper's number, ours, the data behind ours and a verdict."""
    head = "| § | claim | paper | ours | data (profile) | verdict |\n|---|---|---|---|---|---|\n"
    lines = [f"| {_cell(r['section'])} | {_cell(r['claim'])} | {_cell(r['paper'])} | {_cell(r['ours'])} | "
             f"{_cell(r['behind'])} | **{r['verdict']}** |" for r in claim_rows(results, claims)]
    return head + "\n".join(lines) + "\n"


def results_table(results: list[Result]) -> str:
    """A Markdown table of every recorded result with its provenance."""
    head = "| chapter | result | ours | paper | unit | data set | profile | hardware | seed |\n|---|---|---|---|---|---|---|---|---|\n"
    rows = [
        f"| {r.chapter} | {r.name} | {_cell(_fmt(r.value))} | {_cell(_fmt(r.paper))} | {_cell(r.unit)} | "
        f"{_cell(r.dataset)} | {r.profile} | {_cell(r.hardware)} | {r.seed} |"
        for r in results
    ]
    return head + "\n".join(rows) + "\n"


INTRO = """# Results

Every claim of the paper, next to what this book measured. The table is generated from the numbers
the chapters recorded when they were last executed (profile and data in the fifth column).
Verdicts: **reproduced** (our number or comparison agrees with the claim), **partly** (agrees in
part, or only on some data sets), **not reproduced**, **inconclusive** (the
experiment ran but cannot decide, e.g. the reference DCGAN itself collapsed at the budget used),
**needs the paper's data** (the claim is a
number on a data set we ran a stand-in for; run the chapter with `--profile paper`), **not run** (no
chapter recorded a matching result). The rules behind each verdict are in
`dcgan/report.py` (`CLAIMS`); "figures only" and "no number" mark claims the paper supports
with pictures or words, which the chapters turn into measurements.

"""


def write_results_page(results_dir: str | Path, out_path: str | Path) -> Path:
    """Write the Markdown results page for every ``*.results.json`` under ``results_dir``."""
    results = load_results(results_dir)
    text = INTRO + "## Claims\n\n" + claims_table(results)
    counts = {v: sum(r["verdict"] == v for r in claim_rows(results)) for v in VERDICTS}
    text += "\n" + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ".\n"
    text += "\n## Every recorded number\n\n"
    text += results_table(results) if results else "No chapter has recorded results yet: run `make book`.\n"
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out
