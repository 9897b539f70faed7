"""PNG plots (matplotlib, Agg backend): training curves, confusion matrix, accuracy against latency."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.fileio import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


#: the PNG text chunk that marks a plot as edgepipe's, so a later command may replace it and no other PNG
PNG_SOFTWARE = "edgepipe (Matplotlib)"


def _literal_text(plot):
    """Draw and save with mathtext off: a class or file name with dollar signs is text, never parsed as math (a
    malformed formula would stop the plot; a well-formed one would lose its dollar signs)."""

    @functools.wraps(plot)
    def draw(*args, **kwargs):
        with _pyplot().rc_context({"text.parse_math": False}):
            return plot(*args, **kwargs)

    return draw


def _save(fig, path: Path) -> None:
    """Write the figure in the format the path's suffix names (.png, or .svg/.pdf), atomically."""
    plt = _pyplot()
    suffix = path.suffix or ".png"
    metadata = {"Software": PNG_SOFTWARE} if suffix == ".png" else None
    with atomic_path(path, suffix=suffix) as tmp:
        fig.savefig(tmp, format=suffix[1:], dpi=110, bbox_inches="tight", metadata=metadata)
    plt.close(fig)


def is_edgepipe_png(path: Path) -> bool:
    """True for a PNG file edgepipe's plots wrote (its Software text chunk); False for any other file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get("Software") == PNG_SOFTWARE
    except (OSError, UnidentifiedImageError):
        return False


@_literal_text
def history_plot(history: dict[str, list[float]], path: Path, title: str = "Training history") -> bool:
    """Loss and accuracy per epoch (training and validation) and the learning rate; False when empty."""
    if not history or not history.get("loss"):
        return False
    plt = _pyplot()
    panels = [("loss", "loss"), ("accuracy", "accuracy")] + (
        [("learning_rate", "learning rate")] if "learning_rate" in history else []
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    epochs = range(1, len(history["loss"]) + 1)
    for ax, (key, name) in zip(axes, panels):
        ax.plot(epochs, history[key], marker="o", markersize=3, label="train" if key != "learning_rate" else "rate")
        if "val_" + key in history:
            ax.plot(epochs, history["val_" + key], marker="o", markersize=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        if key == "learning_rate":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    _save(fig, path)
    return True


@_literal_text
def confusion_plot(evaluation: dict[str, Any], path: Path, title: str = "Confusion matrix") -> None:
    """The confusion matrix as a heat map, counts written in each cell for up to 25 classes."""
    import numpy as np

    plt = _pyplot()
    cm = evaluation["confusion_matrix"]
    counts = np.asarray(cm["counts"])
    names = cm["classes"]
    size = max(3.5, 0.45 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, label="images")
    ax.set_xticks(
        range(len(names)), names, rotation=60 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center"
    )
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if len(names) <= 25:
        top = counts.max() if counts.size else 0
        for (i, j), value in np.ndenumerate(counts):
            if value:
                ax.text(
                    j,
                    i,
                    str(value),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if value > top / 2 else "black",
                )
    ax.set_title(f"{title} (top-1 {evaluation['top1']:.1%}, {evaluation['images']} images)")
    _save(fig, path)


#: where a point's number may stand, in points from the point (the number centred there): rings of eight
#: directions, nearest first, right before left and above before below
NUMBER_OFFSETS = [
    (round(r * dx), round(r * dy))
    for r in (8, 14, 20, 27, 35, 44)
    for dx, dy in ((1, 0.6), (1, -0.6), (-1, 0.6), (-1, -0.6), (0, 1), (0, -1), (1.3, 0), (-1.3, 0))
]
#: the least span of a top-1 axis, in percentage points, so a one-image difference does not look like a gap
MIN_SPAN_PP = 5.0


@dataclass(frozen=True)
class Numbered:
    """A point that gets its number beside it: data coordinates, the number, its colour, and the radius of its
    marker in points (the number never covers a marker)."""

    x: float
    y: float
    number: int
    color: str = "black"
    radius_pt: float = 3.0


def place_numbers(fig, ax, points: list[Numbered], fontsize: float = 7) -> list:
    """Each point's number beside it, at the first of NUMBER_OFFSETS whose rendered box overlaps no number placed
    before and no marker (the last offset when all do: with more points than room, legibility yields to
    completeness). Points are placed left to right. Returns the text objects (boxes: ``get_window_extent``)."""
    from matplotlib.transforms import Bbox

    fig.canvas.draw()  # the axes' limits and scales are final: data maps to the pixels the file will show
    renderer = fig.canvas.get_renderer()
    scale = fig.dpi / 72.0
    markers = []
    for p in points:
        x, y = ax.transData.transform((p.x, p.y))
        r = p.radius_pt * scale
        markers.append(Bbox.from_extents(x - r, y - r, x + r, y + r))
    placed: list = []
    texts = []
    for p in sorted(points, key=lambda p: (p.x, -p.y)):
        for dx, dy in NUMBER_OFFSETS:
            text = ax.annotate(
                str(p.number),
                (p.x, p.y),
                textcoords="offset points",
                xytext=(dx, dy),
                ha="center",
                va="center",
                fontsize=fontsize,
                color=p.color,
            )
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed + markers) or (dx, dy) == NUMBER_OFFSETS[-1]:
                break
            text.remove()
        placed.append(box)
        texts.append(text)
    return texts


def interval_bar(ax, x: float, y: float, interval: list[float] | None, color: str) -> None:
    """The 95% interval of a top-1 (percent) as a vertical bar through the point; nothing without one."""
    if not interval:
        return
    low, high = interval
    ax.errorbar(
        x,
        y,
        yerr=[[max(y - low, 0)], [max(high - y, 0)]],
        fmt="none",
        ecolor=color,
        alpha=0.5,
        capsize=2,
        linewidth=1,
    )


def accuracy_limits(ax, values: list[float], room_below: float = 0.0) -> None:
    """A top-1 axis (percent) spanning ``values`` (points and their intervals) and at least MIN_SPAN_PP, within
    0-100, with ``room_below`` percentage points more at the bottom (for marks drawn there)."""
    if not values:
        return
    low, high = min(values), max(values)
    pad = max(MIN_SPAN_PP - (high - low), 0) / 2 + 1
    ax.set_ylim(max(low - pad, 0) - room_below, min(high + pad, 100) + 1)


def latency_axis(ax, times: list[float], percentile: str = "p50") -> None:
    """The latency axis: logarithmic when the times span more than 5x (a narrow range reads better on a linear
    axis with its own ticks), labelled in ms."""
    from matplotlib import ticker

    logarithmic = bool(times) and max(times) / min(times) > 5
    if logarithmic:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.margins(x=0.15)
    ax.set_xlabel(f"{percentile} latency per image (ms{', log scale' if logarithmic else ''})")


def number_legend(fig, lines: list[str], left: float) -> None:
    """The numbers' names, one line each, in a column beside the axes starting at ``left`` (figure fraction)."""
    fig.text(left, 0.5, "\n".join(lines), family="monospace", fontsize=7, va="center", ha="left")


