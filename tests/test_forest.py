"""Tests for dcgan.evidence (the numbers behind a verdict, in words) and dcgan.forest (their forest plots)."""

from __future__ import annotations

import fnmatch

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from dcgan import evidence, forest, report  # noqa: E402
from dcgan.results import ResultsRecorder, load_results  # noqa: E402


def _rec(tmp_path, chapter):
    return ResultsRecorder(chapter, "book", 0, tmp_path)


def _ci(res, name, value, lo, hi, dataset, unit=""):
    res.record(name, value, dataset=dataset, unit=unit)
    res.record(f"{name}_ci_lo", lo, dataset=dataset)
    res.record(f"{name}_ci_hi", hi, dataset=dataset)


def test_a_difference_is_said_with_its_interval_turned_with_the_word():
    say = {"result": "stability_relu-in-d_minus_dcgan_fid", "what": "ReLU in D", "measure": "FID", "than": "LeakyReLU"}
    assert evidence.sentence(say, say["result"], -4.043, (-6.973, -1.112), "FID", "diff") == \
        "ReLU in D: FID 4.0 lower than LeakyReLU [1.1, 7.0]"
    assert evidence.sentence(say, say["result"], 2.233, (-1.899, 6.365), "FID", "diff") == \
        "ReLU in D: FID 2.2 higher than LeakyReLU [-1.9, 6.4]"  # an interval across zero stays readable
    assert evidence.sentence(say, say["result"], 0.0, None, "FID", "diff") == "ReLU in D: FID the same as LeakyReLU"


def test_a_line_and_a_papers_number_are_said_against_their_line():
    fp = {"result": "*hash_fp_rate", "what": "Hash on {}", "measure": "false-positive rate"}
    assert evidence.sentence(fp, "emoji_hash_fp_rate", 0.0938, (0.0324, 0.2422), "", "line", 0.01) == \
        "Hash on emoji: false-positive rate 0.094 [0.032, 0.24], above the 0.01 line"
    acc = {"result": "transfer_dcgan_test_accuracy", "what": "DCGAN features", "measure": "test accuracy"}
    assert evidence.sentence(acc, acc["result"], 89.67, (86.0, 93.0), "%", "paper", 82.8) == \
        "DCGAN features: test accuracy 89.7 % [86.0, 93.0], 6.9 points from the paper's 82.8"
    assert [evidence.number(x) for x in (295.28, 4.043, 0.1724, 0.0, -0.67)] == ["295", "4.0", "0.17", "0", "-0.67"]


def test_every_measured_quantity_has_its_words():
    """A claim whose rule judges a result says it in words (claims.yaml `says`), never by its raw name."""
    for c in report.CLAIMS:
        for m in getattr(c.rule, "measures", []):
            assert any(s["result"] == m.pattern or fnmatch.fnmatchcase(m.pattern, s["result"]) for s in c.says), \
                f"claim {c.id}: add a `says` entry for {m.pattern} to dcgan/claims.yaml"


def test_no_two_claims_of_a_chapter_share_a_row_label():
    """A forest row is labelled "section what vs than": two claims of one chapter with the same words (e.g. §5.1's
    all-label and few-label comparisons) would be two rows the reader cannot tell apart. (Rows on different models,
    i.e. other gates, are told apart by the data set the label adds.)"""
    seen: dict[tuple, str] = {}
    for c in report.CLAIMS:
        for s in c.says:
            key = (c.chapter, tuple(c.gates), c.section, s["what"], s.get("than"))
            assert seen.setdefault(key, c.id) == c.id, f"claims {seen[key]} and {c.id} read the same: {key}"


def test_points_carry_the_claims_verdict_and_direction(tmp_path):
    res = _rec(tmp_path, "08_stability")
    res.record("stability_dcgan_gate", 1, dataset="fashion-mnist")
    _ci(res, "stability_relu-in-d_minus_dcgan_fid", -4.0, -7.0, -1.1, "fashion-mnist", "FID")
    _ci(res, "fashion_mnist_hash_fp_rate", 0.002, 0.0005, 0.008, "fashion-mnist")
    pts = forest.claim_points(load_results(tmp_path))
    relu = next(p for p in pts if p.claim_id == "leaky-relu")
    assert (relu.kind, relu.direction, relu.at, relu.verdict) == ("diff", 1, 0.0, report.NOT_REPRODUCED)
    assert relu.sentence == "ReLU in D: FID 4.0 lower than LeakyReLU [1.1, 7.0]" and relu.label == "ReLU in D vs LeakyReLU"
    fp = next(p for p in pts if p.claim_id == "dedup-fp")
    assert (fp.kind, fp.direction, fp.at, fp.verdict) == ("line", -1, 0.01, report.REPRODUCED)


def test_forest_figure_has_a_comparative_and_a_fixed_line_panel(tmp_path):
    res = _rec(tmp_path, "08_stability")
    res.record("stability_dcgan_gate", 1, dataset="fashion-mnist")
    _ci(res, "stability_relu-in-d_minus_dcgan_fid", -4.0, -7.0, -1.1, "fashion-mnist", "FID")
    _ci(res, "fashion_mnist_hash_fp_rate", 0.002, 0.0005, 0.008, "fashion-mnist")
    fig = forest.forest_figure(load_results(tmp_path), columns=2)
    axes = [ax for ax in fig.get_axes() if ax.get_yticklabels()]
    labels = [[t.get_text() for t in ax.get_yticklabels()] for ax in axes]
    assert labels == [["§3 (4) ReLU in D vs LeakyReLU"], ["§4.1.1 Hash on fashion mnist: 0.002 vs 0.01"]]
    colours = [line.get_color() for line in axes[0].get_lines() if line.get_marker() == "o"]
    assert colours == [forest.COLORS[report.NOT_REPRODUCED]]
    # the paper's side is shaded: right of zero for "worse FID without LeakyReLU", left of the line for a rate
    (shade,) = axes[0].collections
    assert shade.get_paths()[0].vertices[:, 0].min() == pytest.approx(0.0)
    (shade,) = axes[1].collections
    assert shade.get_paths()[0].vertices[:, 0].max() == pytest.approx(1.0)
    plt.close(fig)
    empty = forest.forest_figure([])
    assert "No claim" in empty.axes[0].texts[0].get_text()
    plt.close(empty)
