"""Tests for dcgan.report: every verdict rule, its boundaries, the quality gate and the intervals."""

import json
import re

import numpy as np
import pytest

from dcgan import report
from dcgan.paths import REPO_ROOT as REPO
from dcgan.report import (BELOW_GATE, INCONCLUSIVE, NO_GATE, NO_INTERVAL, NOT_REPRODUCED, NOT_RUN, PAPER_DATA_NEEDED,
                          PARTLY, REPRODUCED, WITHIN_NOISE)
from dcgan.results import Result, ResultsRecorder, load_results


def _rec(tmp_path, chapter, profile="book"):
    return ResultsRecorder(chapter, profile, 0, tmp_path)


def _ci(res, name, value, lo, hi, dataset="emoji", **kw):
    res.record(name, value, dataset=dataset, **kw)
    res.record(f"{name}_ci_lo", lo, dataset=dataset)
    res.record(f"{name}_ci_hi", hi, dataset=dataset)


def _gate(res, model, ok, dataset="emoji", fid=40.0, precision=0.6, recall=0.3):
    res.record(f"{model}_gate", int(ok), dataset=dataset)
    res.record(f"{model}_gate_fid", fid, dataset=dataset)
    res.record(f"{model}_gate_precision", precision, dataset=dataset)
    res.record(f"{model}_gate_recall", recall, dataset=dataset)


def _row(results, section, text):
    for r in report.claim_rows(results):
        if r["section"] == section and text in r["claim"]:
            return r
    raise KeyError((section, text))


def _verdict(tmp_path, section, text):
    return _row(load_results(tmp_path), section, text)["verdict"]


# ---------------------------------------------------------------- the rules in isolation

@pytest.mark.parametrize("lo, hi, direction, at, want", [
    (0.1, 2.0, 1, 0.0, REPRODUCED),
    (-2.0, -0.1, 1, 0.0, NOT_REPRODUCED),
    (-1.0, 1.0, 1, 0.0, WITHIN_NOISE),
    (0.0, 1.0, 1, 0.0, WITHIN_NOISE),  # touching zero is not excluding it
    (-1.0, 0.0, 1, 0.0, WITHIN_NOISE),
    (-2.0, -0.1, -1, 0.0, REPRODUCED),
    (0.1, 2.0, -1, 0.0, NOT_REPRODUCED),
    (0.0, 0.0099, -1, 0.01, REPRODUCED),  # a false-positive rate under 1 in 100
    (0.0101, 0.05, -1, 0.01, NOT_REPRODUCED),
    (0.005, 0.01, -1, 0.01, WITHIN_NOISE),
    (None, 1.0, 1, 0.0, NO_INTERVAL),
    (1.0, None, 1, 0.0, NO_INTERVAL),
])
def test_interval_verdict(lo, hi, direction, at, want):
    assert report.interval_verdict(lo, hi, direction, at) == want


def test_interval_verdict_refuses_bounds_out_of_order():
    with pytest.raises(ValueError, match="out of order"):
        report.interval_verdict(1.0, 0.0)


@pytest.mark.parametrize("verdicts, want", [
    ([], NOT_RUN),
    ([NOT_RUN, NOT_RUN], NOT_RUN),
    ([REPRODUCED, REPRODUCED], REPRODUCED),
    ([REPRODUCED, NOT_RUN], REPRODUCED),
    ([REPRODUCED, NOT_REPRODUCED], PARTLY),
    ([REPRODUCED, WITHIN_NOISE], PARTLY),
    ([NOT_REPRODUCED, WITHIN_NOISE], NOT_REPRODUCED),
    ([NO_INTERVAL, WITHIN_NOISE], WITHIN_NOISE),  # the first inconclusive kind in VERDICTS order
    ([WITHIN_NOISE, WITHIN_NOISE], WITHIN_NOISE),
])
def test_combine(verdicts, want):
    assert report.combine(verdicts) == want


# ---------------------------------------------------------------- claims and checks

def test_no_results_means_every_claim_not_run():
    rows = report.claim_rows([])
    bound = {c.text for c in report.CLAIMS if c.data_bound}
    assert len(rows) == len(report.CLAIMS) and not any(r["measured"] for r in rows)
    # a claim only the paper's data can decide says so even before anything ran; every other one is "not run"
    assert {r["verdict"] for r in rows if r["claim"] in bound} == {PAPER_DATA_NEEDED}
    assert {r["verdict"] for r in rows if r["claim"] not in bound} == {NOT_RUN}
    assert {r["verdict"] for r in report.check_rows([])} == {NOT_RUN}


def test_implementation_checks_are_not_claims(tmp_path):
    res = _rec(tmp_path, "01_architecture", "smoke")
    res.record("guidelines_hold", 1, dataset="-", paper=1)
    res.record("init_std", 0.05, dataset="-", paper=0.02)
    results = load_results(tmp_path)
    checks = {r["claim"][:20]: r["verdict"] for r in report.check_rows(results)}
    assert list(checks.values()) == ["passes", "fails", "not run"]  # the third: chapter 10's conversion check
    assert not any(r["measured"] for r in report.claim_rows(results))  # neither is a claim of the paper
    assert not any(c.patterns[0] in ("guidelines_hold", "init_std") for c in report.CLAIMS)
    res.record("init_std", 0.0205, dataset="-", paper=0.02)
    assert [r["verdict"] for r in report.check_rows(load_results(tmp_path))] == ["passes", "passes", "not run"]


def test_results_page_has_both_tables_and_tallies_claims_only(tmp_path):
    res = _rec(tmp_path, "01_architecture", "smoke")
    res.record("guidelines_hold", 1, dataset="-", paper=1)
    res.record("init_std", 0.05, dataset="-", paper=0.02)
    page = report.write_results_page(tmp_path, tmp_path / "results.md").read_text()
    assert "\n# Results\n" in page and "```{figure} _generated/results_forest.png" in page
    assert (tmp_path / "_generated" / "results_forest.png").stat().st_size > 1000  # the forest plot, next to the page
    claims, rest = page.split("## Implementation checks")
    checks, numbers = rest.split("## Every recorded number")
    row = ("| §4 Our weights are initialised from N(0, 0.02) (chapter 01 (not in this build)) | std 0.02 | "
           "init std: 0.05 | **fails** |")
    assert row in checks
    assert "guidelines" not in claims.split("## The paper's claims")[1]
    n_bound = sum(c.data_bound for c in report.CLAIMS)  # the checks are not counted
    assert f"Tally of the paper's claims: {n_bound} needs the paper's data, {len(report.CLAIMS) - n_bound} not run." \
        in claims
    assert "| 01_architecture | init_std | 0.05 | 0.02 |" in numbers


