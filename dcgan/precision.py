"""The precision-and-device policy every module follows (infrastructure: no paper section).

The paper trained in fp32 on a GPU; we train and measure on CPUs as well, where bf16
autocast makes the book's convolutions about three times faster on CPUs with native
bf16 kernels (AVX-512 BF16 / AMX) and costs nothing in our results' precision (the
losses, BatchNorm statistics and the metrics' reductions stay in fp32). One policy,
here, decides for the whole library:

* a precision is one of :data:`PRECISIONS`: ``"auto"``, ``"bf16"`` or ``"fp32"``;
* ``"auto"`` resolves to ``"bf16"`` where the device has native bf16
  (:func:`bf16_supported`) and to ``"fp32"`` elsewhere, and to ``"fp32"`` whenever a
  bit-identical result is asked for (``deterministic=True``);
* :func:`autocast` is the one context manager that applies it: bf16 autocast on
  the device's type, or no context at all for fp32;
* :func:`default_device` is where work goes when the caller names no device: the
  GPU when there is one, else the CPU.

Callers that want a fixed precision whatever the hardware (the metrics' domain
classifier: its features, hence every FID the book records, must not depend on the
machine) pass ``"bf16"`` or ``"fp32"`` instead of ``"auto"``.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Literal

import torch
from torch import nn

__all__ = [
    "PRECISIONS",
    "Precision",
    "default_device",
    "device_of",
    "cpu_supports_bf16",
    "bf16_supported",
    "bf16_available",
    "check_precision",
    "resolve_precision",
    "autocast",
]

PRECISIONS = ("auto", "bf16", "fp32")
Precision = Literal["auto", "bf16", "fp32"]


def default_device(index: int | None = None) -> torch.device:
    """The GPU when there is one (``cuda:index`` with an index), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", index) if index is not None else torch.device("cuda")
    return torch.device("cpu")


def device_of(net: nn.Module) -> torch.device:
    """The device a module's parameters live on (the CPU for a module without parameters)."""
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 / AMX).

    Without them bf16 autocast still works on the CPU but is emulated, and slower than fp32.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN, or without the op
        return False


def bf16_supported(device: str | torch.device | None = None) -> bool:
    """True when ``device`` (default: :func:`default_device`) runs bf16 natively: where ``"auto"`` means bf16."""
    device = default_device() if device is None else torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_supports_bf16()
    return False  # other backends: fp32, the safe choice until measured there


def check_precision(precision: str) -> str:
    """``precision`` itself when it is one of :data:`PRECISIONS`, else a ValueError naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    return precision


def resolve_precision(precision: str, device: str | torch.device | None = None,
                      deterministic: bool = False) -> Literal["bf16", "fp32"]:
    """``"bf16"`` or ``"fp32"``: what ``precision`` means on ``device`` (default: :func:`default_device`).

    An explicit ``"bf16"``/``"fp32"`` is kept as it is. ``"auto"`` is fp32 when ``deterministic``
    (bit-identical resumes are promised in fp32 only), else bf16 where :func:`bf16_supported`.
    """
    check_precision(precision)
    if precision != "auto":
        return precision  # type: ignore[return-value]
    if deterministic:
        return "fp32"
    return "bf16" if bf16_supported(device) else "fp32"


def autocast(precision: str, device: str | torch.device | None = None) -> ContextManager:
    """bf16 autocast on ``device``'s type when ``precision`` resolves to bf16 there, else a no-op context.

    The no-op for fp32 is :func:`contextlib.nullcontext`, so an fp32 region costs nothing per step
    (and does not switch off an autocast region around it).
    """
    device = default_device() if device is None else torch.device(device)
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bf16_available() -> bool:
    """True when the default device (the GPU if any, else the CPU) runs bf16 natively (:func:`bf16_supported`)."""
    return bf16_supported(default_device())
