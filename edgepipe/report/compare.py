"""Compare two results files: a Markdown table of changes and threshold gates for CI.

Records are matched by (format, threads, batch size). Latency regressions are
relative (``p50`` 10% slower); accuracy drops are in top-1 percentage points.
Results from different devices or engine versions are flagged, and refused
under ``strict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from edgepipe.errors import EdgepipeError

PERCENTILES = ("p50", "p90", "p95", "p99")


@dataclass
class Comparison:
    table: str
    violations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _key(record: dict[str, Any]) -> tuple:
    return record["format"], record.get("device") or "cpu", record.get("threads"), record.get("batch_size")


def _environment_differences(current: dict, baseline: dict) -> list[str]:
    notes = []
    for key in ("cpu_model", "machine", "usable_cores", "board_model"):
        a, b = current.get("device", {}).get(key), baseline.get("device", {}).get(key)
        if a != b:
            notes.append(f"device {key} differs: {a!r} now, {b!r} in the baseline")
    engines_now, engines_base = {}, {}
    for results, target in ((current, engines_now), (baseline, engines_base)):
        for record in results.get("records", []):
            target.update(record.get("runtime_versions") or {})
    for engine in sorted(set(engines_now) & set(engines_base)):
        if engines_now[engine] != engines_base[engine]:
            notes.append(f"{engine} {engines_now[engine]} now, {engines_base[engine]} in the baseline")
    return notes


def compare(current: dict, baseline: dict, max_latency_regression: Optional[float] = None,
            max_accuracy_drop_pp: Optional[float] = None, percentiles: tuple[str, ...] = ("p50",),
            strict: bool = False) -> Comparison:
    """Changes from ``baseline`` to ``current``; violations name each threshold crossed.

    ``max_latency_regression`` is a fraction (0.10 = 10% slower allowed).
    """
    warnings = _environment_differences(current, baseline)
    if warnings and strict:
        raise EdgepipeError("results come from different devices or engine versions: " + "; ".join(warnings),
                            "Compare results from the same device and engines, or drop --strict to compare with a warning.")
    base = {_key(r): r for r in baseline.get("records", []) if r.get("latency_ms")}
    rows = ["| artifact | device | threads | batch | top-1 now (%) | top-1 baseline (%) | Δ top-1 (pp) | "
            + " | ".join(f"{p} now (ms) | {p} baseline (ms) | Δ {p}" for p in percentiles) + " |",
            "|---|---|--:|--:|--:|--:|--:|" + "--:|--:|--:|" * len(percentiles)]
    violations: list[str] = []
    for record in current.get("records", []):
        key = _key(record)
        if not record.get("latency_ms"):
            continue
        old = base.get(key)
        if old is None:
            warnings.append(f"{key[0]} ({key[1]}, threads {key[2]}, batch {key[3]}) has no baseline")
            continue
        cells = [f"`{key[0]}`", key[1], str(key[2]), str(key[3])]
        now_top1, old_top1 = record.get("top1"), old.get("top1")
        drop = None if now_top1 is None or old_top1 is None else (old_top1 - now_top1) * 100
        cells += [_pct(now_top1), _pct(old_top1), "–" if drop is None else f"{-drop:+.2f}"]
        if max_accuracy_drop_pp is not None and drop is not None and drop > max_accuracy_drop_pp:
            violations.append(f"{key[0]}: top-1 dropped {drop:.2f} pp (limit {max_accuracy_drop_pp} pp)")
        for p in percentiles:
            now, then = record["latency_ms"][p], old["latency_ms"][p]
            change = now / then - 1
            cells += [f"{now:.3f}", f"{then:.3f}", f"{change:+.1%}"]
            if max_latency_regression is not None and change > max_latency_regression:
                violations.append(f"{key[0]}: {p} latency {change:+.1%} ({then:.3f} -> {now:.3f} ms; "
                                  f"limit +{max_latency_regression:.0%})")
        rows.append("| " + " | ".join(cells) + " |")
    return Comparison("\n".join(rows), violations, warnings)


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{value * 100:.2f}"


def parse_fraction(text: str) -> float:
    """'10%' or '0.1' -> 0.1."""
    text = text.strip()
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise EdgepipeError(f"'{text}' is not a percentage", "Write it like 10% or 0.1.") from None
