"""The book's results page, generated from the results registry (all chapters)."""

from __future__ import annotations

from pathlib import Path

from .results import Result, load_results


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def results_table(results: list[Result]) -> str:
    """A Markdown table of every recorded result with its provenance."""
    head = "| chapter | result | ours | paper | unit | data set | profile | hardware | seed |\n|---|---|---|---|---|---|---|---|---|\n"
    rows = [
        f"| {r.chapter} | {r.name} | {_fmt(r.value)} | {_fmt(r.paper)} | {r.unit} | {r.dataset} | {r.profile} | {r.hardware} | {r.seed} |"
        for r in results
    ]
    return head + "\n".join(rows) + "\n"


def write_results_page(results_dir: str | Path, out_path: str | Path) -> Path:
    """Write the Markdown results page for every ``*.results.json`` under ``results_dir``."""
    results = load_results(results_dir)
    text = "# Results\n\nEvery number the chapters recorded, with the data, profile, hardware and seed behind it.\n\n"
    text += results_table(results) if results else "No chapter has recorded results yet: run `make book`.\n"
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out
