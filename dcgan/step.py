"""One DCGAN training step (paper §4 "Training details"), as pytorch/examples' ``dcgan/main.py`` takes it.

:func:`adam` is §4's optimiser (Adam, lr 2e-4, beta1 0.5); :func:`gan_step` updates D on a real and a
fake batch (BCE on D's logits, the sigmoid of §3 inside the loss, :func:`_bce`), then G with the
non-saturating loss ``-log D(G(z))``, and returns the step's losses, D(x) and D(G(z)) before and after
D's update: what the training curves of chapter 02 plot. :mod:`dcgan.train` runs it in a loop.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .config import TrainConfig
from .precision import autocast

__all__ = ["adam", "gan_step"]


def adam(net: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """§4's optimiser for one net: Adam(lr, (beta1, beta2)), one fused kernel for all parameters.

    The default Adam on CPU loops over parameters in Python; the fused kernel
    (CPU and CUDA) does the same update in one call, which matters for the
    book's small nets, whose steps are bound by overhead rather than FLOPs.
    """
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in net.parameters())
    return torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused or None)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """BCE on D's logits against a constant label, in fp32 (the sigmoid of §3 lives here)."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def gan_step(
    G: nn.Module,
    D: nn.Module,
    optG: torch.optim.Optimizer,
    optD: torch.optim.Optimizer,
    real: torch.Tensor,
    z: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    nets: tuple[nn.Module, nn.Module] | None = None,
    freeze_d: bool = True,
) -> dict:
    """One DCGAN step as in pytorch/examples: D on a real and a fake batch, then G (non-saturating).

    ``nets`` are the wrapped (DDP/compiled) G and D to run; ``G``/``D`` the
    plain modules. An optimizer only steps on a finite loss, so a NaN leaves
    the weights as they were. Returns the step's losses, D(x), D(G(z)) before
    (``d_g_z``) and after (``d_g_z2``) D's update. ``precision`` is applied with
    :func:`dcgan.precision.autocast` (pass a resolved one, :func:`resolve_precision`).
    """
    Gt, Dt = nets or (G, D)
    device = torch.device(device)
    cond = y is not None
    # --- D step: maximise log D(x) + log(1 - D(G(z)))
    optD.zero_grad(set_to_none=True)
    with autocast(precision, device):
        out_real = Dt(real, y) if cond else Dt(real)
        loss_real = _bce(out_real, 1.0)
    loss_real.backward()
    with autocast(precision, device):
        fake = Gt(z, y) if cond else Gt(z)
        out_fake = Dt(fake.detach(), y) if cond else Dt(fake.detach())
        loss_fake = _bce(out_fake, 0.0)
    loss_fake.backward()
    ld = float((loss_real + loss_fake).detach())
    lg, d_g_z2 = float("nan"), float("nan")
    if math.isfinite(ld):
        optD.step()
        # --- G step: maximise log D(G(z)) under the updated D
        optG.zero_grad(set_to_none=True)
        if freeze_d:  # D's weight grads are not needed here (DDP expects every grad: keep them there)
            D.requires_grad_(False)
        try:
            with autocast(precision, device):
                out_g = Dt(fake, y) if cond else Dt(fake)
                loss_g = _bce(out_g, 1.0)
            loss_g.backward()
        finally:
            D.requires_grad_(True)
        lg = float(loss_g.detach())
        d_g_z2 = float(torch.sigmoid(out_g.detach().float()).mean())
        if math.isfinite(lg):
            optG.step()
    return {
        "loss_d": ld,
        "loss_g": lg,
        "d_x": float(torch.sigmoid(out_real.detach().float()).mean()),
        "d_g_z": float(torch.sigmoid(out_fake.detach().float()).mean()),
        "d_g_z2": d_g_z2,
    }