def test_claims_table_is_data_with_known_rules(tmp_path):
    """claims.yaml: every claim and check has a unique id, a chapter notebook and a rule the loader knows."""
    ids = [c.id for c in report.CLAIMS + report.CHECKS]
    assert len(ids) == len(set(ids)) and all(ids)
    for c in report.CLAIMS + report.CHECKS:
        assert (REPO / "notebooks" / f"{c.chapter}.ipynb").exists(), c.id
        assert c.group or c in report.CHECKS, c.id
    bad = tmp_path / "claims.yaml"
    entry = "{id: a, section: x, text: t, paper: p, results: [r], chapter: 01_architecture, anchor: ch01-init, "
    bad.write_text(f"claims:\n  - {entry}rule: {{maybe: 1}}}}\n")
    with pytest.raises(ValueError, match="unknown rule 'maybe'"):
        report.load_claims(bad)
    bad.write_text(f"claims:\n  - {entry}rule: {{diff: r}}}}\n  - {entry}rule: {{diff: r}}}}\n")
    with pytest.raises(ValueError, match="used twice"):
        report.load_claims(bad)
    bad.write_text("claims:\n  - {id: a, section: x, rule: {diff: r}}\n")
    with pytest.raises(ValueError, match="missing keys"):
        report.load_claims(bad)


def test_every_claim_links_to_a_labelled_section_of_its_chapter():
    """The anchor of each claim is a MyST label right above a heading in its chapter's notebook."""
    labels = {}
    for nb in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        for cell in json.loads(nb.read_text())["cells"]:
            lines = "".join(cell["source"]).splitlines()
            for a, b in zip(lines, lines[1:]):
                m = re.fullmatch(r"\(([\w-]+)\)=", a)
                if m and cell["cell_type"] == "markdown" and b.startswith("#"):
                    labels[m.group(1)] = nb.stem
    for c in report.CLAIMS + report.CHECKS:
        assert labels.get(c.anchor) == c.chapter, f"{c.id}: no label ({c.anchor})= above a heading in {c.chapter}"


def test_paper_page_lists_every_claim_and_is_up_to_date(tmp_path):
    page = (REPO / "book" / "paper.md").read_text()
    generated = page.split(report.PAPER_BEGIN, 1)[1].split(report.PAPER_END, 1)[0]
    assert report.PAPER_BEGIN + generated + report.PAPER_END + "\n" == report.paper_claims(), \
        "book/paper.md is out of date: run python -c \"from dcgan import report; " \
        "report.write_paper_page('book/paper.md', 'book/paper.md')\""
    for c in report.CLAIMS:
        assert f"(claim-{c.id})=" in page and f"<{c.anchor}>" in page
    # a partial build links only the chapters it has
    out = report.write_paper_page(REPO / "book" / "paper.md", tmp_path / "paper.md", {"05_svhn_features"})
    text = out.read_text()
    assert "{ref}`chapter 05 <ch05-result>`" in text and "<ch08-ablations>" not in text
    assert "chapter 08 (not in this build)" in text and text.startswith(page.split(report.PAPER_BEGIN)[0])


def test_results_rows_link_back_to_claim_and_chapter(tmp_path):
    res = _rec(tmp_path, "05_svhn_features")
    _ci(res, "semi_supervised_minus_dcgan_error", 2.0, 1.0, 3.0, dataset="fashion-mnist")
    (tmp_path / "05_svhn_features.ipynb").write_text("{}")  # the chapter is in this build
    page = report.write_results_page(tmp_path, tmp_path / "results.md").read_text()
    row = next(line for line in page.splitlines() if "Supervised CNN: error 2.0 higher than DCGAN features" in line)
    assert row.startswith("| {ref}`§5.2 <claim-supervised-worse>` The same CNN") and "({ref}`chapter 05 <ch05-result>`) |" in row
    details = page.split("The results behind each verdict, by name")[1]
    assert "| §5.2 | semi_supervised_minus_dcgan_error = 2 [1, 3]" in details  # the raw names, folded
    assert "(results-claims)=" in page and "chapter 08 (not in this build)" in page


def test_bad_rule_is_reported():
    bad = (report.Claim("§0", "x", "y", ("*",), lambda f: "maybe"),)
    r = Result("c", "n", 1, None, "", "d", "book", "cpu", 0)
    with pytest.raises(ValueError, match="maybe"):
        report.claim_rows([r], bad)


# ---------------------------------------------------------------- the quality gate

def _arith(res, k="emoji", pixel=(20.0, 5.0, 35.0), base=(30.0, 15.0, 45.0)):
    res.record(f"{k}_arith_latent_rate", 50.0, dataset=k)
    _ci(res, f"{k}_arith_latent_minus_pixel", *pixel, dataset=k)
    _ci(res, f"{k}_arith_latent_minus_base", *base, dataset=k)


def test_gate_decides_before_the_rule(tmp_path):
    res = _rec(tmp_path, "06_latent_space")
    _arith(res)
    assert _verdict(tmp_path, "§6.3.2", "(emoji") == NO_GATE
    row = _row(load_results(tmp_path), "§6.3.2", "(emoji")
    assert "no quality gate recorded (emoji-*_gate)" in row["ours"]
    _gate(res, "emoji-64", False, fid=312.0, precision=0.01, recall=0.0)
    row = _row(load_results(tmp_path), "§6.3.2", "(emoji")
    assert row["verdict"] == BELOW_GATE
    assert "gate emoji-64: below (fid 312, precision 0.01, recall 0)" in row["ours"]  # the gate's numbers are shown
    _gate(res, "emoji-64", True)
    row = _row(load_results(tmp_path), "§6.3.2", "(emoji")
    assert row["verdict"] == REPRODUCED and "gate emoji-64: passed" in row["numbers"]
    assert "emoji_arith_latent_minus_pixel = 20 [5, 35]" in row["numbers"]
    assert row["ours"] == ("z arithmetic: target rate 20.0 higher than pixel arithmetic [5.0, 35.0]; z arithmetic: "
                           "target rate 30.0 higher than random samples [15.0, 45.0]")  # in words, from the numbers
    # the Fashion-MNIST claim has its own gate: emoji's does not open it
    assert _verdict(tmp_path, "§6.3.2", "(Fashion-MNIST") == NOT_RUN
    res.record("fashion_arith_latent_rate", 10.0, dataset="fashion-mnist")
    assert _verdict(tmp_path, "§6.3.2", "(Fashion-MNIST") == NO_GATE


