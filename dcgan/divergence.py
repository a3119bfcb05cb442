"""When a training run has diverged (paper §4: the instability DCGAN's recipe is meant to tame; chapter 08).

Infrastructure of :mod:`dcgan.train`: a step's losses that are non-finite or exploded past
:data:`_LOSS_BLOWUP` (:func:`_check_blowup`), and a G whose output is saturated at +-1 almost
everywhere (:func:`_g_saturated`, probed before each save), end a run: :class:`TrainingDiverged`
(``nan_policy="raise"``, its message says what checkpoint is kept, :func:`_kept_note`) or a run
marked ``diverged`` (``"stop"``), so a blown-up run is never cached as a good one.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from .checkpoints import _unwrap

__all__ = ["TrainingDiverged"]


class TrainingDiverged(FloatingPointError):
    """A loss became NaN/inf or exploded, or G saturated (nan_policy="raise"); earlier checkpoints are kept."""


# A step blew up when a loss passes this. BCE on a logit l that is wrong costs about |l|, so 1e4
# means D's logits reached 1e4: its weights exploded (lr 1e6 gives 1e13 from step 2). Healthy runs
# stay below ~20 (D winning: loss_g 10-15 for a while); even lr 1 peaks near 200.
_LOSS_BLOWUP = 1e4
# G is dead when this share of its output values is exactly +-1: tanh is saturated there, its gradient
# is 0, and G cannot learn again (lr 1e6: 100%). Healthy G's on the book's data keep far fewer at +-1
# (tiny runs at lr 2e-4: 0%, lr 0.1: <2%); even binary-looking MNIST has anti-aliased edges.
_SATURATED_SHARE = 0.999


def _check_blowup(loss_d: float, loss_g: float) -> str | None:
    """Why this step's losses end the run (non-finite, or exploded past :data:`_LOSS_BLOWUP`), or None."""
    if not (math.isfinite(loss_d) and math.isfinite(loss_g)):
        return "loss became non-finite"
    if max(abs(loss_d), abs(loss_g)) > _LOSS_BLOWUP:
        return f"loss exploded past {_LOSS_BLOWUP:g} (the weights blew up)"
    return None


def _g_saturated(G: nn.Module, z: torch.Tensor, y: torch.Tensor | None, device) -> str | None:
    """Why G is dead (its output saturated at exactly +-1 almost everywhere), or None.

    Measured on the fixed noise with batch statistics, as G trains (the running statistics of an
    early G are poorly calibrated, so eval mode would mislead), without updating them: the run's
    state stays bit-identical with or without this probe.
    """
    g = _unwrap(G)
    bns = [m for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    was = g.training
    try:
        for m in bns:
            m.track_running_stats = False  # batch statistics; running ones left alone
        g.train()
        with torch.no_grad():
            x = g(z.to(device), y.to(device) if y is not None else None)
    finally:
        for m in bns:
            m.track_running_stats = True
        g.train(was)
    share = float((x.float().abs() >= 1.0).float().mean())
    if share >= _SATURATED_SHARE:
        return f"G's output saturated ({share:.1%} of its values are exactly +-1, where tanh passes no gradient)"
    return None


def _kept_note(ckpt_dir: Path) -> str:
    """What is left to resume from, said truthfully (nothing when it failed before the first checkpoint)."""
    ckpts = sorted(ckpt_dir.glob("step_*.pt")) if ckpt_dir.exists() else []
    if ckpts:
        return f"the last checkpoint before it ({ckpts[-1].name}) is kept in {ckpt_dir}"
    return "it failed before the first checkpoint, so there is none to resume from"
