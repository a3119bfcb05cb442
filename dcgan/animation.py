"""Animations for the book: samples across training (§4.1, Figure 2-3) and walks in the latent space (§6.1, Figure 4).

A sequence of image grids becomes a matplotlib animation, rendered as an HTML5/JavaScript player
(``to_jshtml``, as the PyTorch DCGAN tutorial shows its training progress), so the rendered book
plays it without a video codec. The chapters keep the static grids next to it for print.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["every_kth", "image_frames", "walk_frames", "animate", "to_html"]


def _hwc(frame) -> np.ndarray:
    """An image as an (H, W, C) or (H, W) float array in [0, 1]: from a (C, H, W) tensor in [-1, 1] or an
    (H, W[, C]) array already in [0, 1] (a PNG read with matplotlib)."""
    if isinstance(frame, torch.Tensor):
        if frame.dim() != 3:
            raise ValueError(f"a frame tensor is one (C, H, W) image grid, got shape {tuple(frame.shape)}")
        a = ((frame.detach().float().cpu() + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
    else:
        a = np.asarray(frame, dtype=np.float32)
        if a.ndim not in (2, 3):
            raise ValueError(f"a frame array is (H, W) or (H, W, C), got shape {a.shape}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return a


def every_kth(n: int, max_frames: int) -> list[int]:
    """Indices of at most about ``max_frames`` of ``n`` frames, evenly spaced, always with the first and the last
    (a long run's every epoch would make a player of tens of megabytes)."""
    if n < 1:
        return []
    k = max(1, -(-n // max(1, max_frames)))  # ceil(n / max_frames)
    keep = list(range(0, n, k))
    if keep[-1] != n - 1:
        keep.append(n - 1)
    return keep


def image_frames(paths: Sequence, keep: Sequence[int] | None = None) -> list[np.ndarray]:
    """Frames read from image files (e.g. a run's ``samples/epoch_NNN.png``): those at ``keep`` (default: all)."""
    import matplotlib.image as mpimg

    paths = list(paths)
    if not paths:
        raise ValueError("no image files to animate")
    return [mpimg.imread(str(paths[i])) for i in (range(len(paths)) if keep is None else keep)]


def walk_frames(images: torch.Tensor, nrow: int) -> list[torch.Tensor]:
    """(frames, walks, C, H, W) images of ``walks`` parallel latent walks -> one grid per frame."""
    from torchvision.utils import make_grid

    if images.dim() != 5:
        raise ValueError(f"walk_frames expects (frames, walks, C, H, W), got {tuple(images.shape)}")
    return [make_grid(f, nrow=nrow, padding=1, pad_value=1.0) for f in images]


def animate(frames: Sequence, titles: Sequence[str] | None = None, interval_ms: int = 200, size: float = 4.0,
            dpi: int = 72):
    """A ``matplotlib.animation.FuncAnimation`` that shows ``frames`` one after another (titles optional).

    ``size`` inches at ``dpi`` (72: about the grids' own pixel size) sets the embedded frames' resolution.
    """
    import matplotlib.pyplot as plt
    from matplotlib import animation

    arrays = [_hwc(f) for f in frames]
    if not arrays:
        raise ValueError("no frames to animate")
    if titles is not None and len(titles) != len(arrays):
        raise ValueError(f"{len(titles)} titles for {len(arrays)} frames")
    h, w = arrays[0].shape[:2]
    fig, ax = plt.subplots(figsize=(size * w / max(h, w), size * h / max(h, w) + (0.3 if titles else 0)), dpi=dpi)
    ax.axis("off")
    im = ax.imshow(arrays[0], cmap="gray" if arrays[0].ndim == 2 else None, vmin=0, vmax=1)
    title = ax.set_title(titles[0] if titles else "")
    fig.tight_layout()

    def update(i):
        im.set_data(arrays[i])
        if titles:
            title.set_text(titles[i])
        return (im, title)

    anim = animation.FuncAnimation(fig, update, frames=len(arrays), interval=interval_ms, blit=False)
    plt.close(fig)  # the player replaces the static figure
    return anim


def to_html(anim, mode: str = "loop") -> str:
    """The animation as a self-contained HTML5/JavaScript player (frames embedded as PNG)."""
    return anim.to_jshtml(default_mode=mode)