def test_gate_failing_in_one_chapter_is_enough(tmp_path):
    """Chapters 06/07 re-record chapter 02's gate; any record of a failed gate blocks the verdict."""
    _gate(_rec(tmp_path, "02_training"), "emoji-64", False)
    res = _rec(tmp_path, "06_latent_space")
    _gate(res, "emoji-64", True)
    _arith(res)
    assert _verdict(tmp_path, "§6.3.2", "(emoji") == BELOW_GATE
    assert _row(load_results(tmp_path), "§6.2", "(emoji discriminator)")["verdict"] == NOT_RUN


def test_a_later_chapters_failed_gate_is_not_hidden_by_an_earlier_pass(tmp_path):
    """Every record of a gate counts, not only the first: chapter 02 passed, chapter 06's own gate failed."""
    _gate(_rec(tmp_path, "02_training"), "emoji-64", True)
    res = _rec(tmp_path, "06_latent_space")
    _gate(res, "emoji-64", False, fid=312.0)
    _arith(res)
    assert _verdict(tmp_path, "§6.3.2", "(emoji") == BELOW_GATE
    _gate(res, "emoji-64", True)
    assert _verdict(tmp_path, "§6.3.2", "(emoji") == REPRODUCED


def test_claims_without_a_model_need_no_gate(tmp_path):
    res = _rec(tmp_path, "03_deduplication")
    _ci(res, "fashion_mnist_hash_fp_rate", 0.004, 0.001, 0.009, dataset="fashion-mnist")
    assert _verdict(tmp_path, "§4.1.1", "false-positive") == REPRODUCED


def test_every_model_claim_names_its_gate():
    for c in report.CLAIMS:
        if c.section in ("§4.1.1", "other") or c.text.startswith("1-layer K-means"):
            assert not c.gates, c.text
        elif c.chapter == "10_authors_model":  # the paper's own released model: no gate (its reading is a check)
            assert not c.gates and "authors" in c.text, c.text
        else:
            assert c.gates, f"{c.section} {c.text} relies on a model but names no gate"



def test_every_recorded_gate_is_seen_by_the_claims_on_its_model():
    """A claim that names ``<model>_gate`` sees the same model's per-seed gates too (``<model>_s<seed>_gate``, the one
    naming every chapter records through dcgan.seeds.gate_seeds): in the committed smoke baseline, no gate a chapter
    recorded goes unseen by a claim that judges that model (chapter 08's claims once named only
    ``stability_dcgan_gate``), and no chapter records the old ``_seed<N>`` naming."""
    from fnmatch import fnmatchcase

    names = {r.name for r in load_results(REPO / "tests" / "notebooks") if r.name.endswith("_gate")}
    assert any(report._SEED_GATE.search(n) for n in names), "the baseline records no per-seed gate"
    assert not [n for n in names if "_seed" in n], "use dcgan.seeds.gate_seeds (<model>_s<seed>_gate)"
    for c in report.CLAIMS:
        for n in names:
            summary = f"{report._gate_model(n)}_gate"
            if any(fnmatchcase(summary, p) for p in c.gates):
                assert any(fnmatchcase(n, p) for p in c.gates), f"{c.section} {c.text[:40]}: gates {c.gates} miss {n}"


# ---------------------------------------------------------------- comparative claims

@pytest.mark.parametrize("pixel, base, want", [
    ((20.0, 5.0, 35.0), (30.0, 15.0, 45.0), REPRODUCED),
    ((20.0, 5.0, 35.0), (5.0, -10.0, 20.0), PARTLY),  # above pixel arithmetic, not above random samples
    ((-20.0, -35.0, -5.0), (5.0, -10.0, 20.0), NOT_REPRODUCED),
    ((0.0, -10.0, 10.0), (5.0, -10.0, 20.0), WITHIN_NOISE),
])
def test_arithmetic_verdicts(tmp_path, pixel, base, want):
    res = _rec(tmp_path, "06_latent_space")
    _gate(res, "emoji-64", True)
    _arith(res, pixel=pixel, base=base)
    assert _verdict(tmp_path, "§6.3.2", "(emoji") == want


def test_comparison_without_interval_is_inconclusive(tmp_path):
    res = _rec(tmp_path, "04_cifar10_features")
    _gate(res, "fashion-mnist-32", True, dataset="fashion-mnist")
    res.record("transfer_dcgan_minus_kmeans", 5.0, dataset="fashion-mnist-32->mnist-10k")  # the old sign test's input
    assert _verdict(tmp_path, "§5.1", "beat") == NO_INTERVAL
    res.record("transfer_dcgan_minus_kmeans_ci_lo", -1.0, dataset="fashion-mnist-32->mnist-10k")
    res.record("transfer_dcgan_minus_kmeans_ci_hi", 11.0, dataset="fashion-mnist-32->mnist-10k")
    assert _verdict(tmp_path, "§5.1", "beat") == WITHIN_NOISE
    res.record("transfer_dcgan_minus_kmeans_ci_lo", 0.5, dataset="fashion-mnist-32->mnist-10k")
    assert _verdict(tmp_path, "§5.1", "beat") == REPRODUCED
    row = _row(load_results(tmp_path), "§5.1", "beat")
    assert "transfer_dcgan_minus_kmeans = 5 [0.5, 11]" in row["numbers"]
    assert row["ours"] == "DCGAN features: accuracy 5.0 higher than K-means [0.5, 11.0]"


def test_sides_measured_without_a_difference(tmp_path):
    res = _rec(tmp_path, "07_internals")
    _gate(res, "emoji-64", True)
    res.record("emoji_forget_removed", 14.0, dataset="emoji")
    res.record("emoji_forget_removed_control", 10.0, dataset="emoji")
    assert _verdict(tmp_path, "§6.3.1", "forget") == NO_INTERVAL
    _ci(res, "emoji_forget_removed_minus_control", 4.0, -2.0, 9.0)
    assert _verdict(tmp_path, "§6.3.1", "forget") == WITHIN_NOISE


