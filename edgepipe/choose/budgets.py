"""A search's budgets: latency (at a percentile), file size, peak memory and the least top-1 the answer may have."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from edgepipe.errors import EdgepipeError

PERCENTILES = ("p50", "p90", "p95", "p99")


@dataclass(frozen=True)
class Budgets:
    """Limits every artifact of the answer keeps: ms at ``percentile`` per image, MB of file, MB resident at the
    peak, and top-1 in percent on the validation split. None: no limit."""

    max_latency_ms: float | None = None
    percentile: str = "p50"
    max_size_mb: float | None = None
    max_memory_mb: float | None = None
    min_top1: float | None = None

    def check(self) -> Budgets:
        """Itself, or a one-line EdgepipeError for a budget that is not a finite positive number (top-1: 0-100)."""
        if self.percentile not in PERCENTILES:
            raise EdgepipeError(f"unknown percentile '{self.percentile}'", "Use " + ", ".join(PERCENTILES) + ".")
        for flag, value in (
            ("--max-latency-ms", self.max_latency_ms),
            ("--max-size-mb", self.max_size_mb),
            ("--max-memory-mb", self.max_memory_mb),
            ("--min-top1", self.min_top1),
        ):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise EdgepipeError(f"{flag} must be a finite number, got {value!r}", f"e.g. {flag} 5")
            if value < 0 or (value == 0 and flag != "--min-top1"):
                raise EdgepipeError(
                    f"{flag} must be above 0, got {value:g}",
                    "A budget no artifact can meet leaves nothing to choose from.",
                )
        if self.min_top1 is not None and self.min_top1 > 100:
            raise EdgepipeError(f"--min-top1 is a percentage (0-100), got {self.min_top1:g}", "e.g. --min-top1 90")
        return self

    def cost_violations(self, latency_ms: float | None, size_mb: float | None, memory_mb: float | None) -> list[str]:
        """Why an artifact with these figures cannot meet the budgets (empty: it can); a figure that was not
        measured fails its budget (a gate fails closed)."""
        out = []
        for name, value, limit, unit in (
            ("latency " + self.percentile, latency_ms, self.max_latency_ms, "ms"),
            ("size", size_mb, self.max_size_mb, "MB"),
            ("peak memory", memory_mb, self.max_memory_mb, "MB"),
        ):
            if limit is None:
                continue
            if value is None:
                out.append(f"{name} not measured (budget {limit:g} {unit})")
            elif value > limit:
                out.append(f"{name} {value:.3g} {unit} > {limit:g} {unit}")
        return out

    def top1_violation(self, top1_percent: float | None) -> str | None:
        if self.min_top1 is None or (top1_percent is not None and top1_percent >= self.min_top1):
            return None
        return f"top-1 {top1_percent:.1f}% < {self.min_top1:g}%" if top1_percent is not None else "top-1 not measured"

    def describe(self) -> str:
        parts = [
            f"latency {self.percentile} <= {self.max_latency_ms:g} ms" if self.max_latency_ms is not None else None,
            f"size <= {self.max_size_mb:g} MB" if self.max_size_mb is not None else None,
            f"peak memory <= {self.max_memory_mb:g} MB" if self.max_memory_mb is not None else None,
            f"top-1 >= {self.min_top1:g}% (validation)" if self.min_top1 is not None else None,
        ]
        return ", ".join(p for p in parts if p) or "no budget (the most accurate artifact)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
