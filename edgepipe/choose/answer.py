"""A search's answer: one row per candidate and artifact, the winner, and the table that shows them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepipe.choose.budgets import Budgets

#: a row's status, in the order a reader meets them
SKIPPED, FAILED, OVER_BUDGET, CANNOT_WIN, BELOW_TOP1, WITHIN, WINNER = (
    "skipped",
    "failed",
    "over budget",
    "cannot win",
    "below min top-1",
    "within budgets",
    "winner",
)


@dataclass
class Row:
    """One artifact of one candidate (or the candidate alone when it was skipped before any artifact): counted
    and measured figures (ms per image at batch 1, MB), top-1 in percent on the validation split with its 95%
    bootstrap interval, where that top-1 comes from, and its status with the reason."""

    candidate: str
    arch: str
    alpha: float | None
    input_size: int
    weights: str
    format: str | None
    status: str
    reason: str | None = None
    params: int | None = None
    macs: int | None = None
    size_mb: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    #: latency at the budget's percentile
    latency_ms: float | None = None
    peak_memory_mb: float | None = None
    top1: float | None = None
    top1_interval: list[float] | None = None
    #: "Keras FP32" (the trained model; FP32 artifacts compute the same) or "artifact" (the exported file run)
    top1_source: str | None = None
    #: the latency figures came from the measurement cache
    cached: bool = False
    number: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        width = f" a{self.alpha:g}" if self.alpha is not None else ""
        return f"{self.arch}{width} {self.input_size}px {self.format or ''}".strip()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class SearchResult:
    """What ``edgepipe.search`` found: every row, the budgets, the winner (None when no artifact met them) and
    its run directory, with the winner's top-1 on the reporting split (test unless the data had none)."""

    path: Path
    rows: list[Row]
    budgets: Budgets
    winner: Row | None
    winner_run: Path | None
    #: the winner's run: {"top1", "split", "images", "carved", "took_part_in_choices", "p50_ms", ...}
    winner_measured: dict[str, Any]
    conditions: str
    table: str
    plot: Path | None

    @property
    def record(self) -> Path:
        return self.path / "search.json"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "budgets": self.budgets.to_dict(),
            "conditions": self.conditions,
            "winner": self.winner.to_dict() if self.winner else None,
            "winner_run": str(self.winner_run) if self.winner_run else None,
            "winner_measured": self.winner_measured,
            "plot": str(self.plot) if self.plot else None,
            "rows": [r.to_dict() for r in self.rows],
        }


def choose_winner(rows: list[Row]) -> Row | None:
    """The most accurate row within every budget (validation top-1); ties go to the faster, then the smaller."""
    eligible = [r for r in rows if r.status in (WITHIN, WINNER)]
    if not eligible:
        return None
    return max(eligible, key=lambda r: (r.top1, -(r.latency_ms or 0), -(r.size_mb or 0)))


def _num(value: Any, spec: str, scale: float = 1.0) -> str:
    return "–" if value is None else f"{value / scale:{spec}}"


COLUMNS = (
    ("#", 3, ">"),
    ("candidate", 30, "<"),
    ("format", 14, "<"),
    ("params M", 8, ">"),
    ("MACs M", 8, ">"),
    ("size MB", 7, ">"),
    ("top-1 %", 7, ">"),
    ("95% interval", 13, ">"),
    ("p50 ms", 8, ">"),
    ("p90 ms", 8, ">"),
    ("peak MB", 7, ">"),
    ("status", 0, "<"),
)


def _cells(r: Row) -> list[str]:
    interval = "–" if not r.top1_interval else f"{r.top1_interval[0]:.1f}-{r.top1_interval[1]:.1f}"
    status = r.status + (f": {r.reason}" if r.reason else "") + (f" ({r.extra['note']})" if r.extra.get("note") else "")
    weights = "" if r.weights in ("imagenet",) else f" [{'random' if r.weights == 'none' else Path(r.weights).name}]"
    return [
        str(r.number or ""),
        r.label.rsplit(" ", 1)[0] + weights if r.format else r.label + weights,
        r.format or "–",
        _num(r.params, ".2f", 1e6),
        _num(r.macs, ".1f", 1e6),
        _num(r.size_mb, ".2f"),
        _num(r.top1, ".1f"),
        interval,
        _num(r.p50_ms, ".3f"),
        _num(r.p90_ms, ".3f"),
        _num(r.peak_memory_mb, ".0f"),
        status,
    ]


def render_table(result: SearchResult) -> str:
    """The table (one line per candidate and artifact, numbered as in the plot), the budgets and the answer."""

    def fmt(cells: list[str]) -> str:
        return " ".join(f"{c:{align}{width}}" for c, (_, width, align) in zip(cells, COLUMNS)).rstrip()

    header = fmt([name for name, _, _ in COLUMNS])
    lines = [header, "-" * len(header)] + [fmt(_cells(r)) for r in result.rows]
    lines += [
        "",
        f"budgets: {result.budgets.describe()}",
        f"latency: {result.conditions}",
        "top-1 %: on the validation split (every choice is made there), with its 95% bootstrap interval over "
        "images; FP32 artifacts take the trained Keras model's top-1 (they compute the same), other precisions "
        "their own file's. params/MACs: counted on the network; size, p50/p90 and peak memory: measured on the "
        "artifact of the network as built (its initial weights, the head not yet trained).",
        "",
        answer_text(result),
    ]
    return "\n".join(lines)


def answer_text(result: SearchResult) -> str:
    """The answer in a few lines: the winner and its honest top-1, or why there is none."""
    w = result.winner
    if w is None:
        return "answer: no artifact meets every budget (see the reasons above)"
    lines = [
        f"answer: #{w.number} {w.label} (weights {w.weights}): validation top-1 {w.top1:.1f}%, "
        f"{result.budgets.percentile} {_num(w.latency_ms, '.3f')} ms, {_num(w.size_mb, '.2f')} MB"
    ]
    m = result.winner_measured
    if m.get("top1") is not None:
        where = (
            f"the {m['split']} split ({m['images']} images"
            + (", held out of the training images" if m.get("carved") else "")
            + ")"
        )
        honest = (
            "which took part in no choice"
            if not m.get("took_part_in_choices")
            else "which ALSO made the choices (the data has no test split), so it is optimistic"
        )
        lines.append(f"  its top-1 on {where}, {honest}: {m['top1'] * 100:.1f}%")
    if m.get("p50_ms") is not None:
        lines.append(
            f"  re-measured in its run: p50 {m['p50_ms']:.3f} ms, p90 {m['p90_ms']:.3f} ms"
            + (f" ({m['budget_note']})" if m.get("budget_note") else "")
        )
    if result.winner_run is not None:
        lines.append(f"  run directory: {result.winner_run} (edgepipe report/verify/compare work on it)")
    return "\n".join(lines)