def test_supervised_control_and_direction(tmp_path):
    res = _rec(tmp_path, "05_svhn_features")
    _gate(res, "fashion-mnist-32", True, dataset="fashion-mnist")
    _ci(res, "semi_supervised_minus_dcgan_error", -3.0, -5.0, -1.0, dataset="fashion-mnist")
    assert _verdict(tmp_path, "§5.2", "supervised") == NOT_REPRODUCED  # supervised is better beyond noise
    res = _rec(tmp_path, "06_latent_space")
    _gate(res, "fashion-mnist-32", True, dataset="fashion-mnist")
    _ci(res, "fashion_direction_dark_turned_minus_plain", 30.0, 10.0, 50.0, dataset="fashion-mnist")
    assert _verdict(tmp_path, "§6.3.2 Fig. 8", "(Fashion-MNIST") == REPRODUCED


@pytest.mark.parametrize("chapter, section, name, dataset", [
    ("04_cifar10_features", "§5.1", "transfer_dcgan_minus_random_d", "fashion-mnist-32->mnist-10k"),
    ("05_svhn_features", "§5.2", "semi_random_d_minus_dcgan_error", "fashion-mnist (1000 labels)"),
])
@pytest.mark.parametrize("value, lo, hi, want", [
    (4.0, 1.0, 7.0, REPRODUCED),  # trained D's features better beyond noise
    (-4.0, -7.0, -1.0, NOT_REPRODUCED),  # the random-filter D's better beyond noise
    (1.0, -2.0, 4.0, WITHIN_NOISE),  # the interval holds 0
])
def test_trained_d_against_random_d(tmp_path, chapter, section, name, dataset, value, lo, hi, want):
    """Issue 22: §5's control (trained D minus a random-filter D of the same architecture), recorded by
    chapters 04 and 05, is a claim with a rule: on the results page and in the chapters' verdicts."""
    res = _rec(tmp_path, chapter)
    _ci(res, name, value, lo, hi, dataset=dataset)
    assert _verdict(tmp_path, section, "random-filter") == NO_GATE  # it relies on chapter 02's trained D
    _gate(res, "fashion-mnist-32", True, dataset="fashion-mnist")
    assert _verdict(tmp_path, section, "random-filter") == want
    row = _row(load_results(tmp_path), section, "random-filter")
    assert "andom-filter D" in row["ours"] and "rained D" in row["ours"] and f" {abs(value):.1f} " in row["ours"]
    assert "random-filter" in report.chapter_verdicts(load_results(tmp_path))


# ---------------------------------------------------------------- measurements against a line

def test_false_positive_rate_needs_its_whole_interval_under_one_percent(tmp_path):
    res = _rec(tmp_path, "03_deduplication")
    _ci(res, "fashion_mnist_hash_fp_rate", 0.004, 0.001, 0.03, dataset="fashion-mnist")
    assert _verdict(tmp_path, "§4.1.1", "false-positive") == WITHIN_NOISE
    _ci(res, "fashion_mnist_hash_fp_rate", 0.3, 0.2, 0.4, dataset="fashion-mnist")
    assert _verdict(tmp_path, "§4.1.1", "false-positive") == NOT_REPRODUCED
    _ci(res, "emoji_hash_fp_rate", 0.002, 0.0, 0.008)
    assert _verdict(tmp_path, "§4.1.1", "false-positive") == PARTLY  # one data set each way
    res.record("fashion_mnist_hash_fp_rate", "nothing flagged", dataset="fashion-mnist")
    res.record("emoji_hash_fp_rate", "nothing flagged", dataset="emoji")
    assert _verdict(tmp_path, "§4.1.1", "false-positive") == INCONCLUSIVE


@pytest.mark.parametrize("lo, hi, want", [
    (-1.0, 1.5, REPRODUCED),  # no excess of near-copies, and an excess of 3 points ruled out
    (0.5, 2.0, NOT_REPRODUCED),  # more near-copies among samples than among test images, beyond noise
    (-1.0, 4.0, WITHIN_NOISE),  # cannot rule out a 3-point excess
    (-3.0, -1.0, REPRODUCED),  # fewer near-copies than real images (blurry samples): not memorised
])
def test_memorisation_judges_the_excess_of_near_copies(tmp_path, lo, hi, want):
    """§4.1 (issue 22): the median ratio is description only; the lower tail decides (dcgan.memorisation)."""
    res = _rec(tmp_path, "02_training")
    _gate(res, "fashion-mnist-32", True, dataset="fashion-mnist")
    res.record("fashion-mnist-32_nn_ratio", 1.2, dataset="fashion-mnist-32")
    assert _verdict(tmp_path, "§4.1", "(Fashion-MNIST") == NO_INTERVAL  # a median ratio decides nothing
    _ci(res, "fashion-mnist-32_nn_copies_minus_test", (lo + hi) / 2, lo, hi, dataset="fashion-mnist-32")
    assert _verdict(tmp_path, "§4.1", "(Fashion-MNIST") == want


def test_smoothness_uses_the_point_value_without_interval(tmp_path):
    res = _rec(tmp_path, "06_latent_space")
    _gate(res, "fashion-mnist-32", True, dataset="fashion-mnist")
    res.record("fashion_slerp_pixel_cut_rate", 0.0, dataset="fashion-mnist")
    res.record("fashion_slerp_feature_cut_rate", 0.05, dataset="fashion-mnist")
    assert _verdict(tmp_path, "§6.1", "(Fashion-MNIST") == REPRODUCED
    res.record("fashion_slerp_feature_cut_rate", 1.0, dataset="fashion-mnist")
    assert _verdict(tmp_path, "§6.1", "(Fashion-MNIST") == PARTLY


# ---------------------------------------------------------------- the ablations (chapter 08)

def _variant(res, v, fid, sd, unstable, n=3, kind="oscillating"):
    res.record(f"stability_{v}_fid", fid, dataset="fashion-mnist")
    res.record(f"stability_{v}_fid_std", sd, dataset="fashion-mnist")
    for k in ("diverged", "oscillating", "mode_collapse"):
        res.record(f"stability_{v}_{k}", f"{unstable if k == kind else 0}/{n}", dataset="fashion-mnist")


