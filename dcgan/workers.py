"""Several training runs at a time, one worker process each (infrastructure of :func:`dcgan.train.train_many`).

The book's small nets (§4's architecture at 32x32, widths 16-32) are bound by per-op overhead, not
FLOPs, so two one-thread processes on two cores train more images a second than one two-thread
process (``bench/train_throughput.py``). Each worker is a fresh interpreter that calls
:func:`dcgan.train.train` on its config, so a run is what ``train`` makes of it (same cache key).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .config import TrainConfig, run_name
from .progress import bar as progress_bar
from .timing import load_report, merge_workers

__all__ = ["train_in_workers"]

# argv: the config as JSON, the runs root, threads, where to write the worker's phase times (dcgan.timing)
_WORKER = ("import json, sys, torch; from dcgan.train import TrainConfig, train; from dcgan import timing; "
           "torch.set_num_threads(int(sys.argv[3])); "
           "train(TrainConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2], progress=False); "
           "timing.write_report(sys.argv[4])")


def train_in_workers(todo: list[TrainConfig], root: Path, workers: int, threads: int, progress: bool) -> None:
    """Train ``todo`` into ``root``, ``workers`` processes at a time with ``threads // workers`` threads each.

    An interrupted caller (Ctrl-C, a killed kernel) kills its workers: their runs resume next time. A
    worker's stderr goes to a file, not a pipe (a chatty worker can never block on it); the first
    failure's last line is raised as a ``RuntimeError`` once every run has ended. Each worker's phase times
    (:mod:`dcgan.timing`) are added to this process's, under its innermost open phase.
    """
    per = str(max(1, threads // workers))
    env = {**os.environ, "OMP_NUM_THREADS": per}
    queue, active, failed = list(todo), [], []
    reports, lifetimes, t0 = [], 0.0, time.perf_counter()
    bar = progress_bar(total=len(todo), desc=f"training ({workers} processes)", disable=not progress)
    with tempfile.TemporaryDirectory() as logs, contextlib.ExitStack() as stop:
        # an interrupted caller (Ctrl-C, a killed kernel) stops its workers: their runs resume next time
        stop.callback(lambda: [p.kill() for _, p, _, _ in active if p.poll() is None])
        while queue or active:
            while queue and len(active) < workers:
                c = queue.pop(0)
                log = Path(logs) / f"{run_name(c)}.err"
                with open(log, "w") as err:  # a file, not a pipe: a chatty worker can never block on it
                    p = subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(c.to_dict()), str(root), per,
                                          str(log.with_suffix(".timing.json"))],
                                         env=env, stdout=subprocess.DEVNULL, stderr=err)
                active.append((c, p, log, time.perf_counter()))  # its lifetime shares out the wall (timing)
            done = [a for a in active if a[1].poll() is not None]
            if not done:
                time.sleep(0.2)
            for c, p, log, started in done:
                active.remove((c, p, log, started))
                lifetimes += time.perf_counter() - started
                rep = load_report(log.with_suffix(".timing.json"))
                if rep is not None:
                    reports.append(rep)
                if p.returncode:
                    tail = log.read_text(errors="replace").strip().splitlines()[-1:]
                    failed.append((c, tail[0] if tail else f"exit status {p.returncode}"))
                bar.update()
        merge_workers(reports, time.perf_counter() - t0, lifetimes)
    bar.close()
    if failed:
        c, why = failed[0]
        raise RuntimeError(f"{len(failed)} of {len(todo)} runs failed in their worker process; the first, "
                           f"{run_name(c)}: {why}")
