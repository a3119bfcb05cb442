"""Provenance printed at the top of every executed chapter: versions, hardware, commit, profile, seed."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache

import torch

from .paths import REPO_ROOT
from .precision import default_device


def cpu_kind() -> str:
    """Which kernels this CPU gets: 'AMX', 'AVX-512 BF16, no AMX', 'AVX-512, no bf16', 'AVX2' (x86) or the machine.

    The kind decides the rounding of bf16/oneDNN kernels, hence every number trained on it (dcgan.regression).
    """
    flags: set[str] = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    for flag, kind in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16, no AMX"), ("avx512f", "AVX-512, no bf16"),
                       ("avx2", "AVX2")):
        if flag in flags:
            return kind
    return platform.machine() or "unknown"


@lru_cache(maxsize=1)
def hardware() -> str:
    """The device computations run on, e.g. 'NVIDIA H100 80GB HBM3' or 'AMD EPYC (1 threads; AVX-512 BF16, no AMX)'."""
    if default_device().type == "cuda":  # where the library puts its work (dcgan.precision)
        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads; {cpu_kind()})"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(profile: str, seed: int | None) -> dict:
    import numpy, sklearn, torchvision  # noqa: E401

    return {
        "profile": profile,
        "seed": seed,
        "hardware": hardware(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "git_commit": git_commit(),
    }


def format_provenance(p: dict) -> str:
    return "\n".join(f"{k:>13}: {v}" for k, v in p.items())
