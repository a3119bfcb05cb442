"""Tests for dcgan.animation: frames from tensors, arrays and PNG files, to an HTML/JS player."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dcgan import animation as A  # noqa: E402


def test_walk_frames_make_one_grid_per_frame():
    imgs = torch.rand(5, 4, 3, 8, 8) * 2 - 1  # 5 frames of 4 parallel walks
    frames = A.walk_frames(imgs, nrow=2)
    assert len(frames) == 5 and frames[0].shape == (3, 2 * 8 + 3, 2 * 8 + 3)
    with pytest.raises(ValueError, match="frames, walks"):
        A.walk_frames(imgs[0], nrow=2)


def test_every_kth_keeps_first_and_last():
    assert A.every_kth(5, 10) == [0, 1, 2, 3, 4]
    assert A.every_kth(80, 20) == list(range(0, 80, 4)) + [79]
    assert A.every_kth(7, 3) == [0, 3, 6] and A.every_kth(8, 3) == [0, 3, 6, 7] and A.every_kth(0, 3) == []


def test_image_frames_read_the_kept_files(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"epoch_{i + 1:03d}.png"
        mpimg.imsave(p, np.full((6, 6), i / 4), cmap="gray", vmin=0, vmax=1)
        paths.append(p)
    frames = A.image_frames(paths, A.every_kth(5, 3))
    assert len(frames) == 3  # epochs 1, 3, 5
    assert frames[-1][..., 0].mean() == pytest.approx(1.0, abs=0.01) and frames[0][..., 0].mean() < 0.01
    assert len(A.image_frames(paths)) == 5
    with pytest.raises(ValueError, match="no image files"):
        A.image_frames([])


def test_animation_renders_every_frame_as_a_player():
    frames = [torch.full((1, 8, 8), v) for v in (-1.0, 0.0, 1.0)]
    anim = A.animate(frames, titles=["a", "b", "c"], interval_ms=100)
    html = A.to_html(anim)
    assert "<script" in html and html.count("data:image/png;base64") == 3
    with pytest.raises(ValueError, match="2 titles for 3 frames"):
        A.animate(frames, titles=["a", "b"])
    with pytest.raises(ValueError, match="no frames"):
        A.animate([])
    assert A._hwc(torch.ones(1, 4, 4)).shape == (4, 4) and A._hwc(np.zeros((4, 4, 3))).shape == (4, 4, 3)
