"""The report's "Where the time goes": per profiled artifact, the top ops with their share, time per op
type, float islands, MACs and GMAC/s per layer and a one-line diagnosis; INT8 against FP32 per op family.

Sections are plain data (lines and tables of text cells); the Markdown and HTML reports render them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgepipe.profiles import Profile, diagnosis, float_ops, int8_against_fp32, share, time_by, top_ops

TOP_OPS = 10
TOP_LAYERS = 10


@dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)


@dataclass
class Section:
    title: str
    lines: list[str]
    tables: list[Table] = field(default_factory=list)


def _ms(value: float) -> str:
    return f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _flags(op) -> str:
    marks = []
    if op.kept_float:
        marks.append("kept in float")
    if op.float_island:
        marks.append("float island")
    if op.delegated is False:
        marks.append(f"outside the delegate ({op.placement})" if op.placement else "reference kernel")
    return ", ".join(marks) or "–"


def title(profile: Profile) -> str:
    return (
        f"{Path(profile.artifact).name} [{profile.engine}, {profile.device}, {profile.threads} thread(s), "
        f"batch {profile.batch_size}]"
    )


def summary(profile: Profile) -> list[str]:
    """The lines above a profile's tables: what profiled it, how its op times add up, the diagnosis."""
    if profile.status != "ok":
        return [f"not profiled ({profile.status}): {profile.reason}"]
    lines = [
        f"Profiler: {profile.profiler}; {profile.calls} calls after warm-up, in a session of its own after timing.",
        f"Per-op times add up to {_ms(profile.op_ms)} ms per call; the profiled call took {_ms(profile.wall_ms or 0)} ms "
        f"(fastest profiled call, profiler on): {profile.op_ms / profile.wall_ms:.0%} of it in ops."
        if profile.wall_ms
        else f"Per-op times add up to {_ms(profile.op_ms)} ms per call.",
    ]
    found = diagnosis(profile)
    if found:
        lines.append(f"**Diagnosis: {found}.**")
    if profile.peak:
        lines.append(f"Peak for GMAC/s: {profile.peak['gmacs_per_s']:.0f} GMAC/s ({profile.peak['basis']}).")
    return lines + list(profile.notes)


def tables(profile: Profile) -> list[Table]:
    """Top ops, time per op type, float islands and per-layer figures of one profile (only those it has)."""
    if profile.status != "ok":
        return []
    out = [
        Table(
            f"Top {TOP_OPS} ops by time",
            ["op", "type", "kernel", "precision", "layer", "ms", "share", "notes"],
            [
                [
                    op.name,
                    op.op_type,
                    op.kernel or "–",
                    op.precision or "–",
                    op.layer or "–",
                    _ms(op.time_ms),
                    _pct(share(op.time_ms, profile)),
                    _flags(op),
                ]
                for op in top_ops(profile, TOP_OPS)
            ],
            {5, 6},
        ),
        Table(
            "Time per op type",
            ["op type", "ops", "ms", "share"],
            [
                [kind, str(count), _ms(ms), _pct(share(ms, profile))]
                for kind, ms, count in time_by(profile, lambda op: op.op_type)
            ],
            {1, 2, 3},
        ),
    ]
    floats = float_ops(profile)
    if floats:
        out.append(
            Table(
                "Ops computing in float in this INT8 artifact",
                ["op", "type", "kernel", "ms", "share", "notes"],
                [
                    [
                        op.name,
                        op.op_type,
                        op.kernel or "–",
                        _ms(op.time_ms),
                        _pct(share(op.time_ms, profile)),
                        _flags(op),
                    ]
                    for op in floats
                ],
                {3, 4},
            )
        )
    layers = sorted((row for row in profile.layers if row["time_ms"] > 0), key=lambda row: -row["time_ms"])[:TOP_LAYERS]
    if layers:
        out.append(
            Table(
                "Layers of the source network (MACs per image)",
                ["layer", "kind", "MMACs", "ms", "GMAC/s", "of peak"],
                [
                    [
                        row["layer"],
                        str(row.get("kind") or "–"),
                        f"{row['macs'] / 1e6:.2f}",
                        _ms(row["time_ms"]),
                        "–" if row.get("gmacs_per_s") is None else f"{row['gmacs_per_s']:.1f}",
                        _pct(row.get("fraction_of_peak")),
                    ]
                    for row in layers
                ],
                {2, 3, 4, 5},
            )
        )
    return out


def sections(profiles: list[Profile]) -> list[Section]:
    """One section per profile, then INT8 against FP32 per op family where an engine profiled both."""
    out = [Section(title(p), summary(p), tables(p)) for p in profiles]
    pairs = int8_against_fp32(profiles)
    if pairs:
        rows = [
            [engine, kind, _ms(int8), _ms(fp32), "–" if not (int8 and fp32) else f"{fp32 / int8:.2f}x"]
            for engine, kind, int8, fp32 in pairs
        ]
        out.append(
            Section(
                "INT8 against FP32 per op family",
                ["Per-op time summed by op family, same engine, threads and batch; speed-up = FP32 / INT8."],
                [Table("", ["engine", "op family", "INT8 ms", "FP32 ms", "speed-up"], rows, {2, 3, 4})],
            )
        )
    return out


INTRO = (
    "Each measured artifact profiled per op by its engine's own profiler, after timing, in a session of its own "
    "(the timed numbers above are taken with no profiler on). Float islands: ops of an INT8 artifact that "
    "compute in float between a dequantize and a quantize."
)


def console_lines(profile: Profile) -> list[str]:
    """A profile for the terminal: title, summary and the top ops."""
    lines = [title(profile), *(f"  {line.replace('**', '')}" for line in summary(profile))]
    for table in tables(profile)[:1]:
        lines.append(f"  {table.caption}:")
        lines += [
            f"    {row[5]:>8} ms {row[6]:>6}  {row[0]} ({row[1]}, {row[2]}, {row[3]})"
            + (f"  [{row[7]}]" if row[7] != "–" else "")
            for row in table.rows
        ]
    return lines