@_literal_text
def pareto_plot(points: list[dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy against p50 latency, one panel per device: each point numbered (a number per label, the same in
    every panel, named in a legend beside the panels), numbers placed so none overlaps another or a marker,
    with its 95% bootstrap interval; marker area by file size, frontier drawn, the top-1 axis at least
    MIN_SPAN_PP wide.

    Each point: device, label, latency_ms, top1 (fraction), top1_interval (percent [low, high] or None),
    size_mb, frontier (bool), recommended (bool).
    """
    plt = _pyplot()
    devices = list(dict.fromkeys(p["device"] for p in points))
    numbers = {label: i for i, label in enumerate(dict.fromkeys(p["label"] for p in points), 1)}
    fig, axes = plt.subplots(1, len(devices), figsize=(6.2 * len(devices) + 3, 4.6), squeeze=False)
    fig.subplots_adjust(right=1 - 3 / (6.2 * len(devices) + 3))  # the numbers' legend stands to the right
    biggest = max((p["size_mb"] or 0 for p in points), default=1) or 1
    for ax, device in zip(axes[0], devices):
        mine = [p for p in points if p["device"] == device]
        placed = [_pareto_point(ax, p, numbers[p["label"]], biggest) for p in mine]
        _frontier(ax, mine)
        values = [v for p in mine for v in (p.get("top1_interval") or [p["top1"] * 100] * 2)]
        accuracy_limits(ax, values)
        latency_axis(ax, [p["latency_ms"] for p in mine])
        ax.set_ylabel("top-1 accuracy (%), 95% interval")
        ax.set_title(device, fontsize=9)
        ax.grid(alpha=0.3, which="both")
        place_numbers(fig, ax, placed)
    number_legend(fig, [f"{n:>2}  {label}" for label, n in numbers.items()], 1 - 2.9 / (6.2 * len(devices) + 3))
    fig.suptitle(title + " (marker area: file size; red edge: recommended)")
    _save(fig, path)


def _pareto_point(ax, p: dict[str, Any], number: int, biggest: float) -> Numbered:
    """One artifact's marker and interval; where its number goes."""
    area = 40 + 300 * (p["size_mb"] or 0) / biggest
    y = p["top1"] * 100
    interval_bar(ax, p["latency_ms"], y, p.get("top1_interval"), "tab:red" if p.get("recommended") else "tab:blue")
    ax.scatter(
        p["latency_ms"],
        y,
        s=area,
        alpha=0.6,
        edgecolors="red" if p.get("recommended") else "black",
        linewidths=2 if p.get("recommended") else 0.5,
        zorder=3,
    )
    return Numbered(p["latency_ms"], y, number, "tab:red" if p.get("recommended") else "black", area**0.5 / 2)


def _frontier(ax, mine: list[dict[str, Any]]) -> None:
    frontier = sorted((p for p in mine if p.get("frontier")), key=lambda p: p["latency_ms"])
    if len(frontier) > 1:
        ax.step(
            [p["latency_ms"] for p in frontier],
            [p["top1"] * 100 for p in frontier],
            where="post",
            color="tab:red",
            linestyle="--",
            linewidth=1,
            label="Pareto frontier",
        )
        ax.legend(loc="lower right", fontsize=8)
