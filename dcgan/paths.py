"""Where data, trained runs and book outputs live (overridable by environment)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """Root of all data sets: ``$DCGAN_DATA`` or ``<repo>/data``."""
    return Path(os.environ.get("DCGAN_DATA", REPO_ROOT / "data")).expanduser()


def runs_root() -> Path:
    """Root of the trained-run cache: ``$DCGAN_RUNS`` or ``<repo>/runs``."""
    return Path(os.environ.get("DCGAN_RUNS", REPO_ROOT / "runs")).expanduser()
