"""Tests for dcgan.progress: a bar in a terminal, none where it would be stderr in a rendered chapter."""

from __future__ import annotations

import sys
import types

from dcgan import progress


def test_bar_counts_and_is_disabled_when_asked(monkeypatch):
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    assert list(progress.bar(range(3), disable=True)) == [0, 1, 2]
    assert not progress.bar(range(3)).disable  # a terminal (not a kernel): tqdm's plain bar
    monkeypatch.setenv(progress.PROGRESS_ENV, "0")
    b = progress.bar(total=4)
    assert b.disable
    b.update(4)
    b.close()


def test_no_bar_in_a_kernel_without_widgets(monkeypatch):
    """tqdm.auto printed "IProgress not found" on stderr in every chapter that trained."""
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)

    class ZMQInteractiveShell:  # what get_ipython() returns inside a Jupyter kernel
        pass

    fake = types.ModuleType("IPython")
    fake.get_ipython = ZMQInteractiveShell
    monkeypatch.setitem(sys.modules, "IPython", fake)
    monkeypatch.setattr(progress, "_has_widgets", lambda: False)
    assert progress._in_kernel()
    assert progress.bar(range(2)).disable and list(progress.bar(range(2))) == [0, 1]
