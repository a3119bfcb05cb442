"""dcgan.provenance and setup_chapter: what every executed chapter prints at its top."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from dcgan.book import setup_chapter
from dcgan.provenance import format_provenance, git_commit, hardware, provenance


def test_provenance_names_versions_hardware_commit_profile_seed():
    p = provenance("smoke", 4)
    assert {"profile", "seed", "hardware", "python", "torch", "torchvision", "numpy", "git_commit"} <= set(p)
    assert p["profile"] == "smoke" and p["seed"] == 4 and p["torch"] == torch.__version__
    assert p["hardware"] == hardware() and hardware()
    assert git_commit() == "unknown" or len(git_commit().split("+")[0]) >= 7
    text = format_provenance(p)
    assert all(f"{k}: {v}" in text for k, v in p.items())


def test_setup_chapter_prints_provenance_seeds_and_records(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DCGAN_RESULTS_DIR", str(tmp_path))
    res = setup_chapter("03_x", "book", seed=5)
    out = capsys.readouterr().out
    assert "chapter: 03_x" in out and "profile: book" in out and "seed: 5" in out
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    setup_chapter("03_x", "book", seed=5)
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())
    res.record("x", 1, dataset="none")
    assert (tmp_path / "03_x.results.json").exists()


def test_setup_chapter_rejects_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'fast'; known: smoke, book, paper"):
        setup_chapter("03_x", "fast")
