"""The search's Pareto plot: validation top-1 against latency, each artifact a numbered point with its interval.

Numbers (the table's #) stand beside the points, placed so no two overlap, and a legend beside the axes names
each number, so thirty points stay legible; the budgets are drawn as lines and the artifacts they exclude are
drawn hollow (size or memory) or, when they have no top-1 (excluded before training, or not exported because
they could not win), as ticks on the time axis.
"""

from __future__ import annotations

from pathlib import Path

from edgepipe.choose.answer import OVER_BUDGET, WINNER, Row
from edgepipe.choose.budgets import Budgets

#: where a number may stand around its point, in points (tried in order)
OFFSETS = [
    (5, 4),
    (5, -11),
    (-13, 4),
    (-13, -11),
    (-4, 9),
    (-4, -16),
    (11, -3),
    (-20, -3),
    (5, 14),
    (-13, 14),
    (5, -21),
    (-13, -21),
    (17, 8),
    (-26, 8),
    (17, -14),
    (-26, -14),
]
#: the least span of the top-1 axis, in percentage points, so a one-image difference does not look like a gap
MIN_SPAN_PP = 5.0


def search_plot(rows: list[Row], budgets: Budgets, path: Path, title: str) -> list[tuple[float, float, float, float]]:
    """Write the plot; returns the number labels' boxes in pixels (x0, y0, x1, y1), which never overlap."""
    from edgepipe.report.plots import _pyplot, _save

    plt = _pyplot()
    scored = [r for r in rows if r.top1 is not None and r.latency_ms]
    unscored = [r for r in rows if r.top1 is None and r.latency_ms]
    fig, ax = plt.subplots(figsize=(11, 5.2))
    fig.subplots_adjust(right=0.66)  # the numbered legend stands to the right of the axes
    for r in scored:
        _point(ax, r)
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
    texts = _place_numbers(fig, ax, scored)
    legend = "\n".join(
        f"{r.number:>2}  {r.label}" + ("  (winner)" if r.status == WINNER else "")
        for r in sorted(scored + unscored, key=lambda r: r.number or 0)
    )
    fig.text(0.68, 0.5, legend, family="monospace", fontsize=7, va="center", ha="left", transform=fig.transFigure)
    ax.set_title(title, fontsize=10)
    fig.canvas.draw()
    boxes = [tuple(t.get_window_extent().extents) for t in texts]
    _save(fig, path)
    return boxes


def _point(ax, r: Row) -> None:
    value = r.top1
    low, high = r.top1_interval or (value, value)
    hollow = r.status == OVER_BUDGET
    color = "tab:red" if r.status == WINNER else ("grey" if hollow else "tab:blue")
    ax.errorbar(
        r.latency_ms,
        value,
        yerr=[[max(value - low, 0)], [max(high - value, 0)]],
        fmt="none",
        ecolor=color,
        alpha=0.5,
        capsize=2,
        linewidth=1,
    )
    ax.scatter(
        r.latency_ms,
        value,
        s=90 if r.status == WINNER else 36,
        marker="*" if r.status == WINNER else "o",
        facecolors="none" if hollow else color,
        edgecolors=color,
        zorder=3,
    )


def _axes(ax, rows: list[Row], budgets: Budgets) -> None:
    from matplotlib import ticker

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
    if values:
        low, high = min(values), max(values)
        pad = max(MIN_SPAN_PP - (high - low), 0) / 2 + 1
        ax.set_ylim(max(low - pad, 0) - 4, min(high + pad, 100) + 1)  # room at the bottom for the ticks
    times = [r.latency_ms for r in rows] + ([budgets.max_latency_ms] if budgets.max_latency_ms else [])
    logarithmic = max(times) / min(times) > 5  # a narrow range reads better on a linear axis with its own ticks
    if logarithmic:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.margins(x=0.15)
    ax.set_xlabel(f"{budgets.percentile} latency per image (ms{', log scale' if logarithmic else ''})")
    ax.set_ylabel("validation top-1 (%), 95% interval")
    ax.grid(alpha=0.3, which="both")
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="lower right", fontsize=7)


def _place_numbers(fig, ax, rows: list[Row]) -> list:
    """Each row's number beside its point, at the first offset whose box overlaps no number placed before and no
    point (the last offset when all do: with more points than room, legibility yields to completeness)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    from matplotlib.transforms import Bbox

    marks = [ax.transData.transform((r.latency_ms, r.top1)) for r in rows]
    markers = [Bbox.from_extents(x - 4, y - 4, x + 4, y + 4) for x, y in marks]  # a number never hides a point
    placed: list = []
    texts = []
    for r in sorted(rows, key=lambda r: (r.latency_ms, -r.top1)):
        for dx, dy in OFFSETS:
            text = ax.annotate(
                str(r.number),
                (r.latency_ms, r.top1),
                textcoords="offset points",
                xytext=(dx, dy),
                fontsize=7,
                color="tab:red" if r.status == WINNER else "black",
            )
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed + markers) or (dx, dy) == OFFSETS[-1]:
                break
            text.remove()
        placed.append(box)
        texts.append(text)
    return texts


def plot_path(folder: Path) -> Path:
    return folder / "search.png"


def optional_plot(rows: list[Row], budgets: Budgets, folder: Path, title: str) -> Path | None:
    """The plot in ``folder`` when any artifact has a latency to place; None otherwise."""
    if not any(r.latency_ms for r in rows):
        return None
    search_plot(rows, budgets, plot_path(folder), title)
    return plot_path(folder)
