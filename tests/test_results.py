"""dcgan.results: the registry chapters record their numbers in, and the page generated from it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dcgan.report import write_results_page
from dcgan.results import Result, ResultsRecorder, load_results, results_dir


def test_record_writes_json_next_to_the_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("DCGAN_RESULTS_DIR", str(tmp_path))
    assert results_dir() == tmp_path
    res = ResultsRecorder("05_svhn", "smoke", 3)
    v = res.record("svhn_1000_test_error", torch.tensor(0.25), dataset="svhn", paper=22.48, unit="%", claim="§5.2")
    assert v == 0.25 and isinstance(v, float)  # tensors become plain numbers
    rows = json.loads((tmp_path / "05_svhn.results.json").read_text())
    assert rows == [{"chapter": "05_svhn", "name": "svhn_1000_test_error", "value": 0.25, "paper": 22.48, "unit": "%",
                     "dataset": "svhn", "profile": "smoke", "hardware": rows[0]["hardware"], "seed": 3,
                     "claim": "§5.2", "note": ""}]
    assert rows[0]["hardware"]
    res.record("svhn_1000_test_error", 0.5, dataset="svhn")  # re-recording replaces
    res.record("n_labels", 1000, dataset="svhn", seed=7)
    got = load_results(tmp_path)
    assert [(r.name, r.value, r.seed) for r in got] == [("svhn_1000_test_error", 0.5, 3), ("n_labels", 1000, 7)]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused(bad, tmp_path):
    res = ResultsRecorder("01_x", "smoke", 0, directory=tmp_path)
    with pytest.raises(ValueError, match="not finite"):
        res.record("fid", bad, dataset="fashion-mnist")


def test_results_page_lists_every_chapter_in_order(tmp_path):
    ResultsRecorder("02_training", "book", 0, directory=tmp_path).record("fid", 12.5, dataset="fashion-mnist", paper=26.5)
    ResultsRecorder("00_data", "book", 0, directory=tmp_path).record("n", 60000, dataset="fashion-mnist")
    assert [r.chapter for r in load_results(tmp_path)] == ["00_data", "02_training"]
    page = write_results_page(tmp_path, tmp_path / "results.md").read_text()
    assert "\n# Results\n" in page
    lines = [l for l in page.splitlines() if l.startswith("| 0")]
    assert lines[0].startswith("| 00_data | n | 60000 |") and "| 12.5 | 26.5 |" in lines[1]


def test_empty_results_page_says_how_to_fill_it(tmp_path):
    page = write_results_page(tmp_path, tmp_path / "out" / "results.md").read_text()
    assert "make book" in page


def test_result_fields_are_the_documented_provenance():
    fields = set(Result.__dataclass_fields__)
    assert {"name", "value", "paper", "dataset", "profile", "hardware", "seed"} <= fields


def test_reuse_rerecords_another_chapters_results_of_the_same_profile(tmp_path):
    src = ResultsRecorder("02_training", "smoke", 0, directory=tmp_path)
    src.record("emoji-64_gate", 0, dataset="emoji-64")
    src.record("emoji-64_gate_fid", 312.0, dataset="emoji-64", note="classifier features")
    src.record("emoji-64_nn_ratio", 0.9, dataset="emoji-64")
    res = ResultsRecorder("06_latent_space", "smoke", 0, directory=tmp_path)
    got = res.reuse("02_training", ["emoji-64_gate*"])
    assert [r.name for r in got] == ["emoji-64_gate", "emoji-64_gate_fid"]
    rows = {r.name: r for r in load_results(tmp_path) if r.chapter == "06_latent_space"}
    assert rows["emoji-64_gate"].value == 0
    assert rows["emoji-64_gate_fid"].note == "from chapter 02_training; classifier features"
    assert ResultsRecorder("06_latent_space", "book", 0, directory=tmp_path).reuse("02_training", ["*"]) == []
    assert res.reuse("99_absent", ["*"]) == []


# ---------------------------------------------------------------- results regression

def _result(name, value, unit="", chapter="03_x"):
    return Result(chapter, name, value, None, unit, "d", "smoke", "cpu", 0)


@pytest.mark.parametrize("a, b, same", [
    (1.0, 1.04, True), (1.0, 1.06, False),  # relative 5%
    (0.0, 0.009, True), (0.0, 0.011, False),  # absolute 0.01
    (69, 69, True), (69, 70, False),  # ints exactly
    (0, 0.0, True), (88.0, 88, True),  # an int and a float compare as floats
    ("2/3", "2/3", True), ("2/3", "1/3", False), ("nothing flagged", 0.0, False),
    (True, True, True), (True, 1, False),
])
def test_same_value(a, b, same):
    from dcgan.results import same_value

    assert same_value(a, b, rtol=0.05, atol=0.01) is same


def test_timing_results_are_not_compared():
    from dcgan.results import is_timing

    assert is_timing(_result("group_seconds", 0.19, "s")) and is_timing(_result("encode_codes_per_s", 4460, "codes/s"))
    assert is_timing(_result("training_minutes", 0.8, "min")) and is_timing(_result("lsun_scale_minutes", 11.3))
    assert is_timing(_result("train_img_per_s", 10.0, "img/s"))
    assert not is_timing(_result("emoji_hash_recall", 0.03))
    assert not is_timing(_result("stability_dcgan_fid", 3.0, "FID"))


def test_compare_results_reports_moved_missing_and_new():
    from dcgan.results import compare_results

    exp = [_result("recall", 0.50), _result("flagged", 69, "pairs"), _result("gone", 1.0),
           _result("group_seconds", 0.2, "s"), _result("other", 1.0, chapter="04_y")]
    act = [_result("recall", 0.52), _result("flagged", 70, "pairs"), _result("group_seconds", 9.0, "s"),
           _result("added", 3.0)]
    cmp = compare_results(exp, act)
    assert cmp.moved == [("03_x", "flagged", 69, 70)]
    assert cmp.missing == [("03_x", "gone"), ("04_y", "other")] and cmp.new == [("03_x", "added")]
    assert cmp.skipped == 1 and cmp.compared == 2 and not cmp.ok
    text = cmp.report(0.05, 0.01)
    assert "MOVED   03_x flagged: expected 69, got 70" in text and "MISSING 03_x gone" in text
    only = compare_results(exp, act, chapters={"03_x"})
    assert only.missing == [("03_x", "gone")]
    assert compare_results(exp[:1], act[:1]).ok


def test_compare_command(tmp_path, capsys):
    from dcgan.results import main

    for d, v in (("a", 0.50), ("b", 0.52), ("c", 0.9)):
        ResultsRecorder("03_x", "smoke", 0, directory=tmp_path / d).record("recall", v, dataset="d")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "1 results compared" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "c"), "--rtol", "0.1"]) == 1
    assert "MOVED   03_x recall: expected 0.5, got 0.9" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "empty")]) == 1
