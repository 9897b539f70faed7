"""The measured architecture table: each architecture's cost on a device, beside its published ImageNet figures."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgepipe.choose.measure import (
    WEIGHTS,
    Conditions,
    Echo,
    Measurement,
    MeasurementCache,
    Network,
    Target,
    measure,
    needs_measuring,
)

#: the default set of ``edgepipe models --measure``: architectures with at most this many parameters by their
#: published count (the mobile-sized networks; VGG16 alone at 224 px takes minutes on two cores)
DEFAULT_MAX_PARAMS = 6_000_000


def default_architectures() -> list[str]:
    """Every registry architecture whose published parameter count is at most DEFAULT_MAX_PARAMS."""
    from edgepipe.architectures.base import ARCHITECTURES

    return [
        name
        for name, arch in ARCHITECTURES
        if arch.reference.params is not None and arch.reference.params <= DEFAULT_MAX_PARAMS
    ]


def resolve_architectures(names: Sequence[str] | None) -> list[str]:
    """Canonical registry names for ``names`` (``all``: every architecture; None: the default set), without
    repeats; EdgepipeError naming the first unknown one."""
    from edgepipe.architectures.base import ARCHITECTURES

    if not names:
        return default_architectures()
    out: list[str] = []
    for name in names:
        chosen = ARCHITECTURES.names() if name == "all" else [ARCHITECTURES.canonical(name)]
        out += [n for n in chosen if n not in out]
    return out


@dataclass
class Catalogue:
    """Measured rows (one per architecture and format, in request order) and the conditions they share."""

    rows: list[Measurement]
    conditions: Conditions
    target: str
    remote: str | None = None

    @property
    def caveat(self) -> str:
        return (
            f"measured on {self.target}: {self.conditions.describe()}; edgepipe's classifier (in-model "
            "preprocessing, backbone, global pooling, dense head of the published class count)"
        )

    def to_dict(self) -> dict[str, Any]:
        from edgepipe.architectures import get_architecture

        return {
            "device": self.target,
            "remote": self.remote,
            "weights": WEIGHTS,
            "conditions": {**dataclasses.asdict(self.conditions), "description": self.caveat},
            "units": {
                "p50_ms": "ms per image, wall clock per call",
                "p90_ms": "ms per image, wall clock per call",
                "size_mb": "MB (10^6 bytes) of the artifact",
                "peak_memory_mb": "MB resident at the peak of a fresh process running the artifact",
            },
            "rows": [{**r.to_dict(), "published": get_architecture(r.arch).reference.as_dict()} for r in self.rows],
        }


def measure_catalogue(
    architectures: Sequence[str],
    formats: Sequence[str],
    conditions: Conditions,
    target: Target,
    cache: MeasurementCache,
    *,
    input_size: int | None = None,
    force: bool = False,
    echo: Echo = print,
) -> Catalogue:
    """Measure each architecture (default width, ``input_size`` or its own) in every format, one line of progress
    per architecture; see ``edgepipe.choose.measure.measure``."""
    from edgepipe.choose.exports import Exports
    from edgepipe.pipeline.sequence import only_new_objects_collected

    networks = [Network.of(name, input_size=input_size) for name in architectures]
    todo = [n for n in networks if needs_measuring(n, formats, conditions, target, cache, force=force)]
    rows: list[Measurement] = []
    # TensorFlow is imported (and its heap set aside) only when something is measured: a cached table prints at once
    heap = only_new_objects_collected() if todo else contextlib.nullcontext()
    with heap, Exports(list(formats), conditions, echo) as exports:
        exports.run(todo)
        for i, network in enumerate(networks, 1):
            echo(f"[{i}/{len(architectures)}] {network.label}")
            measured = measure(network, formats, conditions, target, cache, force=force, echo=echo, exports=exports)
            cached = sum(m.cached for m in measured)
            echo(
                f"[{i}/{len(architectures)}] {network.arch}: "
                + (f"{cached} format(s) from the cache, " if cached else "")
                + f"{len(measured) - cached} measured now"
            )
            rows += measured
    measured_on = sorted({r.device for r in rows if r.p50_ms is not None})
    return Catalogue(rows, conditions, "; ".join(measured_on) or target.name, target.remote)


def _num(value: Any, scale: float = 1.0, spec: str = ".1f") -> str:
    return "–" if value is None else f"{value / scale:{spec}}"


COLUMNS = (
    ("name", 20, "<"),
    ("alpha", 5, ">"),
    ("input", 5, ">"),
    ("params M", 8, ">"),
    ("MACs M", 8, ">"),
    ("top-1 %", 7, ">"),
    ("top-5 %", 7, ">"),
    ("format", 14, "<"),
    ("p50 ms", 8, ">"),
    ("p90 ms", 8, ">"),
    ("size MB", 8, ">"),
    ("peak MB", 7, ">"),
    ("", 0, "<"),
)


def _cells(r: Measurement, first: bool) -> list[str]:
    from edgepipe.architectures import get_architecture

    ref = get_architecture(r.arch).reference
    width = "–" if r.alpha is None else str(r.alpha)
    network = (
        [
            r.arch,
            width,
            str(r.input_size),
            _num(r.params, 1e6, ".2f"),
            _num(r.macs, 1e6, ".1f"),
            _num(ref.top1),
            _num(ref.top5),
        ]
        if first
        else [""] * 7
    )
    if r.p50_ms is None:
        return network + [r.format, "", "", "", "", f"{r.status}: {r.reason}"]
    return network + [
        r.format,
        _num(r.p50_ms, 1, ".3f"),
        _num(r.p90_ms, 1, ".3f"),
        _num(r.size_mb, 1, ".2f"),
        _num(r.peak_memory_mb, 1, ".0f"),
        "cached" if r.cached else "",
    ]


def render_table(catalogue: Catalogue) -> str:
    """The table: one line per architecture and format, the architecture's figures on its first line."""

    def fmt(cells: list[str]) -> str:
        return " ".join(f"{c:{align}{width}}" for c, (_, width, align) in zip(cells, COLUMNS)).rstrip()

    header = fmt([name for name, _, _ in COLUMNS])
    lines = [header, "-" * len(header)]
    previous = None
    for r in catalogue.rows:
        lines.append(fmt(_cells(r, (r.arch, r.input_size) != previous)))
        previous = (r.arch, r.input_size)
    lines += [
        "",
        f"{catalogue.caveat}.",
        "p50/p90 ms: wall-clock milliseconds per image at batch 1 (the bench harness, all formats of one network in "
        "interleaved rounds); size MB: the artifact file; peak MB: peak resident memory of a fresh process running "
        "it (engine and Python included); params and MACs: counted on the network measured. top-1/top-5: published "
        "ImageNet figures of the architecture (sources in --json), not measured here. 'cached': from an earlier "
        "measurement on this device with the same engine versions (--force measures again).",
    ]
    return "\n".join(lines)


CSV_FIELDS = (
    "arch",
    "alpha",
    "input_size",
    "classes",
    "params",
    "macs",
    "published_top1",
    "published_top5",
    "format",
    "status",
    "reason",
    "p50_ms",
    "p90_ms",
    "size_mb",
    "peak_memory_mb",
    "threads",
    "device",
    "engine",
    "cached",
    "measured_at",
)


def render_csv(catalogue: Catalogue) -> str:
    """The rows as CSV (units in the column names' documentation: ms, MB), one per architecture and format."""
    from edgepipe.architectures import get_architecture

    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in catalogue.rows:
        ref = get_architecture(r.arch).reference
        writer.writerow(
            {**r.to_dict(), "status": r.status.value, "published_top1": ref.top1, "published_top5": ref.top5}
        )
    return out.getvalue()
