"""Per-op profiles through the Runner interface, after timing, joined to what edgepipe knows.

The profiler never runs inside timed rounds: ``Runner.profile`` opens a session or compiled model of
its own with the engine's profiler on, after the artifact's latency was measured. An engine that offers
no profiler gives a 'skipped' profile with its reason, one that fails a 'failed' profile: nothing is
left out silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from edgepipe.backends.runner import Runner
from edgepipe.errors import EdgepipeError, error_line
from edgepipe.harness.latency import efficiency, runner_batches
from edgepipe.profiles import COMPUTE, OpTime, Profile, layer_of, mark_float_islands

#: profiled calls per op, after the engine's own warm-up calls (an op's time is its median or mean over them)
PROFILED_CALLS = 20


def profile_runner(
    runner: Runner,
    images: np.ndarray,
    base: Profile,
    *,
    calls: int = PROFILED_CALLS,
    layers: list[dict[str, Any]] | None = None,
    kept_float: Iterable[str] = (),
    peak: dict[str, Any] | None = None,
) -> Profile:
    """The profile of an active runner on a batch of ``images`` (``base`` says what was profiled, its
    batch size included), joined with ``layers``, ``kept_float`` and ``peak`` (see :func:`join`)."""
    batch = runner_batches(runner, images, base.batch_size or 1)[0]
    try:
        measured = runner.profile(batch, calls)
    except EdgepipeError as exc:  # ProfilingUnavailable, or a missing package or device
        base.status, base.reason = "skipped", str(exc)
        return base
    except Exception as exc:  # a profiler that cannot run this artifact: a failed profile, with the reason
        base.status, base.reason = "failed", error_line(exc)
        return base
    base.profiler, base.calls, base.wall_ms = measured.profiler, measured.calls, measured.wall_ms
    base.ops, base.notes = measured.ops, list(measured.notes)
    join(base, layers=layers, kept_float=kept_float, peak=peak)
    if base.consistent is False:
        base.notes.append(
            f"per-op times add up to {base.op_ms:.3f} ms against {base.wall_ms:.3f} ms of wall time "
            "per profiled call: outside the expected range, read the shares with care"
        )
    return base


def _kept(op: OpTime, kept: list[str], kept_layers: set[str]) -> bool:
    names = {op.name, *op.aliases, *(c for n in (op.name, *op.aliases) for c in n.split(";"))}
    return bool(names & set(kept)) or (op.layer is not None and op.layer in kept_layers and op.role == COMPUTE)


def join(
    profile: Profile,
    *,
    layers: list[dict[str, Any]] | None = None,
    kept_float: Iterable[str] = (),
    peak: dict[str, Any] | None = None,
) -> Profile:
    """Add to ``profile`` (in place, and returned) the source layer of each op, per-layer MACs and achieved
    GMAC/s against ``peak`` (``layers``: rows of edgepipe.architectures.compute.count, name/kind/macs per
    image), the float islands of an INT8 artifact and the ops ``kept_float`` names (with their layers' ops)."""
    names = [layer["name"].rsplit("/", 1)[-1] for layer in layers or []]
    for op in profile.ops:
        op.layer = layer_of([op.name, *op.aliases], names) if names else None
    if profile.integer:
        mark_float_islands(profile.ops)
    profile.kept_float = list(kept_float)
    kept_layers = ({layer_of([k], names) for k in profile.kept_float} - {None}) if names else set()
    for op in profile.ops:
        op.kept_float = _kept(op, profile.kept_float, kept_layers)
    profile.peak = peak
    profile.layers = [
        row
        for layer, name in zip(layers or [], names)
        if (row := _layer_row(profile, layer, name, peak))["time_ms"] > 0 or row["macs"]
    ]
    return profile


def _layer_row(profile: Profile, layer: dict[str, Any], name: str, peak: dict[str, Any] | None) -> dict[str, Any]:
    time_ms = sum(op.time_ms for op in profile.ops if op.layer == name)
    row: dict[str, Any] = {"layer": name, "kind": layer.get("kind"), "macs": layer.get("macs") or 0, "time_ms": time_ms}
    if time_ms > 0 and row["macs"]:
        figures = efficiency(row["macs"], profile.batch_size or 1, time_ms, peak)
        row.update(gmacs_per_s=figures["gmacs_per_s"], fraction_of_peak=figures.get("fraction_of_peak"))
    return row
