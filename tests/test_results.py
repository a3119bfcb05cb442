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
