"""Forest plots of the verdicts: the results page's first figure and each chapter's At-a-glance box.

One row per number a verdict rests on (:class:`dcgan.evidence.Point`): the measured difference with its
95 % interval, the zero line, the side the paper claims shaded, the point coloured by the claim's verdict,
the rows grouped by the paper's sections. Comparative claims (a difference of two conditions) get one
panel per unit (FID, percentage points); claims judged against a fixed line (a cut rate, a false-positive
rate, a number of the paper's tables) get a second panel, where each number is shown divided by its line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .evidence import DIFF, Point, number

__all__ = ["COLORS", "claim_points", "forest_figure", "write_forest"]

COLORS = {
    "reproduced": "#1a9641",
    "partly": "#a6a600",
    "not reproduced": "#d7191c",
    "inconclusive (within noise)": "#737373",
    "inconclusive (no interval)": "#b0b0b0",
    "inconclusive: model below the quality gate": "#f28e2b",
    "inconclusive: no quality gate recorded": "#f1c27d",
    "inconclusive": "#9467bd",
    "needs the paper's data": "#4e79a7",
}
SIDE = "#1a9641"  # the shading of the side the paper claims
ROW_IN, PANEL_IN = 0.135, 0.7  # inches per row, per panel (title and axis)
CLIP = 3.0  # the fixed-line panel's right edge, in units of the line


def claim_points(results) -> list[Point]:
    """Every number behind a verdict among ``results`` (claims, in the claims' order; checks have none)."""
    from .report import NOT_RUN, claim_rows

    return [p for row in claim_rows(list(results)) if row["verdict"] != NOT_RUN for p in row["points"]]


def _short(dataset: str) -> str:
    """A data set as a row label names it: "fashion-mnist-32->mnist-10k" -> "fashion-mnist", "emoji-google" -> "emoji"."""
    d = dataset.split("->")[0].split(" (")[0]
    for cut in ("-google", "-apple", "-twitter", "-facebook"):
        d = d.replace(cut, "")
    return d.rsplit("-", 1)[0] if d.rsplit("-", 1)[-1].isdigit() else d


def _label(p: Point, with_data: bool, fixed: bool) -> str:
    text = f"{p.section.replace(' Table ', ' Tab. ')} {p.label}" + (f", {_short(p.dataset)}" if with_data else "")
    if fixed:
        text += f": {number(p.value)} vs {number(p.at)}"
    return text if len(text) <= 64 else text[:62] + "..."


def _rows(pts: list[Point]) -> list[float]:
    """y of each row, top down, with a gap between the paper's section groups."""
    ys, y, group = [], 0.0, None
    for p in pts:
        if group is not None and p.group != group:
            y -= 0.6
        group = p.group
        ys.append(y)
        y -= 1.0
    return ys


def _scaled(p: Point, fixed: bool) -> tuple[float, float | None, float | None, float]:
    """(value, lo, hi, line) on the panel's axis: as measured, or divided by the line (fixed-line panel)."""
    if not fixed or not p.at:
        return p.value, p.lo, p.hi, p.at
    k = 1.0 / abs(p.at)
    return p.value * k, None if p.lo is None else p.lo * k, None if p.hi is None else p.hi * k, 1.0


def _draw(ax, pts: list[Point], title: str, xlabel: str, fixed: bool) -> None:
    ys = _rows(pts)
    vals = [_scaled(p, fixed) for p in pts]
    xs = [x for v, lo, hi, at in vals for x in (v, lo, hi, at) if x is not None]
    lo_x, hi_x = min(xs + [0.0]), max(xs + [0.0])
    if fixed:
        lo_x, hi_x = 0.0, min(max(hi_x, 2.0), CLIP)
    pad = 0.08 * (hi_x - lo_x or 1.0)
    left, right = lo_x - pad, hi_x + pad
    for p, y, (v, lo, hi, at) in zip(pts, ys, vals):
        if p.direction:  # the side the paper claims, from the line to the edge
            a, b = (at, right) if p.direction > 0 else (left, at)
        else:  # a number of the paper's: within its tolerance
            t = p.tol / abs(p.at) if fixed and p.at else p.tol
            a, b = at - t, at + t
        ax.fill_between([a, b], y - 0.42, y + 0.42, color=SIDE, alpha=0.12, lw=0)
        colour = COLORS.get(p.verdict, "#333333")
        shown = min(v, right - pad / 2)
        if lo is not None and hi is not None:
            ax.plot([max(lo, left), min(hi, right)], [y, y], color=colour, lw=1.6, solid_capstyle="butt")
        ax.plot([shown], [y], marker=">" if shown < v else "o", color=colour, ms=5,
                mfc=colour if lo is not None else "white")
    for y0, y1, p0, p1 in zip(ys, ys[1:], pts, pts[1:]):
        if p0.group != p1.group:
            ax.axhline((y0 + y1) / 2, color="#d0d0d0", lw=0.6)
    ax.axvline(1.0 if fixed else 0.0, color="black", lw=0.9)
    datasets = {p.dataset for p in pts}
    ax.set_yticks(ys, [_label(p, len(datasets) > 1, fixed) for p in pts], fontsize=8)
    ax.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    ax.set_xlim(left, right)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(title + ("" if len(datasets) > 1 else f", {_short(next(iter(datasets)))}"), fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _panels(pts: list[Point]) -> list[tuple[list[Point], str, str, bool]]:
    """(rows, title, x label, fixed) per panel: comparative ones by unit, then the fixed-line one."""
    out = []
    units: dict[str, list[Point]] = {}
    for p in pts:
        if p.kind == DIFF:
            units.setdefault(p.unit or "value", []).append(p)
    for unit, rows in units.items():
        words = "percentage points" if unit == "points" else unit
        out.append((rows, f"Comparative claims ({words})", f"measured difference, {words}", False))
    fixed = [p for p in pts if p.kind != DIFF]
    if fixed:
        out.append((fixed, "Against a fixed line", "measured / its line", True))
    return out


def _column(sub, panels: list, height: float) -> None:
    """Draw ``panels`` stacked in the subfigure ``sub``; a blank spacer fills it to ``height`` inches."""
    heights = [len(rows) * ROW_IN + PANEL_IN for rows, *_ in panels]
    spare = height - sum(heights)
    ratios = heights + ([spare] if spare > 0.05 else [])
    axes = sub.subplots(len(ratios), 1, gridspec_kw={"height_ratios": ratios}, squeeze=False)[:, 0]
    for ax, (rows, title, xlabel, fixed) in zip(axes, panels):
        _draw(ax, rows, title, xlabel, fixed)
    for ax in axes[len(panels):]:
        ax.axis("off")


def forest_figure(results: Iterable | None = None, pts: list[Point] | None = None, width: float = 7.0,
                  columns: int = 1):
    """The forest plot of the claims ``results`` bear on (or of ``pts``): a matplotlib figure, never None.

    ``columns=2`` puts the fixed-line panel beside the comparative ones (the results page, so that its
    table starts on the first screen); a chapter's At-a-glance box glues one column for its own results.
    Without any number behind a verdict the figure says so.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    pts = claim_points(results or []) if pts is None else pts
    panels = _panels(pts)
    if not panels:
        fig, ax = plt.subplots(figsize=(width, 0.8))
        ax.axis("off")
        ax.text(0.5, 0.5, "No claim of the paper has a measured number here.", ha="center", va="center", fontsize=9)
        return fig
    cols = [panels] if columns == 1 or len(panels) == 1 else [panels[:-1], panels[-1:]]
    height = max(sum(len(rows) * ROW_IN + PANEL_IN for rows, *_ in col) for col in cols)
    legend_in = 0.3
    fig = plt.figure(figsize=(width, height + legend_in), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[height, legend_in])
    subs = top.subfigures(1, 2, width_ratios=[1.15, 1]) if len(cols) > 1 else [top]
    for sub, col in zip(subs, cols):
        _column(sub, col, height)
    shown = [v for v in COLORS if any(p.verdict == v for p in pts)]
    handles = [Line2D([], [], marker="o", ls="", color=COLORS[v], label=v) for v in shown]
    handles.append(Line2D([], [], marker="s", ls="", ms=9, color=SIDE, alpha=0.25, label="the side the paper claims"))
    bottom.legend(handles=handles, loc="center", ncol=min(4, len(handles)), fontsize=7.5, frameon=False)
    return fig


def write_forest(results: Iterable, path: str | Path, dpi: int = 100) -> Path:
    """Draw :func:`forest_figure` for ``results`` into the PNG ``path`` (the results page's first figure)."""
    import matplotlib.pyplot as plt

    fig = forest_figure(results, width=11.0, columns=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
