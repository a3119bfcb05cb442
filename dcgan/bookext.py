"""Sphinx extension of the book: figures numbered by chapter ("Figure 6.2": chapter 06, second figure).

Jupyter Book numbers figures through the whole book unless the table of contents is numbered, and a
numbered toc would number the chapters again (chapter 00 would become 1). This extension keeps the
chapters' own numbers: after Sphinx has assigned the figure numbers (event ``env-get-updated``), each
figure of ``book/NN_name`` gets ``(NN, k)``, k counting that chapter's figures in document order, so a
caption reads "Figure 2.3" and ``{numref}`` in the prose says the same. Enabled in ``_config.yml``
(``sphinx: extra_extensions``). The results page's figures are numbered the same way under the letter R
("Figure R.1"), and the extension adds the book's stylesheet (``dcgan/static/dcgan.css``: the results
page takes the window's width).

It also copies the latent-space explorer (chapter 11, :mod:`dcgan.explorer`) into the html's
``_static/explorer/`` when the build has finished: its script and stylesheet, and onnxruntime-web
from where ``make data`` fetched it (where that is missing, the log and the page say so).
"""

from __future__ import annotations

import re
from pathlib import Path

STATIC = Path(__file__).with_name("static")
_CHAPTER = re.compile(r"(?:^|/)(\d\d)_[^/]*$")


def chapter_number(docname: str) -> int | None:
    """``book/06_latent_space`` -> 6; None for pages that are not chapters."""
    m = _CHAPTER.search(docname)
    return int(m.group(1)) if m else None


def page_number(docname: str) -> int | str | None:
    """A page's figure prefix: the chapter's number, "R" for the results page, None for the others."""
    ch = chapter_number(docname)
    if ch is None and docname.rsplit("/", 1)[-1] == "results":
        return "R"
    return ch


def renumber(fignumbers: dict) -> list[str]:
    """Renumber ``env.toc_fignumbers`` in place, chapter by chapter; returns the documents changed."""
    changed = []
    for docname, by_type in fignumbers.items():
        ch = page_number(docname)
        if ch is None:
            continue
        for ids in by_type.values():
            # Sphinx's numbers increase in document order: sort by them, then count from 1 in this chapter
            for k, fid in enumerate(sorted(ids, key=lambda i: ids[i]), start=1):
                ids[fid] = (ch, k)
        changed.append(docname)
    return changed


def _on_env_updated(app, env):
    return renumber(env.toc_fignumbers)


def _add_static(app) -> None:
    app.config.html_static_path.append(str(STATIC))


def _on_build_finished(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    from sphinx.util import logging

    from .explorer import install_static

    for note in install_static(Path(app.outdir) / "_static"):
        logging.getLogger(__name__).info(f"[dcgan.bookext] {note}")  # a note, not a warning: -W keeps building


def setup(app):
    app.connect("builder-inited", _add_static)
    app.add_css_file("dcgan.css")
    app.connect("build-finished", _on_build_finished)
    # after the toctree collector (priority 500) has numbered the figures
    app.connect("env-get-updated", _on_env_updated, priority=900)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
