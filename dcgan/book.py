"""Chapter set-up and the book runner (papermill profiles -> executed notebooks -> Jupyter Book).

Every chapter is a notebook ``notebooks/NN_name.ipynb`` with a ``parameters``
cell; ``params/NN_name.yaml`` holds its parameters per profile::

    smoke: {epochs: 1}      # seconds on 2 CPU cores: CI and the nbval baseline
    book:  {epochs: 5}      # the default: the rendered book, CPU, offline data
    paper: {epochs: 25}     # the paper's scale: GPU and the paper's data sets

:func:`run_book` executes the chapters in order with papermill (injecting the
profile's parameters plus ``profile``) into ``book/``, writes the results page
and builds the Jupyter Book. The book is built from a staged copy of the
project so that a partial run (``--only``) or a run into another folder
(``--out``) still builds.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .paths import REPO_ROOT
from .progress import PROGRESS_ENV
from .provenance import format_provenance, provenance
from .results import ResultsRecorder
from .timing import LOW_CORES, load_report, low_mark, phase_table

PROFILES = ("smoke", "book", "paper")
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = REPO_ROOT / "params"
BOOK_DIR = REPO_ROOT / "book"
KERNEL_NAME = "python3"  # the notebooks' kernelspec; jupyter_client runs it with this Python


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_chapter(chapter: str, profile: str, seed: int = 0) -> ResultsRecorder:
    """Seed everything, print the provenance block and return the chapter's results recorder."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    seed_everything(seed)
    from .config import tiny

    if tiny():  # the paper profile's code paths at toy scale: its numbers are recorded apart, never as results
        if profile != "paper":
            raise ValueError(f"$DCGAN_TINY (--tiny) shrinks the paper profile only, not {profile!r}")
        profile = "paper-tiny"
        print("paper profile at TOY SCALE (--tiny / $DCGAN_TINY): a test of its code paths; no number below is a result")
    if profile == "smoke":
        # The smoke run is the regression baseline (tests/notebooks): one thread makes its float reductions,
        # hence its recorded numbers, the same on every machine whatever its core count. scikit-learn's
        # OpenMP/BLAS pools (K-means, SVMs) follow the same rule.
        torch.set_num_threads(1)
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    print(format_provenance({"chapter": chapter, **provenance(profile, seed)}))
    recorder = ResultsRecorder(chapter, profile, seed)
    _write_phases_after_each_cell(recorder.path.with_name(f"{chapter}.timing.json"), chapter, profile)
    return recorder


def _write_phases_after_each_cell(path: Path, chapter: str, profile: str) -> None:
    """In a notebook kernel, write this process's phase times (:mod:`dcgan.timing`) to ``path`` after every cell:
    the runner reads them once the kernel is gone, and a chapter that fails half-way still leaves its phases."""
    from . import timing

    try:
        from IPython import get_ipython
    except ImportError:  # a plain script: nothing to hook into
        return
    ip = get_ipython()
    if ip is None:
        return
    timing.reset()  # a re-run set-up in the same kernel starts over, like the chapter's results
    if getattr(ip, "_dcgan_timing_hook", None) is None:  # the first set-up of this kernel: what came before it
        try:
            timing.REGISTRY.add("kernel start and imports", *timing.process_so_far())
        except ImportError:  # no psutil (it comes with ipykernel): that time stays "outside any phase"
            pass
    old = getattr(ip, "_dcgan_timing_hook", None)
    if old is not None:  # one writer per kernel, to the last set-up's path
        ip.events.unregister("post_run_cell", old)

    def write(_result=None) -> None:
        timing.write_report(path, chapter=chapter, profile=profile)

    ip.events.register("post_run_cell", write)
    ip._dcgan_timing_hook = write