def test_stability_verdicts(tmp_path):
    res = _rec(tmp_path, "08_stability")
    _gate(res, "stability_dcgan", True, dataset="fashion-mnist")
    _variant(res, "dcgan", 10.0, 1.0, 0)
    _variant(res, "bn-everywhere", 20.0, 1.0, 0)  # 10 FID worse, seed spread ~1.4: beyond 2 x spread
    _variant(res, "beta1-0.9", 10.5, 1.0, 0)  # within the spread, equally stable
    _variant(res, "lr-0.001", 10.5, 1.0, 3, kind="diverged")  # same FID, 3/3 diverged vs 0/3
    _variant(res, "relu-in-d", 2.0, 1.0, 0)  # better FID beyond the spread
    _variant(res, "fc-hidden", 2.0, 1.0, 3)  # better FID, but all runs unstable
    results = load_results(tmp_path)
    assert _row(results, "§3 (3)", "output")["verdict"] == REPRODUCED
    assert _row(results, "§4", "beta1")["verdict"] == WITHIN_NOISE
    assert _row(results, "§4", "0.001")["verdict"] == REPRODUCED
    assert _row(results, "§3 (4)", "LeakyReLU")["verdict"] == NOT_REPRODUCED
    assert _row(results, "§3 (2)", "fully connected")["verdict"] == PARTLY
    assert _row(results, "§3 (1)", "pooling")["verdict"] == NOT_RUN
    row = _row(results, "§3 (3)", "output")
    assert "stability_bn-everywhere_fid = 20" in row["numbers"] and row["behind"] == "fashion-mnist (book)"
    assert row["ours"].startswith("BatchNorm everywhere: FID 10.0 higher than DCGAN's placement [")  # the spread's
    assert "; unstable runs 0/3 against 0/3; judged on 97.5% intervals (Bonferroni, two measures): FID difference [" \
        in row["ours"]


def test_stability_recorded_interval_wins_over_the_spread(tmp_path):
    res = _rec(tmp_path, "08_stability")
    _gate(res, "stability_dcgan", True, dataset="fashion-mnist")
    for v, fid in (("dcgan", 10.0), ("beta1-0.9", 12.0)):
        res.record(f"stability_{v}_fid", fid, dataset="fashion-mnist")
        res.record(f"stability_{v}_fid_std", 0.0, dataset="fashion-mnist")
    assert _verdict(tmp_path, "§4", "beta1") == NO_INTERVAL  # one seed: no spread, no interval
    _ci(res, "stability_beta1-0.9_minus_dcgan_fid", 2.0, 0.5, 3.5, dataset="fashion-mnist")
    assert _verdict(tmp_path, "§4", "beta1") == REPRODUCED


@pytest.mark.parametrize("fid, unstable, want", [
    (11.0, 0, WITHIN_NOISE),  # FID 1.0 worse: its 95 % interval excludes 0, its 97.5 % one does not
    (10.0, 4, WITHIN_NOISE),  # 4/10 unstable vs 0/10: the same, for the Newcombe interval
    (11.0, 4, WITHIN_NOISE),  # both borderline: two looks at 95 % each would have reproduced it
    (12.0, 0, REPRODUCED),  # FID 2.0 worse: beyond noise after the correction too
    (10.0, 6, REPRODUCED),  # 6/10 unstable vs 0/10: the same
    (8.0, 6, PARTLY),  # better FID beyond noise, more unstable runs beyond noise
])
def test_variant_worse_corrects_for_its_two_looks(tmp_path, fid, unstable, want):
    """Issue 22: the ablation rule looks at two measures (FID, unstable runs), so each is judged on its
    97.5 % interval (Bonferroni): a claim reproduced by either measure has a 5 % family-wise error."""
    from dcgan.intervals import newcombe_diff_ci

    res = _rec(tmp_path, "08_stability")
    _gate(res, "stability_dcgan", True, dataset="fashion-mnist")
    _variant(res, "dcgan", 10.0, 1.0, 0, n=10)
    _variant(res, "beta1-0.9", fid, 1.0, unstable, n=10)
    half = 2.10092204024096 * np.sqrt(2 / 10)  # Student t(0.975, 18 df): the chapter's Welch 95 % interval
    _ci(res, "stability_beta1-0.9_minus_dcgan_fid", fid - 10.0, fid - 10.0 - half, fid - 10.0 + half,
        dataset="fashion-mnist")
    if (fid, unstable) in ((11.0, 0), (10.0, 4)):  # the planted cases are borderline: beyond noise at 95 % alone
        assert fid - 10.0 - half > 0 or newcombe_diff_ci(unstable, 10, 0, 10)[1] > 0
    row = _row(load_results(tmp_path), "§4", "beta1")
    assert row["verdict"] == want
    assert "97.5% intervals (Bonferroni, two measures)" in row["ours"]


def test_variant_worse_trusts_the_recorded_interval_when_the_summaries_disagree(tmp_path):
    """Counts of 10 runs but an interval as wide as from 3 finite FIDs: the seeds behind the summaries are not
    the counts' (a run without a finite FID), so the recorded 95 % interval is widened to 97.5 % instead."""
    res = _rec(tmp_path, "08_stability")
    _gate(res, "stability_dcgan", True, dataset="fashion-mnist")
    _variant(res, "dcgan", 10.0, 1.0, 0, n=10)
    _variant(res, "beta1-0.9", 12.0, 1.0, 0, n=10)  # rebuilt from n=10 at 97.5 %: [0.9, 3.1], reproduced
    _ci(res, "stability_beta1-0.9_minus_dcgan_fid", 2.0, 0.1, 3.9, dataset="fashion-mnist")
    row = _row(load_results(tmp_path), "§4", "beta1")
    assert row["verdict"] == WITHIN_NOISE  # 2.0 -+ 1.9 x 2.24 / 1.96 holds 0
    assert "FID difference [-0.17, 4.2]" in row["ours"]


def test_stability_inconclusive_when_the_reference_is_below_the_gate(tmp_path):
    res = _rec(tmp_path, "08_stability")
    _variant(res, "dcgan", 400.0, 1.0, 3, kind="mode_collapse")
    _variant(res, "bn-everywhere", 300.0, 1.0, 3, kind="mode_collapse")
    assert _verdict(tmp_path, "§3 (3)", "output") == NO_GATE
    _gate(res, "stability_dcgan", False, dataset="fashion-mnist", fid=400.0)
    assert _verdict(tmp_path, "§3 (3)", "output") == BELOW_GATE
    _gate(res, "stability_dcgan", True, dataset="fashion-mnist")
    assert _verdict(tmp_path, "§3 (3)", "output") == NOT_REPRODUCED  # a better FID beyond the spread


