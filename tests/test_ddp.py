"""Two-process DDP training on CPU (gloo) launched by torchrun, as a user would (paper §4 at scale)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from test_train import tiny_cfg, write_fashion


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    write_fashion(tmp_path / "data")
    cfg = tiny_cfg(epochs=1, deterministic=False)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    env = dict(os.environ, DCGAN_DATA=str(tmp_path / "data"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dcgan", "train", "--config", str(tmp_path / "cfg.json"), "--outf", str(tmp_path / "runs"),
           "--no-progress"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=170)
    assert p.returncode == 0, p.stderr[-3000:]
    runs = [d for d in (tmp_path / "runs").iterdir() if not d.name.startswith(".")]
    assert len(runs) == 1 and p.stdout.strip().splitlines()[-1] == str(runs[0])  # printed once, by rank 0
    info = json.loads((runs[0] / "run.json").read_text())
    assert info["world_size"] == 2 and info["ddp_params_in_sync"]
    assert info["steps"] == 128 // 32  # the global batch is split over the ranks
    metrics = (runs[0] / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 4  # rank 0 logs alone
    assert not list((tmp_path / "runs" / ".partial").iterdir())
