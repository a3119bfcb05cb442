"""The book runner: profiles, notebook discovery, toc staging, and the nbval baseline being up to date."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from dcgan import book
from dcgan.paths import REPO_ROOT

BASELINE = REPO_ROOT / "tests" / "notebooks"
CHAPTERS = book.chapter_notebooks()


def _cells(nb) -> list[tuple[str, str]]:
    """(type, source) of every cell, without papermill's injected-parameters cell."""
    return [(c.cell_type, c.source) for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]


def _injected(nb) -> dict:
    cells = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    return nb.metadata.get("papermill", {}).get("parameters", {}) if cells else {}


def test_every_chapter_has_a_baseline():
    have = {p.name for p in BASELINE.glob("[0-9][0-9]_*.ipynb")}
    missing = [p.name for p in CHAPTERS if p.name not in have]
    assert not missing, f"no nbval baseline for {missing}: run `make nbval-baseline ONLY=<chapter>`"
    stale = sorted(have - {p.name for p in CHAPTERS})
    assert not stale, f"baseline for chapters that no longer exist: {stale}; delete them from tests/notebooks/"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_baseline_is_up_to_date(nb_path: Path):
    base_path = BASELINE / nb_path.name
    if not base_path.exists():
        pytest.skip("no baseline (reported by test_every_chapter_has_a_baseline)")
    src, base = nbformat.read(nb_path, 4), nbformat.read(base_path, 4)
    fix = f"run `make nbval-baseline ONLY={nb_path.stem}` and commit tests/notebooks/{nb_path.name}"
    assert _cells(base) == _cells(src), f"{base_path} has other cells than {nb_path}: {fix}"
    assert _injected(base) == book.chapter_params(nb_path.stem, "smoke"), f"{base_path} was run with other smoke parameters than params/: {fix}"
    errors = [o for c in base.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{base_path} holds an error output: {fix}"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_follows_conventions(nb_path: Path):
    nb = nbformat.read(nb_path, 4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {nb_path.stem[:2]}."), \
        "the first cell is a markdown title '# NN. Title'"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one code cell tagged `parameters`"
    assert 'profile = "book"' in params[0].source, "the parameters cell sets profile = \"book\""
    assert nb.metadata.get("kernelspec", {}).get("name") == book.KERNEL_NAME
    declared = set()
    for line in params[0].source.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            declared.add(line.split("=", 1)[0].strip())
    for profile, tiny in [(p, False) for p in book.PROFILES] + [("paper", True)]:
        unknown = set(book.chapter_params(nb_path.stem, profile, tiny=tiny)) - declared
        assert not unknown, f"params/{nb_path.stem}.yaml[{'tiny' if tiny else profile}] sets {unknown}, " \
                            "not in the parameters cell"
    # set-up code one click away, not in the reader's path: the parameters and set-up cells fold (hide-input)
    setup = [c for c in nb.cells if c.cell_type == "code" and "setup_chapter(" in c.source]
    assert len(setup) == 1, "exactly one code cell calls setup_chapter"
    for c in (params[0], setup[0]):
        assert book.HIDE in c.metadata.get("tags", []), f"tag the cell {c.source[:40]!r}... `{book.HIDE}`"
    # result first: the question, then the generated "At a glance" box, glued by the chapter's last cell
    assert nb.cells[1].cell_type == "markdown" and "{admonition} At a glance" in nb.cells[1].source \
        and "{glue:md} glance" in nb.cells[1].source, "the second cell is the 'At a glance' box"
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert 'glue("glance"' in last.source and "at_a_glance(res.results.values())" in last.source, \
        "the last code cell glues the box from the chapter's recorded results"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_figures_are_numbered_and_referenced(nb_path: Path):
    """Every figure is a glued MyST figure with a name and a caption, which the chapter's prose cites by number
    ({numref}: "Figure 2.3", dcgan/bookext.py); figures are glued, not shown loose by plt.show()."""
    nb = nbformat.read(nb_path, 4)
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    names = re.findall(r"(?:```|:::)\{glue:figure\} \S+\n:name: (\S+)\n", md)
    assert len(names) == md.count("{glue:figure}"), "every {glue:figure} has a :name: line right below it"
    for name in names:
        assert f"{{numref}}`{name}`" in md, f"figure {name} is not cited as {{numref}}`{name}` in the prose"
    # (a figure that only the paper profile draws, which a glued figure could not be, goes through show_figure with
    # its caption)
    assert code.count("plt.show()") == 0, \
        "glue the figure and give it a {glue:figure} with :name: and a caption instead of plt.show()"


VISIBLE_CODE_LINES = 100  # a chapter shows the calls behind its results; plotting, tables and bookkeeping fold
FOLDED = ("hide-input", "hide-cell", "remove-input", "remove-cell")


def visible_code_lines(nb) -> int:
    """Non-blank code lines in cells the reader sees unfolded (no hide-input/hide-cell/remove-input/remove-cell tag)."""
    return sum(1 for c in nb.cells if c.cell_type == "code" and not set(c.metadata.get("tags", [])) & set(FOLDED)
               for line in c.source.splitlines() if line.strip())


def test_visible_code_lines_counts_only_unfolded_code():
    nb = nbformat.v4.new_notebook()
    shown, folded, removed = (nbformat.v4.new_code_cell(s) for s in ("a = 1\n\nb = 2\n", "x = 1\ny = 2", "z = 3"))
    folded.metadata["tags"], removed.metadata["tags"] = ["hide-input"], ["remove-cell"]
    nb.cells = [nbformat.v4.new_markdown_cell("text\nmore"), shown, folded, removed]
    assert visible_code_lines(nb) == 2


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_shows_at_most_100_lines_of_code(nb_path: Path):
    """Code only where it teaches: the calls into dcgan that show the method stay visible, the rest folds."""
    n = visible_code_lines(nbformat.read(nb_path, 4))
    assert n <= VISIBLE_CODE_LINES, (f"{nb_path.name} shows {n} lines of code unfolded (at most {VISIBLE_CODE_LINES}): "
                                     "tag plotting, tables and glue/record cells `hide-input`, or move them into dcgan")


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_rendered_chapter_shows_no_stderr(nb_path: Path):
    """The executed baseline is what the book renders: no warning or progress bar in the reader's path."""
    base_path = BASELINE / nb_path.name
    if not base_path.exists():
        pytest.skip("no baseline (reported by test_every_chapter_has_a_baseline)")
    found = book.stderr_outputs(base_path)
    assert not found, (f"{base_path.name} shows stderr to the reader: "
                       + "; ".join(f"cell {i} ({cid}): {line}" for i, cid, line in found)
                       + f"; fix the cause, then `make nbval-baseline ONLY={nb_path.stem}`")


def test_stderr_outputs_are_those_the_reader_sees(tmp_path):
    nb = nbformat.v4.new_notebook()
    warn, hidden, removed, quiet = (nbformat.v4.new_code_cell(s) for s in ("w", "h", "r", "q"))
    for c in (warn, hidden, removed):
        c.outputs = [nbformat.v4.new_output("stream", name="stderr", text="UserWarning: careful\nmore")]
    quiet.outputs = [nbformat.v4.new_output("stream", name="stdout", text="fine")]
    hidden.metadata["tags"], removed.metadata["tags"] = ["hide-input"], ["remove-output"]
    nb.cells = [warn, hidden, removed, quiet]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert [(i, line) for i, _, line in book.stderr_outputs(path)] == [(0, "UserWarning: careful"), (1, "UserWarning: careful")]


def test_injected_parameters_fold_like_the_parameters_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("profile = 'smoke'")
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    book.hide_injected_parameters(path)
    got = nbformat.read(path, 4)
    assert got.cells[0].metadata["tags"] == ["injected-parameters", book.HIDE] and "tags" not in got.cells[1].metadata


# ---------------------------------------------------------------- runner pieces

def _nb(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# 01. Test")]
    p = nbformat.v4.new_code_cell(cells[0])
    p.metadata["tags"] = ["parameters"]
    nb.cells += [p] + [nbformat.v4.new_code_cell(c) for c in cells[1:]]
    nbformat.write(nb, path)
    return path


def test_chapter_notebooks_order_and_only(tmp_path):
    for name in ("02_b", "00_a", "10_c", "notes"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    assert [p.stem for p in book.chapter_notebooks(None, tmp_path)] == ["00_a", "02_b", "10_c"]
    assert [p.stem for p in book.chapter_notebooks(["10", "00_a"], tmp_path)] == ["00_a", "10_c"]
    with pytest.raises(ValueError, match="no chapter notebook.*03"):
        book.chapter_notebooks(["03"], tmp_path)


def test_chapter_params(tmp_path):
    (tmp_path / "01_x.yaml").write_text("smoke: {epochs: 1}\nbook: {epochs: 5}\n")
    assert book.chapter_params("01_x", "smoke", tmp_path) == {"epochs": 1, "profile": "smoke"}
    assert book.chapter_params("01_x", "paper", tmp_path) == {"profile": "paper"}
    assert book.chapter_params("02_none", "book", tmp_path) == {"profile": "book"}
    with pytest.raises(ValueError, match="unknown profile"):
        book.chapter_params("01_x", "fast", tmp_path)
    (tmp_path / "04_t.yaml").write_text("paper: {epochs: 25, n: 100}\ntiny: {epochs: 1}\n")
    assert book.chapter_params("04_t", "paper", tmp_path, tiny=True) == {"epochs": 1, "n": 100, "profile": "paper"}
    assert book.chapter_params("04_t", "paper", tmp_path) == {"epochs": 25, "n": 100, "profile": "paper"}
    with pytest.raises(ValueError, match="--tiny shrinks the paper profile only"):
        book.chapter_params("04_t", "smoke", tmp_path, tiny=True)
    (tmp_path / "03_bad.yaml").write_text("smoek: {epochs: 1}\n")
    with pytest.raises(ValueError, match="top-level keys must be profiles"):
        book.chapter_params("03_bad", "smoke", tmp_path)


def test_prune_toc_drops_missing_chapters_and_empty_parts():
    toc = {"format": "jb-book", "root": "book/intro", "parts": [
        {"caption": "A", "chapters": [{"file": "book/00_data"}, {"file": "book/01_x"}]},
        {"caption": "B", "chapters": [{"file": "book/02_y"}]},
    ]}
    keep = {"book/intro", "book/00_data"}
    assert book._toc_files(toc) == ["book/intro", "book/00_data", "book/01_x", "book/02_y"]
    assert book._prune_toc(toc, keep) == {"format": "jb-book", "root": "book/intro",
                                          "parts": [{"caption": "A", "chapters": [{"file": "book/00_data"}]}]}


@pytest.mark.slow
def test_execute_chapter_injects_profile_and_records(tmp_path, monkeypatch):
    """papermill runs a chapter in the venv's kernel, with the profile's parameters and the results dir set."""
    nbs, params, out = tmp_path / "nbs", tmp_path / "params", tmp_path / "out"
    nbs.mkdir(), params.mkdir()
    _nb(nbs / "01_t.ipynb", 'profile = "book"\nseed = 0\nn = 5',
        "import sys, os\nfrom dcgan.book import setup_chapter\nres = setup_chapter('01_t', profile, seed)\n"
        "res.record('n_squared', n * n, dataset='none')\nfrom dcgan.timing import phase\n"
        "with phase('work'):\n    sum(range(1000))\nprint(sys.prefix, os.environ['DCGAN_RESULTS_DIR'])")
    (params / "01_t.yaml").write_text("smoke: {n: 3}\nbook: {n: 4}\n")
    monkeypatch.setenv("DCGAN_RESULTS_DIR", "/nonexistent")
    runs = book.execute_chapters("smoke", out, notebooks_dir=nbs, params_dir=params, seed=7)
    assert [r.chapter for r in runs] == ["01_t"]
    # the kernel's CPU time is counted (importing torch alone takes a CPU second), and tabulated with the wall time
    assert 0.3 < runs[0].cpu_seconds and runs[0].cores == runs[0].cpu_seconds / runs[0].seconds
    table = book.timing_table(runs)
    assert "01_t" in table and f"{runs[0].cpu_seconds:8.1f}" in table and "cores" in table.splitlines()[0]
    # the kernel's phases (dcgan.timing), written after each cell, reach the run and its table
    assert [r["path"] for r in runs[0].phases] == ["kernel start and imports", "work"]
    assert (out / "01_t.timing.json").exists() and "01_t: where its" in table and "work" in table
    assert json.loads((out / "01_t.results.json").read_text())[0]["seed"] == 7  # the seed parameter replaced
    rec = json.loads((out / "01_t.results.json").read_text())
    assert rec[0]["value"] == 9 and rec[0]["profile"] == "smoke"
    text = "".join(o.get("text", "") for o in nbformat.read(out / "01_t.ipynb", 4).cells[-1].outputs)
    import sys

    prefix, results = text.strip().splitlines()[-1].split()
    assert prefix == sys.prefix and results == str(out.resolve())
    # a failing chapter: stop there, or (keep_going) run the others and report it at the end
    _nb(nbs / "00_fail.ipynb", 'profile = "book"', "raise RuntimeError('chapter bug')")
    _nb(nbs / "03_ok.ipynb", 'profile = "book"', "print(profile)")
    with pytest.raises(book.ChapterFailed, match="00_fail") as e:
        book.execute_chapters("smoke", out, ["00", "03"], notebooks_dir=nbs, params_dir=params, keep_going=True)
    assert [r.chapter for r in e.value.args[1]] == ["03_ok"]
    assert "chapter bug" in str(nbformat.read(out / "00_fail.ipynb", 4).cells[-1].outputs)
    # a chapter that shows the reader stderr fails too, and its kernel drew no progress bar
    _nb(nbs / "05_noisy.ipynb", 'profile = "book"', "import os, sys\nprint(os.environ['DCGAN_PROGRESS'])\n"
        "from dcgan.progress import bar\nassert bar(range(3)).disable\nprint('careful', file=sys.stderr)")
    with pytest.raises(book.ChapterFailed, match="05_noisy"):
        book.execute_chapters("smoke", out, ["05"], notebooks_dir=nbs, params_dir=params)
    outs = nbformat.read(out / "05_noisy.ipynb", 4).cells[-1].outputs
    assert [o.text.strip() for o in outs] == ["0", "careful"] and book.PROGRESS_ENV not in os.environ


def test_every_chapter_is_in_the_toc():
    listed = set(book._toc_files(yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())))
    missing = [p.stem for p in CHAPTERS if f"book/{p.stem}" not in listed]
    assert not missing, f"chapters not in _toc.yml (the book leaves them out): add `- file: book/<name>` for {missing}"


def test_toc_and_config_are_consistent():
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    files = book._toc_files(toc)
    assert files[0] == "book/intro" and "book/results" in files and "book/references" in files
    assert len(files) == len(set(files)), "a page is listed twice in _toc.yml"
    for f in files:
        stem = f.split("/", 1)[1]
        if stem[:2].isdigit():
            assert (REPO_ROOT / "notebooks" / f"{stem}.ipynb").exists(), f"_toc.yml lists {f} but notebooks/{stem}.ipynb is missing"
        elif stem != "results":
            assert (REPO_ROOT / f"{f}.md").exists(), f"_toc.yml lists {f} but {f}.md is missing"
    cfg = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["bibtex_bibfiles"] == ["references.bib"]


def test_every_citation_is_in_the_bibliography():
    import re

    keys = set(re.findall(r"^@\w+\{([^,]+),", (REPO_ROOT / "references.bib").read_text(), re.M))
    cited = set()
    for p in list((REPO_ROOT / "book").glob("*.md")) + list((REPO_ROOT / "notebooks").glob("*.ipynb")):
        for group in re.findall(r"\{cite(?::[pt])?\}`([^`]+)`", p.read_text()):
            cited.update(k.strip() for k in group.split(","))
    assert cited - keys == set(), f"cited but not in references.bib: {sorted(cited - keys)}"


def test_cli_data_and_book_commands(tmp_path, capsys, data_dir):
    from dcgan.cli import main

    assert main(["data"]) == 0
    out = capsys.readouterr().out
    assert "lsun-bedroom" in out and "found" in out
    assert main(["data", "svhn", "--image-size", "16"]) == 0
    assert "svhn train: 20 images of shape (3, 16, 16)" in capsys.readouterr().out
    (tmp_path / "r").mkdir()
    assert main(["book", "--no-execute", "--no-build", "--out", str(tmp_path / "r")]) == 0
    assert "No chapter has recorded results yet" in (tmp_path / "r" / "results.md").read_text()


def test_stage_book_keeps_only_what_was_executed(tmp_path, capsys):
    ex = tmp_path / "executed"
    ex.mkdir()
    first = CHAPTERS[0]
    (ex / first.name).write_text(first.read_text())
    (ex / "99_unlisted.ipynb").write_text(first.read_text())
    (ex / "results.md").write_text("# Results\n")
    stage = book.stage_book(ex, tmp_path / "stage")
    toc = yaml.safe_load((stage / "_toc.yml").read_text())
    assert book._toc_files(toc) == ["book/intro", "book/paper", f"book/{first.stem}", "book/results",
                                    "book/references"]
    paper = (stage / "book" / "paper.md").read_text()  # links only to the chapters in this build
    assert "{ref}`chapter" not in paper and "chapter 05 (not in this build)" in paper
    assert (stage / "references.bib").exists() and (stage / "_config.yml").exists()
    staged = {p.name for p in (stage / "book").iterdir()}
    assert {"intro.md", "references.md", "results.md", first.name} <= staged
    assert not {p for p in staged if p.endswith(".ipynb")} - {first.name}, "only executed, listed chapters"
    out = capsys.readouterr().out
    assert "99_unlisted.ipynb is not in _toc.yml" in out and "not in this build" in out


# ---------------------------------------------------------------- prose from numbers (issue 12, item 6)

import re

# Words that state a verdict or a comparison of results. Such sentences must be generated from the recorded
# numbers (a code cell's display(Markdown(...)) or glue), never typed into a markdown cell.
VERDICT_WORDS = re.compile(r"\b(not reproduced|reproduced|reproduces|better than|worse than|outperform\w*|beats|"
                           r"more stable than|less stable than)\b", re.I)
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`[^`]*`")
CODE_SPAN = re.compile(r"`[^`\n]*`")


def hand_written_verdicts(markdown: str) -> list[str]:
    """Sentences of a markdown cell's own text that state a verdict (glue roles, code spans and questions aside)."""
    text = CODE_SPAN.sub(" ", GLUE_ROLE.sub(" ", markdown))
    sentences = re.split(r"(?<=[.!?:;])\s+|\n\s*\n", text)
    # A question (the chapter's opening question, say) states no result.
    return [s.strip() for s in sentences if VERDICT_WORDS.search(s) and not s.strip().rstrip("*_) ").endswith("?")]


def test_hand_written_verdicts_finder():
    found = hand_written_verdicts("The hash is better than L2 here. Numbers follow.")
    assert found == ["The hash is better than L2 here."]
    assert hand_written_verdicts("*Is the hash better than L2?*") == []
    assert hand_written_verdicts("Verdict: {glue:text}`v` and `reproduced` in code.") == []
    assert hand_written_verdicts("So the claim is reproduced") == ["So the claim is reproduced"]
    assert hand_written_verdicts("Not Reproduced, on emoji.") == ["Not Reproduced, on emoji."]


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_no_hand_written_verdicts(nb_path: Path):
    """Item 6 of issue 12: a sentence stating a result's verdict is generated from the numbers, never typed."""
    nb = nbformat.read(nb_path, 4)
    found = [f"cell {i}: {s!r}" for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
             for s in hand_written_verdicts(c.source)]
    assert not found, (f"{nb_path.name} states verdicts in hand-written markdown (generate them from the recorded "
                       "numbers, e.g. display(Markdown(dcgan.report.chapter_verdicts(...)))):\n" + "\n".join(found))


def test_show_images_draws_one_grid_without_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    fig, ax = plt.subplots()
    book.show_images(ax, torch.zeros(6, 3, 8, 8), nrow=3, title="six grey images")
    (im,) = ax.get_images()
    assert im.get_array().shape == (2 * 9 + 1, 3 * 9 + 1, 3)  # 2 rows x 3, one pixel of padding around each
    assert float(im.get_array()[5, 5, 0]) == 0.5 and not ax.axison and ax.get_title() == "six grey images"
    plt.close(fig)