def test_filter_collapse(tmp_path):
    res = _rec(tmp_path, "08_stability")
    _gate(res, "stability_dcgan", True, dataset="fashion-mnist")
    res.record("filter_collapse_dcgan_first_epoch", 8.0, dataset="fashion-mnist")
    res.record("filter_collapse_dcgan_last_epoch", 12.0, dataset="fashion-mnist")
    assert _verdict(tmp_path, "§7", "filters") == NO_INTERVAL
    _ci(res, "filter_collapse_dcgan_last_minus_first", 4.0, 1.0, 7.0, dataset="fashion-mnist")
    assert _verdict(tmp_path, "§7", "filters") == REPRODUCED


# ---------------------------------------------------------------- numbers on the paper's data, §8.1

def test_data_bound_claims_need_the_paper_data(tmp_path):
    res = _rec(tmp_path, "04_cifar10_features")
    res.record("transfer_dcgan_test_accuracy", 82.0, dataset="fashion-mnist-32->mnist-10k", paper=82.8)
    assert _verdict(tmp_path, "§5.1 Table 1", "DCGAN") == PAPER_DATA_NEEDED  # before the gate: no gate needed
    res.record("transfer_dcgan_test_accuracy", 82.0, dataset="imagenet32->cifar10", paper=82.8)
    assert _verdict(tmp_path, "§5.1 Table 1", "DCGAN") == NO_GATE
    _gate(res, "imagenet32-32", True, dataset="imagenet32")
    assert _verdict(tmp_path, "§5.1 Table 1", "DCGAN") == REPRODUCED
    res.record("transfer_dcgan_test_accuracy", 70.0, dataset="imagenet32->cifar10", paper=82.8)
    assert _verdict(tmp_path, "§5.1 Table 1", "DCGAN") == NOT_REPRODUCED
    _ci(res, "transfer_dcgan_test_accuracy", 79.0, 76.0, 80.0, dataset="imagenet32->cifar10")
    assert _verdict(tmp_path, "§5.1 Table 1", "DCGAN") == PARTLY  # 2.8 points from the interval's top
    _ci(res, "transfer_dcgan_test_accuracy", 79.0, 76.0, 82.0, dataset="imagenet32->cifar10")
    assert _verdict(tmp_path, "§5.1 Table 1", "DCGAN") == REPRODUCED


def test_mnist_supplement_verdicts(tmp_path):
    res = _rec(tmp_path, "09_mnist_supplement")
    res.record("mnist_nn_error_real", 4.0, dataset="mnist-10k")
    res.record("mnist_nn_error_generated_affine", 9.0, dataset="mnist-10k")
    res.record("mnist_nn_error_generated_noaffine", 6.0, dataset="mnist-10k")
    assert _verdict(tmp_path, "§8.1", "1-NN") == NO_GATE
    _gate(res, "mnist-cond-32", True, dataset="mnist-10k")
    assert _verdict(tmp_path, "§8.1", "1-NN") == NO_INTERVAL
    assert _verdict(tmp_path, "§8.1", "scale and bias") == NO_INTERVAL
    _ci(res, "mnist_nn_error_generated_noaffine_minus_real", 2.0, 1.5, 2.5, dataset="mnist-10k")
    _ci(res, "mnist_nn_error_generated_affine_minus_real", 5.0, 4.0, 6.0, dataset="mnist-10k")
    assert _verdict(tmp_path, "§8.1", "1-NN") == NOT_REPRODUCED  # margin 0.1 x 4 + 0.5 = 0.9 points
    _ci(res, "mnist_nn_error_generated_noaffine_minus_real", 0.5, -0.2, 1.2, dataset="mnist-10k")
    assert _verdict(tmp_path, "§8.1", "1-NN") == WITHIN_NOISE
    _ci(res, "mnist_nn_error_generated_noaffine_minus_real", 0.2, -0.4, 0.9, dataset="mnist-10k")
    assert _verdict(tmp_path, "§8.1", "1-NN") == REPRODUCED  # the interval's top on the margin
    _ci(res, "mnist_nn_error_generated_affine_minus_noaffine", 3.0, 1.0, 5.0, dataset="mnist-10k")
    assert _verdict(tmp_path, "§8.1", "scale and bias") == REPRODUCED
    assert not report.on_paper_data(load_results(tmp_path)[0])  # mnist-10k is a stand-in, not MNIST


def test_every_verdict_is_reachable(tmp_path):
    """Each verdict of VERDICTS is produced by some recorded results (the tests above, gathered)."""
    seen = set()
    for i, build in enumerate((
        lambda r: _arith(r),  # no gate
        lambda r: (_gate(r, "emoji-64", False), _arith(r)),
        lambda r: (_gate(r, "emoji-64", True), _arith(r)),
        lambda r: (_gate(r, "emoji-64", True), _arith(r, pixel=(20.0, 5.0, 35.0), base=(5.0, -10.0, 20.0))),
        lambda r: (_gate(r, "emoji-64", True), _arith(r, pixel=(-20.0, -35.0, -5.0), base=(5.0, -10.0, 20.0))),
        lambda r: (_gate(r, "emoji-64", True), _arith(r, pixel=(0.0, -10.0, 10.0), base=(0.0, -10.0, 10.0))),
        lambda r: (_gate(r, "emoji-64", True), r.record("emoji_arith_latent_rate", 5.0, dataset="emoji")),
        lambda r: r.record("emoji_hash_fp_rate", "nothing flagged", dataset="emoji"),
        lambda r: r.record("transfer_kmeans_test_accuracy", 80.0, dataset="fashion-mnist-32->mnist-10k"),
    )):
        d = tmp_path / str(i)
        build(_rec(d, "06_latent_space"))
        seen |= {r["verdict"] for r in report.claim_rows(load_results(d))}
    assert seen == set(report.VERDICTS)


# ---------------------------------------------------------------- tables and chapter prose

def test_tables_show_intervals_beside_values(tmp_path):
    res = _rec(tmp_path, "06_latent_space")
    _gate(res, "emoji-64", True)
    _arith(res)
    results = load_results(tmp_path)
    table = report.results_table(results)
    assert "| 06_latent_space | emoji_arith_latent_minus_pixel | 20 [5, 35] |" in table
    assert "_ci_lo" not in table and "_ci_hi" not in table  # folded into their value's row
    assert "z arithmetic: target rate 30.0 higher than random samples [15.0, 45.0]" in report.claims_table(results)


