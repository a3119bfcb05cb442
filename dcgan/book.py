"""Chapter set-up and the book runner (papermill profiles -> executed notebooks -> Jupyter Book)."""

from __future__ import annotations

import random

import numpy as np
import torch

from .provenance import format_provenance, provenance
from .results import ResultsRecorder

PROFILES = ("smoke", "book", "paper")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_chapter(chapter: str, profile: str, seed: int = 0) -> ResultsRecorder:
    """Seed everything, print the provenance block and return the chapter's results recorder."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    seed_everything(seed)
    print(format_provenance({"chapter": chapter, **provenance(profile, seed)}))
    return ResultsRecorder(chapter, profile, seed)
