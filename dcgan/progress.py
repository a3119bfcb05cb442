"""Progress bars (infrastructure: no paper section): a bar where a person watches, nothing in a rendered chapter.

Every long loop of the library (training, the worker pool, the authors' §5.2 protocol, the
deduplication autoencoder) draws its bar through :func:`bar`. tqdm's ``tqdm.auto`` picks the
notebook widget inside a Jupyter kernel, and without ``ipywidgets`` it prints "IProgress not
found" on stderr; its plain bar writes to stderr too. Either way an executed chapter would show
the reader a stderr block. So:

* in a terminal (a script, the CLI): tqdm's plain bar on stderr;
* in a Jupyter kernel: the notebook widget where ``ipywidgets`` is installed, no bar otherwise;
* ``DCGAN_PROGRESS=0`` (the book runner sets it for the kernels it starts): no bar anywhere.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable

__all__ = ["bar", "PROGRESS_ENV"]

PROGRESS_ENV = "DCGAN_PROGRESS"


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (an IPython shell that talks ZMQ), not a terminal IPython."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def bar(iterable: Iterable | None = None, *, disable: bool = False, **kwargs):
    """A ``tqdm`` bar over ``iterable`` (or a manual one with ``total=``) that never writes to a chapter's stderr.

    Takes tqdm's arguments. It is disabled (it still iterates and counts) when ``disable``, when
    ``DCGAN_PROGRESS=0``, and in a Jupyter kernel without ``ipywidgets``.
    """
    if os.environ.get(PROGRESS_ENV, "1") == "0":
        disable = True
    if _in_kernel():
        if _has_widgets():
            from tqdm.notebook import tqdm
        else:
            from tqdm import tqdm

            disable = True
    else:
        from tqdm import tqdm
    return tqdm(iterable, disable=disable, **kwargs)