def test_chapter_verdicts_are_the_page_verdicts(tmp_path):
    res = _rec(tmp_path, "06_latent_space")
    _gate(res, "emoji-64", False, fid=312.0)
    _arith(res)
    text = report.chapter_verdicts(res.results.values())
    assert text.startswith("- **§6.3.2** Vector arithmetic") and f"**{BELOW_GATE}**" in text
    assert "fid 312" in text and "Fashion-MNIST" not in text  # only the claims this chapter's results bear on
    assert "z arithmetic: target rate 20.0 higher than pixel arithmetic [5.0, 35.0]" in text  # words, not names
    assert "emoji_arith" not in text
    assert report.chapter_verdicts([]).startswith("No claim")


def test_gate_status_phrase(tmp_path):
    res = _rec(tmp_path, "06_latent_space")
    assert report.gate_status(res.results.values(), "emoji-64") == (
        None, "has no quality gate recorded (chapter 02 has not run under this profile)")
    _gate(res, "emoji-64", False, fid=312.0, precision=0.01, recall=0.0)
    assert report.gate_status(res.results.values(), "emoji-64") == (
        False, "is below the quality gate (fid 312, precision 0.01, recall 0)")
    _gate(res, "emoji-64", True)
    assert report.gate_status(res.results.values(), "emoji-64")[0] is True


def test_at_a_glance_puts_gates_verdicts_and_provenance_in_the_box(tmp_path):
    res = _rec(tmp_path, "06_latent_space")
    _gate(res, "emoji-64", False, fid=312.0)
    res.record("emoji-64_seed1_gate", 0, dataset="emoji")  # per-seed gates stay out of the box
    _arith(res)
    box = report.at_a_glance(res.results.values())
    lines = box.splitlines()
    assert lines[0] == "- Quality gate of `emoji-64` (emoji): **fails**; no verdict is drawn from it."
    assert lines[1].startswith(f"- **{BELOW_GATE}**: §6.3.2 Vector arithmetic") and "seed1" not in box
    assert "`book` profile, seed 0, " in box and "data: emoji" in box and "GAN seeds" not in box
    for seed in (2, 0, 1):  # the verdicts rest on every GAN seed: the provenance line names them
        res.record(f"emoji-64_s{seed}_gate", 0, dataset="emoji")
    assert "`book` profile, seed 0 (GAN seeds 0, 1, 2), " in report.at_a_glance(res.results.values())
    res2 = _rec(tmp_path / "b", "06_latent_space")
    res2.record("emoji-64_gate", 1, dataset="emoji")
    res2.record("emoji-64_gate_fid", 2.5, dataset="emoji")
    res2.record("emoji-64_gate_fid_limit", 3.0, dataset="emoji")
    res2.record("emoji-64_gate_classifier_accuracy", 93.5, dataset="emoji")
    assert report.at_a_glance(res2.results.values()).startswith(
        "- Quality gate of `emoji-64` (emoji): **passes** (FID 2.5, limit 3; features of a classifier with 93.5% "
        "held-out accuracy).")
    assert report.at_a_glance([]).startswith("- This chapter records no verdict")


def test_svhn_number_is_judged_on_the_authors_protocol(tmp_path):
    """§5.2's 22.48% is compared with the test error of the authors' protocol (100 draws), not the book's 3 draws."""
    res = _rec(tmp_path, "05_svhn_features", "paper")
    _gate(res, "svhn-32", True, dataset="svhn")
    _ci(res, "semi_dcgan_test_error", 30.0, 29.0, 31.0, dataset="svhn (1000 labels)")
    assert _verdict(tmp_path, "§5.2 Table 2", "SVHN") == NOT_RUN  # the authors' protocol did not run
    _ci(res, "semi_dcgan_test_error_authors", 23.0, 22.0, 24.0, dataset="svhn (1000 labels)")
    assert _verdict(tmp_path, "§5.2 Table 2", "SVHN") == REPRODUCED
    res2 = _rec(tmp_path / "book", "05_svhn_features")
    _ci(res2, "semi_dcgan_test_error", 18.0, 17.0, 19.0, dataset="fashion-mnist (1000 labels)")
    # the book profile records only its own protocol, on a stand-in: that needs the paper's data, not "not run"
    assert _verdict(tmp_path / "book", "§5.2 Table 2", "SVHN") == PAPER_DATA_NEEDED
    _ci(res2, "semi_dcgan_test_error_authors", 23.0, 22.0, 24.0, dataset="fashion-mnist (1000 labels)")
    assert _verdict(tmp_path / "book", "§5.2 Table 2", "SVHN") == PAPER_DATA_NEEDED  # a stand-in's number


def test_control_line_judges_a_chapters_control_like_a_claim():
    assert report.control_line("D beats pixels", 5.0, 1.0, 9.0, True) == \
        "- *D beats pixels*: **holds** (+5.0 points, paired 95% interval +1.0 to +9.0)."
    assert "**does not hold**" in report.control_line("x", -5.0, -9.0, -1.0, True)
    assert f"**{WITHIN_NOISE}**" in report.control_line("x", 1.0, -1.0, 3.0, True, unit="points of test error")
    assert f"**{BELOW_GATE}**" in report.control_line("x", 5.0, 1.0, 9.0, False)  # a failed gate decides nothing


def test_results_on_the_authors_model_are_marked_and_judged_on_their_data(tmp_path):
    """Chapter 10's results carry "authors' SVHN model" in their data column; the model's name is not its data."""
    mark = report.AUTHORS_MODEL
    res = _rec(tmp_path, "10_authors_model")
    _ci(res, "authors_transfer_kmeans_minus_authors_error", 9.0, 8.0, 10.0, dataset=f"mnist-10k (1000 labels), {mark}")
    _ci(res, "authors_svhn_test_error", 23.0, 22.0, 24.0, dataset=f"mnist-10k (1000 labels), {mark}")
    rows = load_results(tmp_path)
    assert not any(report.on_paper_data(r) for r in rows)  # "SVHN" in the model's name is not SVHN data
    assert _verdict(tmp_path, "§5.1, §5.2", "K-means") == REPRODUCED  # no gate needed: the paper's own model
    assert _verdict(tmp_path, "§5.2 Table 2", "the authors' released D") == PAPER_DATA_NEEDED
    row = _row(rows, "§5.1, §5.2", "K-means")
    assert mark in row["behind"]
    res2 = _rec(tmp_path / "paper", "10_authors_model", "paper")
    _ci(res2, "authors_svhn_test_error", 23.0, 22.0, 24.0, dataset=f"svhn (1000 labels), {mark}")
    assert _verdict(tmp_path / "paper", "§5.2 Table 2", "the authors' released D") == REPRODUCED
    _ci(res2, "authors_svhn_test_error", 30.0, 29.0, 31.0, dataset=f"svhn (1000 labels), {mark}")
    assert _verdict(tmp_path / "paper", "§5.2 Table 2", "the authors' released D") == NOT_REPRODUCED


