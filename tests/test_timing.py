"""Tests for dcgan.timing: phases accumulate, nesting counts each second once, workers' phases reach the parent,
the runner's table shows the breakdown. Clocks are fakes wherever a number is checked: no test depends on how
fast this machine is."""

from __future__ import annotations

import json
import re

import pytest
from test_train import env, tiny_cfg  # noqa: F401 (env: test_train's tiny Fashion-MNIST set and an empty run cache)

from dcgan import book, timing
from dcgan import train as T


class FakeClock:
    """Wall and CPU clocks that move only when told: ``tick(wall, cpu)``."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def tick(self, wall: float, cpu: float | None = None) -> None:
        self.wall += wall
        self.cpu += wall if cpu is None else cpu


@pytest.fixture
def reg():
    c = FakeClock()
    r = timing.Registry(clock=lambda: c.wall, cpu=lambda: c.cpu)
    r.fake = c
    return r


@pytest.fixture
def clean_registry():
    """The process-wide registry, empty before and after (library code records into it)."""
    timing.reset()
    yield timing.REGISTRY
    timing.reset()


def _rows(reg) -> dict[str, dict]:
    return {r["path"]: r for r in reg.report()}


def test_phases_accumulate_over_calls(reg):
    for wall, cpu in ((1.0, 2.0), (3.0, 5.0)):
        with reg.phase("steps"):
            reg.fake.tick(wall, cpu)
    reg.fake.tick(7.0)  # outside any phase: nowhere
    with reg.phase("fid"):
        reg.fake.tick(0.5, 0.25)
    rows = _rows(reg)
    assert list(rows) == ["steps", "fid"]  # first-entered order
    assert (rows["steps"]["wall"], rows["steps"]["cpu"], rows["steps"]["calls"]) == (4.0, 7.0, 2)
    assert (rows["fid"]["wall"], rows["fid"]["cpu"], rows["fid"]["calls"]) == (0.5, 0.25, 1)


def test_nested_phases_count_each_second_once(reg):
    """A phase keeps its own time; the time of the phases inside it is theirs only, and totals add them back."""
    with reg.phase("training"):
        reg.fake.tick(1.0)
        for _ in range(2):
            with reg.phase("steps"):
                reg.fake.tick(3.0, 6.0)
        with reg.phase("snapshots"):
            reg.fake.tick(2.0)
            with reg.phase("feature extraction"):
                reg.fake.tick(1.0)
    rows = _rows(reg)
    own = {p: (r["wall"], r["cpu"]) for p, r in rows.items()}
    assert own == {"training/steps": (6.0, 12.0), "training/snapshots/feature extraction": (1.0, 1.0),
                   "training/snapshots": (2.0, 2.0), "training": (1.0, 1.0)}
    assert sum(w for w, _ in own.values()) == reg.fake.wall  # every second once
    tot = timing.totals(reg.report())
    assert tot["training"] == (10.0, 16.0) and tot["training/snapshots"] == (3.0, 3.0)


def test_reentering_the_innermost_phase_opens_no_level(reg):
    """train_many -> train: both "training", one level; a name further up the stack does nest (a real cycle)."""
    with reg.phase("training"):
        with reg.phase("training"):
            with reg.phase("steps"):
                reg.fake.tick(2.0)
            with reg.phase("training"):
                reg.fake.tick(1.0)
    assert set(_rows(reg)) == {"training", "training/steps"}
    assert _rows(reg)["training"]["calls"] == 1 and _rows(reg)["training"]["wall"] == 1.0


def test_a_phase_that_raises_is_still_counted_and_closed(reg):
    with pytest.raises(KeyError):
        with reg.phase("outer"):
            reg.fake.tick(1.0)
            with reg.phase("inner"):
                reg.fake.tick(2.0)
                raise KeyError("x")
    assert not reg.stack and _rows(reg)["outer/inner"]["wall"] == 2.0 and _rows(reg)["outer"]["wall"] == 1.0


def test_time_measured_elsewhere_is_added_as_a_phase(reg):
    with reg.phase("chapter"):
        reg.fake.tick(5.0)
        reg.add("start-up", 2.0, 1.0)  # e.g. measured before the registry existed: not part of these 5 s
    rows = _rows(reg)
    assert (rows["chapter/start-up"]["wall"], rows["chapter/start-up"]["cpu"]) == (2.0, 1.0)
    assert rows["chapter"]["wall"] == 3.0
    with pytest.raises(ValueError, match="phase name"):
        reg.add("a/b", 1.0, 1.0)


def test_phase_works_as_a_decorator(clean_registry):
    @timing.phase("nearest neighbours")  # as chapter 02 times a function it defines
    def f(x: int) -> int:
        return x + 1

    @timing.phased("outer")
    def g() -> int:
        return f(1) + f(2)

    assert g() == 5
    rows = {r["path"]: r for r in timing.report()["phases"]}
    assert rows["outer/nearest neighbours"]["calls"] == 2 and rows["outer"]["calls"] == 1


def test_bad_names_and_reset_while_open_are_refused(reg):
    for bad in ("", "a/b"):
        with pytest.raises(ValueError, match="phase name"):
            with reg.phase(bad):
                pass
    with reg.phase("open"):
        with pytest.raises(RuntimeError, match="still open"):
            reg.reset()
    reg.reset()
    assert reg.report() == []


def _worker_report(steps: float, snaps: float, own: float = 0.5) -> dict:
    return {"phases": [{"path": "training", "wall": own, "cpu": own, "calls": 1, "workers": 0},
                       {"path": "training/steps", "wall": steps, "cpu": steps, "calls": 4, "workers": 0},
                       {"path": "training/snapshots and checkpoints", "wall": snaps, "cpu": snaps, "calls": 1,
                        "workers": 0}]}


def test_worker_phases_reach_the_parent_with_its_wall_shared_out(reg):
    """Two workers, 10 s each, side by side for the 10 s the parent waited: their phases get the parent's 10 s in
    proportion to their process-seconds, their CPU as it is; the waiting phase's own CPU (which held the reaped
    workers' CPU through RUSAGE_CHILDREN) loses what the workers' phases took."""
    with reg.phase("training"):
        reg.fake.tick(10.0, 19.5)  # the parent's own 0.5 s CPU + the workers' 2 x 9.5 s in phases
        reg.merge_workers([_worker_report(8.0, 1.5), _worker_report(8.0, 1.5)], waited_wall=10.0,
                          process_seconds=20.0)
    rows = _rows(reg)
    assert rows["training/steps"]["wall"] == 8.0 and rows["training/steps"]["cpu"] == 16.0
    assert rows["training/steps"]["calls"] == 8 and rows["training/steps"]["workers"] == 2
    assert rows["training/snapshots and checkpoints"]["wall"] == 1.5
    assert rows["training"]["wall"] == pytest.approx(0.5) and rows["training"]["cpu"] == pytest.approx(0.5)
    assert timing.totals(reg.report())["training"] == pytest.approx((10.0, 19.5))  # nothing counted twice
    with pytest.raises(ValueError, match="process_seconds"):
        reg.merge_workers([_worker_report(1, 1)], 1.0, 0.0)


def test_train_in_this_process_records_steps_and_snapshots(env, clean_registry):
    run = T.train(tiny_cfg(epochs=2), progress=False)
    rows = {r["path"]: r for r in timing.report()["phases"]}
    assert {"training", "training/set-up", "training/steps", "training/snapshots and checkpoints"} <= set(rows)
    assert rows["training/steps"]["calls"] == run.steps and rows["training"]["calls"] == 1
    assert rows["training/snapshots and checkpoints"]["calls"] >= run.epochs_done  # each epoch's end, the finish
    timing.reset()
    T.train(tiny_cfg(epochs=2), progress=False)  # cached: loading it is all the training there is
    assert [r["path"] for r in timing.report()["phases"]] == ["training"]


def test_worker_processes_report_their_phases_to_the_parent(env, clean_registry):
    cfgs = [tiny_cfg(epochs=1, seed=1), tiny_cfg(epochs=1, seed=0)]
    runs = T.train_many(cfgs, progress=False, workers=2)
    rows = {r["path"]: r for r in timing.report()["phases"]}
    steps = rows["training/steps"]
    assert steps["workers"] == 2 and steps["calls"] == sum(r.steps for r in runs)
    assert rows["training/set-up"]["workers"] == 2
    assert "training/training" not in rows  # the workers' "training" is the parent's
    assert all(r["wall"] >= 0 for r in rows.values())


def _parse(line: str) -> tuple[int, str, str, str, str, str]:
    """(indent, label, wall, CPU, cores, mark) of one row of a phase table."""
    m = re.match(r"^( *)(.+?) +([\d.]+) +([\d.]+) +([\d.]+)(?: (<))?$", line)
    assert m, f"not a table row: {line!r}"
    return len(m[1]), m[2], m[3], m[4], m[5], m[6] or ""


def test_phase_table_shows_the_tree_and_marks_idle_cores():
    rows = [{"path": "training", "wall": 1.0, "cpu": 1.0, "calls": 1, "workers": 0},
            {"path": "training/steps", "wall": 8.0, "cpu": 15.6, "calls": 8, "workers": 2},
            {"path": "gate: snapshot selection", "wall": 4.0, "cpu": 4.0, "calls": 1, "workers": 0},
            {"path": "gate: snapshot selection/feature extraction", "wall": 2.0, "cpu": 3.9, "calls": 3, "workers": 0}]
    table = timing.phase_table(rows, chapter_wall=20.0, chapter_cpu=30.0)
    parsed = [_parse(ln) for ln in table.splitlines()[1:]]
    assert [p[1] for p in parsed] == ["training", "(own)", "steps (2 proc)", "gate: snapshot selection", "(own)",
                                      "feature extraction", "outside any phase"]
    by = {p[1]: p for p in parsed}
    assert by["training"][2:] == ("9.0", "16.6", "1.84", "")  # its total: own 1 s + the steps' 8 s
    assert by["gate: snapshot selection"][2:] == ("6.0", "7.9", "1.32", "<")  # below 1.8 cores: marked
    assert by["feature extraction"][5] == "" and by["steps (2 proc)"][5] == ""
    assert by["steps (2 proc)"][0] > by["training"][0] and by["feature extraction"][0] > by["training"][0]  # indented
    assert by["outside any phase"][2:] == ("5.0", "5.5", "1.10", "<")  # the chapter's 20 s and 30 s less the phases'
    assert timing.low_mark(1.0, 1.79) == "<" and timing.low_mark(1.0, 1.8) == "" and timing.low_mark(0.0, 0.0) == ""
    assert timing.low_mark(1.0, 3.0, threshold=4.0) == "<"


def test_runner_table_holds_each_chapters_breakdown(tmp_path):
    rows = [{"path": "training/steps", "wall": 5.0, "cpu": 9.5, "calls": 3, "workers": 0}]
    runs = [book.ChapterRun("02_training", tmp_path / "02.ipynb", 10.0, 19.0, rows),
            book.ChapterRun("03_dedup", tmp_path / "03.ipynb", 4.0, 4.0, None)]
    table = book.timing_table(runs)
    lines = table.splitlines()
    assert any(ln.split()[:1] == ["02_training"] and not ln.endswith("<") for ln in lines)  # 1.90 cores
    assert any(ln.split()[:1] == ["03_dedup"] and ln.endswith("<") for ln in lines)  # 1.00 core: marked
    assert "02_training: where its 10.0 s went" in table and "03_dedup: where" not in table
    assert any(ln.strip().startswith("steps") for ln in lines) and "outside any phase" in table
    assert "<: fewer than 1.8 cores" in table


def test_reports_round_trip_and_bad_ones_are_refused(tmp_path, clean_registry):
    with timing.phase("x"):
        pass
    p = timing.write_report(tmp_path / "a" / "c.timing.json", chapter="c")
    data = timing.load_report(p)
    assert data["chapter"] == "c" and [r["path"] for r in data["phases"]] == ["x"]
    assert timing.load_report(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="not a phase report"):
        timing.load_report(tmp_path / "bad.json")


def test_setup_chapter_writes_phases_after_every_cell(tmp_path, monkeypatch, clean_registry):
    """In a kernel (an IPython shell), every cell's end writes <chapter>.timing.json next to the results."""
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setenv("DCGAN_RESULTS_DIR", str(tmp_path))
    shell = InteractiveShell.instance()
    try:
        shell.run_cell("from dcgan.book import setup_chapter\nfrom dcgan.timing import phase\n"
                       "res = setup_chapter('07_t', 'book')")
        shell.run_cell("with phase('work'):\n    sum(range(10))")
        data = timing.load_report(tmp_path / "07_t.timing.json")
        assert data["chapter"] == "07_t"
        assert [r["path"] for r in data["phases"]] == ["kernel start and imports", "work"]
        assert data["phases"][0]["wall"] > 0 and data["phases"][0]["cpu"] > 0  # this process did start a while ago
        shell.run_cell("res = setup_chapter('07_t', 'book')")  # a second set-up: one writer, phases start over
        assert len([f for f in shell.events.callbacks["post_run_cell"] if f is shell._dcgan_timing_hook]) == 1
        assert timing.load_report(tmp_path / "07_t.timing.json")["phases"] == []
    finally:
        shell.events.unregister("post_run_cell", shell._dcgan_timing_hook)
        InteractiveShell.clear_instance()


def test_throughput_bench_covers_the_books_configs_and_every_path(capsys):
    """bench/train_throughput.py (timed on a quiet machine only): its book configurations are the presets' nets,
    and it names every path, without timing anything here."""
    import importlib.util

    from dcgan.config import preset
    from dcgan.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("train_throughput", REPO_ROOT / "bench" / "train_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.CONFIGS["ch09-cond-32x32/ngf32"][:2] == (preset("mnist-cond", "book").model, 64)
    assert bench.CONFIGS["ch08-32x32/ngf16"][0].ngf == 16 and bench.CONFIGS["ch02-grey-32x32/ngf32"][0].channels == 1
    bench.main(["--list", "--processes", "2"])
    out = capsys.readouterr().out
    assert all(name in out for name in bench.CONFIGS)
    assert "fp32, bf16, bf16+compile, bf16 x2 proc" in out and "x fp32 eager" in out
