"""The run report's Pareto plot stays legible with close points: numbered points whose numbers never overlap,
each with its bootstrap accuracy interval, on a top-1 axis that does not magnify a one-image difference."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from edgepipe.report import plots


def _close_points(n: int, devices=("board A",)) -> list[dict]:
    """``n`` artifacts per device, all but one within 0.4 pp and 10% of latency of each other."""
    rng = np.random.default_rng(1)
    points = []
    for device in devices:
        for i in range(n):
            # the last one far slower and less accurate: the axes span it, and the others crowd together
            top1 = 0.95 + rng.random() * 0.004 if i < n - 1 else 0.85
            points.append(
                {
                    "device": device,
                    "label": f"format-{i} [engine-{i % 3}]",
                    "latency_ms": 1 + rng.random() * 0.1 if i < n - 1 else 4.0,
                    "top1": top1,
                    "top1_interval": [top1 * 100 - 2.5, min(top1 * 100 + 2.0, 100.0)],
                    "size_mb": 1 + rng.random() * 4,
                    "frontier": i % 2 == 0,
                    "recommended": i == 3,
                }
            )
    return points


@pytest.fixture
def drawn(monkeypatch):
    """The figures pareto_plot saves, each with the renderer that drew it (the file is written too)."""
    figures = []
    save = plots._save

    def keep(fig, path):
        fig.canvas.draw()  # measured as drawn, before saving closes the figure and drops its canvas
        figures.append((fig, fig.canvas.get_renderer()))
        save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def _overlapping(boxes) -> list:
    return [(a, b) for a, b in combinations(boxes, 2) if a.overlaps(b)]


@pytest.mark.parametrize("devices", [("board A",), ("board A", "board B")])
def test_close_points_get_numbers_that_never_overlap_and_their_intervals(tmp_path, drawn, devices):
    from matplotlib.collections import LineCollection

    points = _close_points(10, devices)
    plots.pareto_plot(points, tmp_path / "pareto.png", "close artifacts")
    assert plots.is_edgepipe_png(tmp_path / "pareto.png")
    ((fig, renderer),) = drawn
    for ax, device in zip(fig.axes, devices):
        mine = [p for p in points if p["device"] == device]
        numbers = [t for t in ax.texts if t.get_text().isdigit()]
        assert sorted(int(t.get_text()) for t in numbers) == list(range(1, 11))  # one number per label
        boxes = [t.get_window_extent(renderer) for t in numbers]
        assert not _overlapping(boxes)
        # no number covers a marker's centre
        centres = [ax.transData.transform((p["latency_ms"], p["top1"] * 100)) for p in mine]
        assert not [(b, c) for b in boxes for c in centres if b.contains(*c)]
        # each point's 95% interval drawn as a vertical bar from its low to its high end
        bars = [
            seg
            for c in ax.collections
            if isinstance(c, LineCollection)
            for seg in c.get_segments()
            if len(seg) == 2 and seg[0][0] == seg[1][0]
        ]
        spans = sorted((round(min(s[:, 1]), 6), round(max(s[:, 1]), 6)) for s in bars)
        assert spans == sorted((round(p["top1_interval"][0], 6), round(p["top1_interval"][1], 6)) for p in mine)
        low, high = ax.get_ylim()
        assert high - low >= plots.MIN_SPAN_PP  # 0.8 pp apart does not fill the axis
    legend = "\n".join(t.get_text() for t in fig.texts)
    assert all(f"{n:>2}  format-{n - 1} [engine-{(n - 1) % 3}]" in legend for n in range(1, 11))


def test_the_report_rows_carry_each_artifacts_bootstrap_interval(tiny_run):
    from edgepipe.report.table import analyse, pareto_points
    from edgepipe.results import read_results
    from edgepipe.significance import top1_interval

    results = read_results(tiny_run.results)
    labels = np.asarray(results.heldout["labels"])
    points = pareto_points(analyse(results)[0])
    assert points and all(p["top1_interval"] for p in points)
    for p, record in zip(points, (r for r in results.records if r.usable and r.top1 is not None)):
        low, high = p["top1_interval"]
        assert low <= p["top1"] * 100 <= high
        assert [low, high] == top1_interval(np.asarray(record.predictions) == labels)[1]