def test_authors_conversion_is_a_check_not_a_claim(tmp_path):
    res = _rec(tmp_path, "10_authors_model")
    res.record("authors_conversion_ok", 0, dataset=report.AUTHORS_MODEL)
    rows = report.check_rows(load_results(tmp_path))
    assert [r["verdict"] for r in rows if "released SVHN weights" in r["claim"]] == ["fails"]
    assert all("released SVHN weights" not in r["claim"] for r in report.claim_rows(load_results(tmp_path)))


# ---------------------------------------------------------------- per-seed quality gates (issue 22)

def _seed_gates(res, model, passed: dict[int, bool], dataset="emoji"):
    """What dcgan.seeds.gate_seeds records: each seed's gate and the model's (1 only when all passed)."""
    for s, ok in passed.items():
        _gate(res, f"{model}_s{s}", ok, dataset=dataset, fid=40.0 + s if ok else 312.0)
    res.record(f"{model}_gate", int(all(passed.values())), dataset=dataset)


def test_a_claim_needs_every_seeds_gate(tmp_path):
    res = _rec(tmp_path, "06_latent_space")
    _arith(res)
    _seed_gates(res, "emoji-32", {0: True, 1: False, 2: True})
    row = _row(load_results(tmp_path), "§6.3.2", "(emoji")
    assert row["verdict"] == BELOW_GATE
    assert "gate emoji-32: below in 1 of 3 GAN seeds (seed 1: fid 312" in row["ours"]
    ok, phrase = report.gate_status(load_results(tmp_path), "emoji-32")
    assert ok is False and phrase.startswith("is below the quality gate in 1 of 3 GAN seeds (seed 1: fid 312")
    _seed_gates(res, "emoji-32", {0: True, 1: True, 2: True})
    row = _row(load_results(tmp_path), "§6.3.2", "(emoji")
    assert row["verdict"] == REPRODUCED and "gate emoji-32: passed in all 3 GAN seeds" in row["numbers"]
    assert report.gate_status(load_results(tmp_path), "emoji-32") == (True, "passes the quality gate in all 3 GAN seeds")


def test_a_failed_seed_gate_counts_even_when_the_model_record_says_pass(tmp_path):
    """The per-seed records are judged themselves, not only the model's summary record."""
    res = _rec(tmp_path, "06_latent_space")
    _arith(res)
    _seed_gates(res, "emoji-32", {0: True, 1: True})
    res.record("emoji-32_s2_gate", 0, dataset="emoji")  # e.g. another chapter's record of seed 2
    assert _verdict(tmp_path, "§6.3.2", "(emoji") == BELOW_GATE
    assert report.gate_status(load_results(tmp_path), "emoji-32")[0] is False
    assert report.seed_gates(load_results(tmp_path), "emoji-32") == {0: True, 1: True, 2: False}


def test_a_single_seed_model_gate_does_not_repeat_a_seeds_numbers(tmp_path):
    """Chapters 10/11 gate the first seed's run as ``<model>_gate`` (with numbers); beside chapter 02's per-seed
    gates the claim lists each failing seed's numbers once, labelled, not seed 0's twice."""
    res = _rec(tmp_path, "06_latent_space")
    _arith(res)
    _seed_gates(res, "emoji-32", {0: False, 1: True, 2: False})
    _gate(_rec(tmp_path, "11_latent_explorer"), "emoji-32", False, fid=312.0)  # seed 0's run, gated again
    ours = _row(load_results(tmp_path), "§6.3.2", "(emoji")["ours"]
    assert "gate emoji-32: below in 2 of 3 GAN seeds (seed 0: fid 312" in ours
    assert ours.count("fid 312") == 2 and "; seed 2: fid 312" in ours  # seeds 0 and 2, not an unlabelled third


def test_at_a_glance_summarises_seed_gates_per_model(tmp_path):
    res = _rec(tmp_path, "02_training")
    _seed_gates(res, "emoji-32", {0: True, 1: True, 2: False})
    text = report.at_a_glance(load_results(tmp_path))
    assert "Quality gate of `emoji-32` (emoji): **fails** in 1 of 3 GAN seeds (FID 40, 41, 312)" in text
    _seed_gates(res, "emoji-32", {0: True, 1: True, 2: True})
    assert "Quality gate of `emoji-32` (emoji): **passes** in all 3 GAN seeds (FID 40, 41, 42)" in \
        report.at_a_glance(load_results(tmp_path))
    assert "emoji-32_s1" not in text  # one line per model, not per seed
    # a seed gate without numbers (no reference) leaves no empty brackets in the phrase
    res2 = _rec(tmp_path / "b", "04_x")
    for s in (0, 1):
        res2.record(f"fashion-mnist-32_s{s}_gate", 0, dataset="fashion-mnist")
    assert report.gate_status(load_results(tmp_path / "b"), "fashion-mnist-32") == (
        False, "is below the quality gate in 2 of 2 GAN seeds")


def test_verdict_words_say_how_many_gan_seeds(tmp_path):
    res = _rec(tmp_path, "06_latent_space")
    _arith(res)
    _seed_gates(res, "emoji-32", {0: True, 1: True, 2: True})
    assert "GAN seeds" not in _row(load_results(tmp_path), "§6.3.2", "(emoji")["words"]
    for s in (0, 1, 2):
        res.record(f"emoji_arith_latent_minus_pixel_s{s}", 20.0 + s, dataset="emoji")
    row = _row(load_results(tmp_path), "§6.3.2", "(emoji")
    assert row["words"].endswith("; over 3 GAN seeds") and row["verdict"] == REPRODUCED
    assert "over 3 GAN seeds" in report.at_a_glance(load_results(tmp_path))
