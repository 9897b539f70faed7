"""The search's Pareto plot: validation top-1 against latency, each artifact a numbered point with its interval.

Numbers (the table's #) stand beside the points, placed so no two overlap, and a legend beside the axes names
each number, so thirty points stay legible (the run report's plot places them the same way, with the same
code: edgepipe.report.plots); the budgets are drawn as lines and the artifacts they exclude are drawn hollow
(size or memory) or, when they have no top-1 (excluded before training, or not exported because they could
not win), as ticks on the time axis.
"""

from __future__ import annotations

from pathlib import Path

from edgepipe.choose.answer import OVER_BUDGET, WINNER, Row
from edgepipe.choose.budgets import Budgets
from edgepipe.report.plots import (
    Numbered,
    accuracy_limits,
    interval_bar,
    latency_axis,
    number_legend,
    place_numbers,
)


def search_plot(rows: list[Row], budgets: Budgets, path: Path, title: str) -> list[tuple[float, float, float, float]]:
    """Write the plot; returns the number labels' boxes in pixels (x0, y0, x1, y1), which never overlap."""
    from edgepipe.report.plots import _pyplot, _save

    plt = _pyplot()
    scored = [r for r in rows if r.top1 is not None and r.latency_ms]
    unscored = [r for r in rows if r.top1 is None and r.latency_ms]
    fig, ax = plt.subplots(figsize=(11, 5.2))
    fig.subplots_adjust(right=0.66)  # the numbered legend stands to the right of the axes
    points = [_point(ax, r) for r in scored]
    if unscored:
        from matplotlib import transforms

        ax.scatter(
            [r.latency_ms for r in unscored],
            [0.02] * len(unscored),
            marker="|",
            s=120,
            color="grey",
            transform=transforms.blended_transform_factory(ax.transData, ax.transAxes),
            label="no top-1 (over a budget, or could not win: see the table)",
        )
    _axes(ax, scored + unscored, budgets)
    texts = place_numbers(fig, ax, points)
    number_legend(
        fig,
        [
            f"{r.number:>2}  {r.label}" + ("  (winner)" if r.status == WINNER else "")
            for r in sorted(scored + unscored, key=lambda r: r.number or 0)
        ],
        0.68,
    )
    ax.set_title(title, fontsize=10)
    fig.canvas.draw()
    boxes = [tuple(t.get_window_extent().extents) for t in texts]
    _save(fig, path)
    return boxes


def _point(ax, r: Row) -> Numbered:
    """The row's marker and interval; where its number goes."""
    hollow = r.status == OVER_BUDGET
    color = "tab:red" if r.status == WINNER else ("grey" if hollow else "tab:blue")
    interval_bar(ax, r.latency_ms, r.top1, r.top1_interval, color)
    size = 90 if r.status == WINNER else 36
    ax.scatter(
        r.latency_ms,
        r.top1,
        s=size,
        marker="*" if r.status == WINNER else "o",
        facecolors="none" if hollow else color,
        edgecolors=color,
        zorder=3,
    )
    return Numbered(r.latency_ms, r.top1, r.number or 0, "tab:red" if r.status == WINNER else "black", size**0.5 / 2)


def _axes(ax, rows: list[Row], budgets: Budgets) -> None:
    if budgets.max_latency_ms is not None:
        ax.axvline(
            budgets.max_latency_ms,
            color="tab:orange",
            linestyle="--",
            linewidth=1,
            label=f"latency budget ({budgets.percentile} {budgets.max_latency_ms:g} ms)",
        )
    if budgets.min_top1 is not None:
        ax.axhline(
            budgets.min_top1, color="tab:green", linestyle="--", linewidth=1, label=f"min top-1 {budgets.min_top1:g}%"
        )
    values = [v for r in rows if r.top1 is not None for v in (r.top1_interval or [r.top1, r.top1])]
    values += [budgets.min_top1] if budgets.min_top1 is not None else []
    accuracy_limits(ax, values, room_below=4)  # room at the bottom for the ticks of the rows with no top-1
    latency_axis(
        ax,
        [r.latency_ms for r in rows] + ([budgets.max_latency_ms] if budgets.max_latency_ms else []),
        budgets.percentile,
    )
    ax.set_ylabel("validation top-1 (%), 95% interval")
    ax.grid(alpha=0.3, which="both")
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="lower right", fontsize=7)


def plot_path(folder: Path) -> Path:
    return folder / "search.png"


def optional_plot(rows: list[Row], budgets: Budgets, folder: Path, title: str) -> Path | None:
    """The plot in ``folder`` when any artifact has a latency to place; None otherwise."""
    if not any(r.latency_ms for r in rows):
        return None
    search_plot(rows, budgets, plot_path(folder), title)
    return plot_path(folder)