def show_figure(fig, caption: str) -> None:
    """Show a figure that only some profiles draw (e.g. on the paper's data sets), its caption below it, and close it.

    A ``{glue:figure}`` must be glued by every profile's run or the book does not build; a figure that
    only the ``paper`` profile draws is shown in its cell's output instead, unnumbered, captioned in italics.
    """
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    display(fig)
    display(Markdown(f"*{caption}*"))
    plt.close(fig)


def show_images(ax, imgs, nrow: int, title: str | None = None, normalize: bool = True) -> None:
    """Draw a batch of images in [-1, 1] (N, C, H, W) on ``ax`` as one grid of ``nrow`` per row, without axes.

    ``normalize=False`` draws values already in [0, 1] (a saliency map) as they are. The chapters' image panels
    (06, 07) all go through it.
    """
    from torchvision.utils import make_grid

    grid = make_grid(imgs.float(), nrow=nrow, normalize=normalize, value_range=(-1, 1) if normalize else None,
                     pad_value=1, padding=1)
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)


# ---------------------------------------------------------------- notebooks and parameters

def chapter_notebooks(only: list[str] | None = None, notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """``notebooks/NN_*.ipynb`` in order; ``only`` keeps those named ``NN_name`` or ``NN``."""
    nbs = sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return nbs
    picked = [p for p in nbs if any(p.stem == o or p.stem.split("_", 1)[0] == o for o in only)]
    unknown = [o for o in only if not any(p.stem == o or p.stem.split("_", 1)[0] == o for p in nbs)]
    if unknown:
        raise ValueError(f"no chapter notebook {unknown} in {notebooks_dir}; chapters: {', '.join(p.stem for p in nbs)}")
    return picked


def check_tiny(profile: str, tiny: bool) -> None:
    """``--tiny`` shrinks the paper profile only: a ValueError in the CLI's words otherwise."""
    if tiny and profile != "paper":
        raise ValueError(f"--tiny shrinks the paper profile only; add --profile paper (got --profile {profile})")


def chapter_params(chapter: str, profile: str, params_dir: Path = PARAMS_DIR, tiny: bool = False) -> dict:
    """The papermill parameters of ``chapter`` under ``profile`` (plus ``profile`` itself).

    ``tiny`` (paper only) lays the file's ``tiny`` section over the ``paper`` one: the paper profile's
    code paths with a few images and steps (the test suite runs every chapter so on fixture files).
    """
    import yaml

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    check_tiny(profile, tiny)
    path = Path(params_dir) / f"{chapter}.yaml"
    table = {}
    if path.exists():
        table = yaml.safe_load(path.read_text()) or {}
        if not isinstance(table, dict) or set(table) - {*PROFILES, "tiny"}:
            raise ValueError(f"{path}: top-level keys must be profiles {PROFILES} (or tiny), got {list(table)}")
    params = {}
    for section in (profile, "tiny") if tiny else (profile,):
        part = table.get(section) or {}
        if not isinstance(part, dict):
            raise ValueError(f"{path}: {section!r} must map parameter names to values")
        params.update(part)
    params["profile"] = profile
    return params


# ---------------------------------------------------------------- execution

@dataclass
class ChapterRun:
    chapter: str
    output: Path
    seconds: float  # wall
    cpu_seconds: float = 0.0  # the kernel's CPU time and its workers' (and papermill's): cores used = cpu / wall
    phases: list[dict] | None = None  # the kernel's phase times (dcgan.timing), None when it wrote none

    @property
    def cores(self) -> float:
        return self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (a chapter's kernel, once shut down, and the
    training workers it started)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timing_table(runs: list[ChapterRun], total: float | None = None, threshold: float = LOW_CORES) -> str:
    """The per-chapter wall, CPU and cores table that ``make book`` prints at its end and keeps in the log, then
    the phase breakdown (:func:`dcgan.timing.phase_table`) of every chapter whose kernel recorded phases.
    ``<`` marks a chapter or phase that kept fewer than ``threshold`` cores busy on average."""

    def row(label: str, wall: float, cpu: float) -> str:
        return f"  {label:<28} {wall:8.1f} {cpu:8.1f} {cpu / wall if wall > 0 else 0.0:6.2f} " \
               f"{low_mark(wall, cpu, threshold)}".rstrip()

    lines = [f"  {'chapter':<28} {'wall s':>8} {'CPU s':>8} {'cores':>6}"]
    lines += [row(r.chapter, r.seconds, r.cpu_seconds) for r in runs]
    wall, cpu = sum(r.seconds for r in runs), sum(r.cpu_seconds for r in runs)
    lines.append(row("all chapters", total or wall, cpu))
    for r in runs:
        if r.phases:
            lines += ["", f"  {r.chapter}: where its {r.seconds:.1f} s went",
                      phase_table(r.phases, r.seconds, r.cpu_seconds, threshold=threshold)]
    lines += ["", f"  <: fewer than {threshold:g} cores busy on average; (N proc): time in N worker processes, "
                  "their wall shared out of the phase that waited for them"]
    return "\n".join(lines)


def execute_chapter(nb: Path, out_dir: Path, profile: str, params_dir: Path = PARAMS_DIR,
                    log_output: bool = False, tiny: bool = False, seed: int | None = None,
                    stderr_ok: bool = False) -> ChapterRun:
    """Execute one chapter notebook with papermill into ``out_dir`` (results go there too).

    ``seed`` replaces the chapter's ``seed`` parameter (0 in every chapter; the results regression's
    calibration runs another). A stderr output fails the chapter (:class:`ChapterStderr`) unless
    ``stderr_ok``: for runs whose numbers matter and whose pages nobody reads (the regression's calibration
    and planted changes).
    """
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / nb.name
    timings = out_dir / f"{nb.stem}.timing.json"
    for stale in (out_dir / f"{nb.stem}.results.json", timings):
        stale.unlink(missing_ok=True)  # a failed re-run must not leave the old numbers (or times) behind
    t0, c0 = time.perf_counter(), _cpu_seconds()
    params = chapter_params(nb.stem, profile, params_dir, tiny)
    if seed is not None:
        params["seed"] = seed
    pm.execute_notebook(
        str(nb), str(out), parameters=params,
        kernel_name=KERNEL_NAME, cwd=str(nb.parent), progress_bar=False, log_output=log_output,
    )
    hide_injected_parameters(out)
    stderr = stderr_outputs(out)
    if stderr and not stderr_ok:
        raise ChapterStderr(f"{nb.stem} shows the reader {len(stderr)} stderr output(s) (warnings, progress bars); "
                            "fix their cause: " + "; ".join(f"cell {i} ({cid}): {line}" for i, cid, line in stderr))
    report = load_report(timings)  # written by the kernel after each cell (setup_chapter)
    return ChapterRun(nb.stem, out, time.perf_counter() - t0, _cpu_seconds() - c0,
                      report["phases"] if report else None)


class ChapterStderr(RuntimeError):
    """An executed chapter holds a stderr output that the rendered book would show (a warning, a progress bar)."""


REMOVED = ("remove-output", "remove-cell")  # Jupyter Book tags under which a cell's output is not rendered


def stderr_outputs(path: str | Path) -> list[tuple[int, str, str]]:
    """(cell index, cell id, first line) of every stderr stream output the rendered chapter at ``path`` shows."""
    import json

    nb = json.loads(Path(path).read_text())
    out = []
    for i, c in enumerate(nb["cells"]):
        if set(c.get("metadata", {}).get("tags", [])) & set(REMOVED):
            continue
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stderr":
                text = "".join(o.get("text", "")).strip()
                out.append((i, c.get("id", "?"), (text.splitlines() or [""])[0][:200]))
    return out


HIDE = "hide-input"  # Jupyter Book: the code folds behind a toggle, its output stays in the reader's path


def hide_injected_parameters(path: Path) -> None:
    """Fold papermill's injected-parameters cell like the chapter's own parameters cell (never delete it)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    changed = False
    for c in nb.cells:
        tags = c.metadata.get("tags", [])
        if "injected-parameters" in tags and HIDE not in tags:
            c.metadata["tags"] = [*tags, HIDE]
            changed = True
    if changed:
        nbformat.write(nb, path)


class ChapterFailed(RuntimeError):
    """One or more chapters raised; their partly executed notebooks are in the output folder."""


def execute_chapters(profile: str, out_dir: str | Path = BOOK_DIR, only: list[str] | None = None,
                     notebooks_dir: Path = NOTEBOOKS_DIR, params_dir: Path = PARAMS_DIR,
                     log_output: bool = False, keep_going: bool = False, tiny: bool = False,
                     seed: int | None = None, stderr_ok: bool = False) -> list[ChapterRun]:
    """Execute the chapters in order under ``profile`` (``seed``: see :func:`execute_chapter`); the kernel sees
    ``DCGAN_RESULTS_DIR=out_dir`` (and ``DCGAN_TINY=1`` with ``tiny``: :func:`dcgan.config.tiny`) and
    ``DCGAN_PROGRESS=0`` (no progress bars, :mod:`dcgan.progress`). A chapter whose output shows the reader a
    stderr stream fails (:class:`ChapterStderr`, :func:`stderr_outputs`) unless ``stderr_ok``.

    A failing chapter stops the run (:class:`ChapterFailed`), unless ``keep_going``: then
    the others still run and :class:`ChapterFailed` is raised by :func:`run_book` at the end.
    """
    out_dir = Path(out_dir).resolve()
    nbs = chapter_notebooks(only, notebooks_dir)
    if not nbs:
        raise FileNotFoundError(f"no chapter notebooks (NN_name.ipynb) in {notebooks_dir}")
    os.environ["DCGAN_RESULTS_DIR"] = str(out_dir)  # inherited by the papermill kernels
    from .config import TINY_ENV

    check_tiny(profile, tiny)  # before anything runs
    # the flag alone decides what the kernels see (a stray variable never shrinks a real run), and only while they
    # run: this process's own presets keep their scale afterwards
    before = {k: os.environ.pop(k, None) for k in (TINY_ENV, PROGRESS_ENV)}
    if tiny:
        os.environ[TINY_ENV] = "1"
    os.environ[PROGRESS_ENV] = "0"  # no progress bars in the kernels: they would be stderr in the rendered chapters
    try:
        return _execute_each(nbs, out_dir, profile, params_dir, log_output, keep_going, tiny, seed, stderr_ok)
    finally:
        for k, v in before.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


def _execute_each(nbs: list[Path], out_dir: Path, profile: str, params_dir: Path, log_output: bool, keep_going: bool,
                  tiny: bool, seed: int | None = None, stderr_ok: bool = False) -> list[ChapterRun]:
    # The `python3` kernel must be this environment's Python, even if the user registered another one.
    venv_kernels = str(Path(sys.prefix) / "share" / "jupyter")
    if venv_kernels not in os.environ.get("JUPYTER_PATH", "").split(os.pathsep):
        os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (venv_kernels, os.environ.get("JUPYTER_PATH")) if p)
    runs, failed = [], []
    for nb in nbs:
        print(f"[dcgan book] {nb.stem} ({profile}) ...", flush=True)
        t0 = time.perf_counter()
        try:
            run = execute_chapter(nb, out_dir, profile, params_dir, log_output, tiny, seed, stderr_ok)
        except Exception as e:  # papermill's PapermillExecutionError names the cell and the exception
            print(f"[dcgan book] {nb.stem} FAILED after {time.perf_counter() - t0:.1f} s: {e}", flush=True)
            failed.append(nb.stem)
            if not keep_going:
                raise ChapterFailed(f"chapter {nb.stem} failed under profile {profile!r}; the partly executed "
                                    f"notebook is {out_dir / nb.name}") from e
            continue
        print(f"[dcgan book] {nb.stem} done in {run.seconds:.1f} s -> {run.output}", flush=True)
        runs.append(run)
    if failed:
        raise ChapterFailed(f"chapters {failed} failed under profile {profile!r}; see their notebooks in {out_dir}",
                            runs)
    return runs


# ---------------------------------------------------------------- building the book

def _toc_files(node) -> list[str]:
    """Every ``file:`` / ``root:`` entry of a jb-book ``_toc.yml``, in order."""
    out: list[str] = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                out.append(node[key])
        for v in node.values():
            if isinstance(v, (list, dict)):
                out.extend(_toc_files(v))
    elif isinstance(node, list):
        for v in node:
            out.extend(_toc_files(v))
    return out


def _prune_toc(node, keep: set[str]):
    """The toc without ``file:`` entries outside ``keep`` (and without parts left empty)."""
    if isinstance(node, list):
        items = [_prune_toc(v, keep) for v in node]
        return [v for v in items if v is not None]
    if isinstance(node, dict):
        if "file" in node and node["file"] not in keep:
            return None
        new = {}
        for k, v in node.items():
            new[k] = _prune_toc(v, keep) if isinstance(v, (list, dict)) else v
        for k in ("chapters", "sections", "parts"):
            if k in new and not new[k]:
                if "file" not in new and "root" not in new:
                    return None
                del new[k]
        return new
    return node


def stage_book(executed_dir: Path, stage: Path) -> Path:
    """Copy the book project into ``stage``: config, bib, hand-written pages, executed chapters.

    Chapters listed in ``_toc.yml`` that were not executed into ``executed_dir``
    are left out of the staged toc (with a note), so a partial run builds.
    """
    import yaml

    executed_dir = Path(executed_dir).resolve()
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "book").mkdir(parents=True)
    for name in ("_config.yml", "references.bib"):
        shutil.copy2(REPO_ROOT / name, stage / name)
    generated = {".ipynb", ".json"}
    for p in BOOK_DIR.iterdir():  # hand-written pages and their figures
        if p.is_file() and p.suffix not in generated and p.name != "results.md":
            shutil.copy2(p, stage / "book" / p.name)
        elif p.is_dir() and not p.name.startswith((".", "_")):
            shutil.copytree(p, stage / "book" / p.name)
    for p in list(executed_dir.glob("[0-9][0-9]_*.ipynb")) + [executed_dir / "results.md"]:
        if p.exists():
            shutil.copy2(p, stage / "book" / p.name)
    if (executed_dir / "_generated").is_dir():  # the results page's figures (dcgan.report.write_results_page)
        shutil.copytree(executed_dir / "_generated", stage / "book" / "_generated", dirs_exist_ok=True)
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    present = {f for f in _toc_files(toc) if any((stage / f).with_suffix(s).exists() for s in (".md", ".ipynb"))}
    missing = [f for f in _toc_files(toc) if f not in present]
    if missing:
        print(f"[dcgan book] not in this build (not executed into {executed_dir}): {', '.join(missing)}")
    listed = set(_toc_files(toc))
    for nb in sorted((stage / "book").glob("*.ipynb")):
        if f"book/{nb.stem}" not in listed:
            print(f"[dcgan book] {nb.name} is not in _toc.yml: add `- file: book/{nb.stem}` to show it")
            nb.unlink()
    (stage / "_toc.yml").write_text(yaml.safe_dump(_prune_toc(toc, present), sort_keys=False))
    # the paper page links each claim to the chapter that tests it: only to the chapters in this build
    from .report import write_paper_page

    if (stage / "book" / "paper.md").exists():
        write_paper_page(stage / "book" / "paper.md", stage / "book" / "paper.md",
                         {p.stem for p in (stage / "book").glob("[0-9][0-9]_*.ipynb")})
    return stage


def build_book(executed_dir: str | Path = BOOK_DIR, output_root: str | Path | None = None) -> Path:
    """``jupyter-book build -W -n --keep-going`` of the executed chapters; returns the html folder.

    The html lands in ``<output_root>/_build/html``; ``output_root`` defaults
    to the repository for ``book/`` and to ``executed_dir`` otherwise.
    """
    executed_dir = Path(executed_dir).resolve()
    if output_root is None:
        output_root = REPO_ROOT if executed_dir == BOOK_DIR.resolve() else executed_dir
    output_root = Path(output_root).resolve()
    stage = stage_book(executed_dir, output_root / "_build" / "_src")
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(stage), "--path-output", str(output_root),
           "-W", "-n", "--keep-going"]
    print("[dcgan book] " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    html = output_root / "_build" / "html"
    print(f"[dcgan book] built {html / 'index.html'}")
    return html


def run_book(profile: str = "book", only: list[str] | None = None, out_dir: str | Path | None = None,
             build: bool = True, execute: bool = True, log_output: bool = False, keep_going: bool = False,
             tiny: bool = False) -> Path:
    """Execute the chapters (unless ``execute`` is False), write the results page, build the book.

    With ``keep_going`` a failing chapter does not stop the others or the build; the
    failure is raised at the end.
    """
    from .report import write_results_page

    out_dir = Path(out_dir or BOOK_DIR).resolve()
    t0 = time.perf_counter()
    failure = None
    try:
        runs = execute_chapters(profile, out_dir, only, log_output=log_output, keep_going=keep_going,
                                tiny=tiny) if execute else []
    except ChapterFailed as e:
        if not keep_going or len(e.args) < 2:
            raise
        failure, runs = e, e.args[1]
    page = write_results_page(out_dir, out_dir / "results.md")
    if runs:
        from .provenance import hardware

        table = (f"[dcgan book] {profile} profile on {hardware()}, {time.strftime('%Y-%m-%d %H:%M')}: wall and CPU "
                 f"seconds per chapter\n{timing_table(runs, time.perf_counter() - t0)}")
        print(table + f"\n  results page: {page}", flush=True)
        with open(out_dir / "timings.log", "a") as log:  # the book's log: one table per run
            log.write(table + "\n\n")
    if build:
        build_book(out_dir)
    if failure is not None:
        raise failure
    return out_dir


class StepTimer:
    """Wall and CPU time of a chapter's heavy steps; CPU / wall is how many cores a step kept busy.

    ``with timer("K-means fit"): ...`` prints one line per step as it ends; :meth:`table` lists
    them all. CPU time is the process's (every thread), so 2.0 on 2 cores means both were busy.
    """

    def __init__(self, verbose: bool = True):
        self.verbose = verbose
        self.steps: list[tuple[str, float, float]] = []

    def __call__(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def step():
            w, c = time.perf_counter(), time.process_time()
            try:
                yield
            finally:
                wall, cpu = time.perf_counter() - w, time.process_time() - c
                self.steps.append((name, wall, cpu))
                if self.verbose:
                    print(f"[time] {name}: {wall:.1f}s wall, {cpu:.1f}s CPU ({cpu / max(wall, 1e-9):.1f} cores)",
                          flush=True)

        return step()

    @property
    def wall(self) -> float:
        return sum(s[1] for s in self.steps)

    @property
    def cpu(self) -> float:
        return sum(s[2] for s in self.steps)

    def table(self) -> str:
        k = max([34] + [len(n) for n, _, _ in self.steps])
        rows = [f"{'step':{k}s} {'wall s':>7s} {'CPU s':>7s} {'cores':>5s}"]
        rows += [f"{n:{k}s} {w:7.1f} {c:7.1f} {c / max(w, 1e-9):5.1f}" for n, w, c in self.steps]
        rows.append(f"{'total':{k}s} {self.wall:7.1f} {self.cpu:7.1f} {self.cpu / max(self.wall, 1e-9):5.1f}")
        return "\n".join(rows)
