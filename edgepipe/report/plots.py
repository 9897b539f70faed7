"""PNG plots (matplotlib, Agg backend): training curves, confusion matrix, accuracy against latency."""

from __future__ import annotations

import functools
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


@_literal_text
def pareto_plot(points: list[dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy against p50 latency, one panel per device; marker area by file size, frontier drawn.

    Each point: device, label, latency_ms, top1 (fraction), size_mb, frontier (bool), recommended (bool).
    """
    plt = _pyplot()
    devices = list(dict.fromkeys(p["device"] for p in points))
    fig, axes = plt.subplots(1, len(devices), figsize=(6.2 * len(devices), 4.6), squeeze=False)
    biggest = max((p["size_mb"] or 0 for p in points), default=1) or 1
    for ax, device in zip(axes[0], devices):
        mine = [p for p in points if p["device"] == device]
        for p in mine:
            area = 40 + 600 * (p["size_mb"] or 0) / biggest
            ax.scatter(
                p["latency_ms"],
                p["top1"] * 100,
                s=area,
                alpha=0.6,
                edgecolors="red" if p.get("recommended") else "black",
                linewidths=2 if p.get("recommended") else 0.5,
            )
            ax.annotate(
                p["label"], (p["latency_ms"], p["top1"] * 100), textcoords="offset points", xytext=(6, 4), fontsize=8
            )
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
        ax.set_xscale("log")
        from matplotlib import ticker

        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.margins(x=0.12, y=0.15)
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("p50 latency (ms, log scale)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(device, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title + " (marker area: file size; red edge: recommended)")
    _save(fig, path)
