"""Every chapter under the ``paper`` profile, at toy scale (``--tiny``), on the fixture files in the paper's formats.

Nobody can run the paper profile here (no GPU, none of the paper's data sets), but its code paths must not wait
for the first person who can: these tests execute each chapter notebook with papermill exactly as
``python -m dcgan book --profile paper --tiny`` does, on ``tests/conftest.py``'s LSUN lmdb, CelebA folder and
annotation files, Imagenet folders, CIFAR-10 pickles, SVHN .mat files and MNIST idx files, with the paper
profile's Inception-v3 feature path (random weights of the real architecture). ``--tiny`` lays each
``params/NN_*.yaml``'s ``tiny`` section over ``paper`` and shrinks the presets (``dcgan.config.tiny``):
a few images and steps, the same code.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from dcgan import book
from dcgan.config import TINY_ENV, preset

CHAPTERS = book.chapter_notebooks()


@pytest.fixture(scope="session")
def paper_fixture_root(tmp_path_factory):
    """The fixture sets, with more emoji, SVHN digits and clothes than the unit tests need (chapters split them
    finely)."""
    from conftest import fixture_data

    return fixture_data(tmp_path_factory.mktemp("paper-fixture-data"), emoji_n=32, svhn_n=40, fashion_n=100)


@pytest.fixture
def paper_data(paper_fixture_root, tmp_path, monkeypatch):
    monkeypatch.setenv("DCGAN_DATA", str(paper_fixture_root))
    monkeypatch.setenv("DCGAN_SKIP_MD5", "1")  # the fixture files are not the bytes torchvision's md5s record
    monkeypatch.setenv("DCGAN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DCGAN_RESULTS_DIR", str(tmp_path / "results"))
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the kernel is a new process: keep it to one thread per worker too
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            monkeypatch.setenv(var, "1")
    return paper_fixture_root


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """A torchvision Inception-v3 state_dict with random weights: the paper's feature path, not its numbers."""
    from torchvision.models import inception_v3

    path = tmp_path_factory.mktemp("inception") / "inception_v3.pt"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    return path


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_under_the_paper_profile_on_the_papers_formats(nb_path, paper_data, inception_weights, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("DCGAN_INCEPTION_WEIGHTS", str(inception_weights))
    monkeypatch.delenv(TINY_ENV, raising=False)
    out = tmp_path / "out"
    book.execute_chapters("paper", out, only=[nb_path.stem], tiny=True)
    assert TINY_ENV not in os.environ  # set for the kernels only while they ran
    results = json.loads((out / f"{nb_path.stem}.results.json").read_text())
    rows = results["results"] if isinstance(results, dict) and "results" in results else results
    # toy-scale numbers are recorded apart from real ones: never under the "paper" profile itself
    assert {r["profile"] for r in rows} <= {"paper-tiny"}


def test_tiny_needs_the_paper_profile_and_shrinks_only_it(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="--tiny shrinks the paper profile only"):
        book.chapter_params("02_training", "book", tiny=True)
    full = book.chapter_params("02_training", "paper")
    small = book.chapter_params("02_training", "paper", tiny=True)
    assert full["presets"] == small["presets"] == ["lsun-64", "celeba-64", "fashion-mnist-32", "emoji-32"]
    assert small["n_nn"] < full["n_nn"] and small["profile"] == "paper"
    monkeypatch.delenv(TINY_ENV, raising=False)
    paper = preset("lsun-64", "paper")
    monkeypatch.setenv(TINY_ENV, "1")
    tiny = preset("lsun-64", "paper")
    assert (tiny.dataset, tiny.image_size) == (paper.dataset, paper.image_size)  # the same data, toy nets
    assert tiny.model.ngf < paper.model.ngf and tiny.subset < 100 and paper.subset is None
    assert preset("fashion-mnist-32", "book") == preset("fashion-mnist-32", "book")  # other profiles untouched
    monkeypatch.delenv(TINY_ENV)
    assert preset("fashion-mnist-32", "book").model.ngf == 32
    monkeypatch.setenv(TINY_ENV, "1")
    with pytest.raises(ValueError, match="shrinks the paper profile only"):
        book.setup_chapter("00_data", "book")


def test_every_params_file_has_a_tiny_section_of_known_parameters():
    import yaml

    for nb_path in CHAPTERS:
        table = yaml.safe_load((book.PARAMS_DIR / f"{nb_path.stem}.yaml").read_text())
        assert "tiny" in table, f"params/{nb_path.stem}.yaml has no tiny section (tests run every chapter with it)"
