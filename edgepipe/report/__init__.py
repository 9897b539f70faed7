"""Reports rendered from results: Markdown, self-contained HTML, CSV and the Pareto plot."""

from __future__ import annotations

from pathlib import Path

from edgepipe.report.markdown import LINKS
from edgepipe.report.markdown import render as render_markdown
from edgepipe.results import Results, write_results_json

__all__ = ["is_results_csv", "render_markdown", "write_reports", "write_results"]


def write_results(path: str | Path, results: Results) -> Path:
    """results.json and, beside it, the same records as CSV (one line per artifact and setting); returns the CSV path."""
    from edgepipe.fileio import write_text
    from edgepipe.report.table import rows, to_csv

    path = Path(path)
    write_results_json(path, results)
    csv_path = path.with_suffix(".csv")
    write_text(csv_path, to_csv(rows(results)))
    return csv_path


def is_results_csv(path: Path) -> bool:
    """True for a CSV file ``write_results`` wrote: its header starts with edgepipe's first columns (later versions
    only add columns), so a rerun may replace it and no other file."""
    from edgepipe.report.table import CSV_COLUMNS

    with open(path, encoding="utf-8", errors="replace") as handle:
        header = handle.readline().rstrip("\r\n").split(",")
    return header[:6] == CSV_COLUMNS[:6]


def write_reports(results: Results, folder: Path, budget_pp: float | None = None, stem: str = "report") -> list[str]:
    """Write <stem>.md, <stem>.html and pareto.png into ``folder``; returns lines saying what was written."""
    from edgepipe.fileio import write_text
    from edgepipe.report import html
    from edgepipe.report.plots import pareto_plot
    from edgepipe.report.table import analyse, pareto_points

    analysed = analyse(results, budget_pp)
    points = pareto_points(analysed[0])
    png = folder / "pareto.png"
    said = []
    if points:
        pareto_plot(points, png, "Top-1 accuracy against p50 latency")
    else:
        png.unlink(missing_ok=True)
        said.append("no artifact has both accuracy and latency: no Pareto plot")
    files = [name for name, _ in LINKS if (folder / name).exists() or name in (f"{stem}.html",)]
    write_text(folder / f"{stem}.md", render_markdown(results, budget_pp, files, analysed))
    write_text(folder / f"{stem}.html", html.render(results, folder, budget_pp, png if points else None, analysed))
    said.append(f"report: {folder / (stem + '.md')}, {folder / (stem + '.html')}")
    return said
