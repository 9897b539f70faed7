"""Per-op profiles of an artifact, from its engine's own profiler, and what edgepipe joins to them.

An engine's runner takes the profile (``Runner.profile``) in a session of its own, never in the
timed one, and returns an :class:`EngineProfile`: one :class:`OpTime` per op the engine ran, with
the kernel it chose, the precision it computed in and where it ran. ``edgepipe.harness.profile`` then
joins what edgepipe knows: the source layer of each op where the names allow, MACs and achieved GMAC/s per
layer against the CPU's estimated peak, the float islands of an INT8 artifact, and the ops the
INT8 budget kept in float. :class:`Profile` is the typed record written to results.json.

This module knows no engine: engines describe each op by its *role* (quantize, dequantize, data
movement or compute) and *precision*, and the rules here only read those.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edgepipe.errors import EdgepipeError

#: op roles an engine assigns
QUANTIZE, DEQUANTIZE, DATA, COMPUTE = "quantize", "dequantize", "data", "compute"
#: precisions whose arithmetic is integer, as engines report them
INTEGER = ("int8", "uint8", "int16", "int32")
#: what a profile's per-op times must add up to, as a fraction of the wall time of the profiled calls: below,
#: ops were missed (or the call is mostly overhead outside the ops); above, ops were counted twice
CONSISTENT_RANGE = (0.3, 1.5)


class ProfilingUnavailable(EdgepipeError):
    """The engine offers edgepipe no per-op profiler here (the profile record says why)."""


@dataclass
class OpTime:
    """One op as the engine ran it: its median time over the profiled calls and how it ran."""

    name: str
    op_type: str
    time_ms: float
    #: the kernel the engine chose (OpenVINO's exec_type, an XNNPACK operator, ONNX Runtime's provider kernel)
    kernel: str | None = None
    #: the precision it computed in, as the engine reports it (int8, fp32, bf16...); None when it does not say
    precision: str | None = None
    #: where it ran (an execution provider, a delegate, the engine's built-in kernels)
    placement: str | None = None
    #: False when it ran outside the accelerator or delegate the engine was set up with
    delegated: bool | None = None
    role: str = COMPUTE
    #: the source network's layer, where the names allow
    layer: str | None = None
    #: computes in float between a dequantize and a quantize of an INT8 artifact
    float_island: bool = False
    #: kept in float by the INT8 accuracy budget
    kept_float: bool = False
    #: tensor names read and written, for graph rules (not written to results)
    inputs: tuple[str, ...] = field(default=(), repr=False)
    outputs: tuple[str, ...] = field(default=(), repr=False)
    #: other names of the op that may name its source layer (fused nodes, original layers)
    aliases: tuple[str, ...] = field(default=(), repr=False)

    @property
    def is_float(self) -> bool:
        return self.precision is not None and self.precision not in INTEGER

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("inputs", "outputs", "aliases"):
            out.pop(key)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpTime:
        names = {f.name for f in dataclasses.fields(cls)} - {"inputs", "outputs", "aliases"}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class EngineProfile:
    """What a runner's profiler measured: per-op median times over ``calls`` calls, and the wall time of the fastest call."""

    profiler: str
    calls: int
    #: wall time of the fastest profiled call (ms): the one least disturbed by other work on the machine
    wall_ms: float
    ops: list[OpTime]
    notes: list[str] = field(default_factory=list)


@dataclass
class Profile:
    """The profile of one artifact with one engine in one setting, joined to what edgepipe knows.

    ``status`` is 'ok', or 'skipped'/'failed' with ``reason`` (an engine with no profiler here).
    """

    artifact: str
    format: str | None
    precision: str | None
    engine: str | None
    device: str | None
    threads: int | None
    batch_size: int | None
    status: str = "ok"
    reason: str | None = None
    profiler: str | None = None
    calls: int = 0
    #: wall time of the fastest profiled call (ms), profiler on: the per-op times' consistency check
    wall_ms: float | None = None
    ops: list[OpTime] = field(default_factory=list)
    #: per source layer: layer, kind, macs, time_ms, gmacs_per_s, fraction_of_peak
    layers: list[dict[str, Any]] = field(default_factory=list)
    peak: dict[str, Any] | None = None
    kept_float: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def op_ms(self) -> float:
        """Sum of the per-op median times (ms)."""
        return sum(op.time_ms for op in self.ops)

    @property
    def consistent(self) -> bool | None:
        """Whether the per-op times add up to the profiled calls' wall time within CONSISTENT_RANGE."""
        if not self.wall_ms or not self.ops:
            return None
        low, high = CONSISTENT_RANGE
        return low <= self.op_ms / self.wall_ms <= high

    @property
    def integer(self) -> bool:
        return (self.precision or "").startswith("int")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["ops"] = [op.to_dict() for op in self.ops]
        out["op_ms"] = self.op_ms
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["ops"] = [OpTime.from_dict(op) for op in kwargs.get("ops") or []]
        kwargs.setdefault("artifact", "")
        for key in ("format", "precision", "engine", "device", "threads", "batch_size"):
            kwargs.setdefault(key, None)
        return cls(**kwargs)


# ------------------------------------------------------------------------------------------- joins


def _components(name: str) -> list[str]:
    return [c for c in re.split(r"[/;:]", name) if c]


def layer_of(names: Iterable[str], layers: Iterable[str]) -> str | None:
    """The source layer an op's names point to: the last path component (split at '/', ';', ':') that is a
    layer's name, or is one with the '_<n>' suffix Keras adds to a layer called again; None when none is."""
    known = set(layers)
    found = None
    for name in names:
        for component in _components(name):
            if component in known:
                found = component
            else:
                base = re.sub(r"_\d+$", "", component)
                if base in known:
                    found = base
        if found:
            return found
    return None


def mark_float_islands(ops: list[OpTime]) -> None:
    """Mark each float compute op that lies between a dequantize (or an integer op) upstream and a quantize
    (or an integer op) downstream, through float ops only: the parts of an INT8 graph that run in float."""
    producer = {t: op for op in ops for t in op.outputs}
    consumers: dict[str, list[OpTime]] = {}
    for op in ops:
        for t in op.inputs:
            consumers.setdefault(t, []).append(op)

    def integer_side(op: OpTime, step, boundary: str) -> bool:
        seen, stack = set(), [op]
        while stack:
            current = stack.pop()
            for nxt in step(current):
                if id(nxt) in seen:
                    continue
                seen.add(id(nxt))
                if nxt.role == boundary or (nxt.role == COMPUTE and nxt.precision in INTEGER):
                    return True
                if nxt.role in (DATA, COMPUTE) and nxt.precision not in INTEGER:
                    stack.append(nxt)
        return False

    def up(op: OpTime):
        return [producer[t] for t in op.inputs if t in producer]

    def down(op: OpTime):
        return [c for t in op.outputs for c in consumers.get(t, [])]

    for op in ops:
        if op.role == COMPUTE and op.is_float:
            op.float_island = integer_side(op, up, DEQUANTIZE) and integer_side(op, down, QUANTIZE)


# ------------------------------------------------------------------------------------------- summaries

#: op families across engines' vocabularies (checked in order, on the op type and kernel, lower case)
FAMILIES = (
    ("quantize", ("dequantize",)),
    ("quantize", ("quantize", "requant")),
    ("depthwise conv", ("depthwise", "dwconv", "_dw")),
    ("conv", ("conv",)),
    ("dense", ("gemm", "matmul", "fully", "innerproduct", "dense")),
    ("pool", ("pool", "mean", "reduce")),
    ("elementwise", ("add", "mul", "sub", "eltwise", "relu", "clamp", "swish", "sigmoid", "logistic", "subgraph")),
    ("softmax", ("softmax",)),
    ("layout", ("reorder", "transpose", "reshape", "pad", "concat", "copy")),
)


def family(op: OpTime) -> str:
    """A family name shared by every engine's names for the same kind of op (conv, dense, pool...)."""
    text = f"{op.op_type} {op.kernel or ''}".lower()
    for name, words in FAMILIES:
        if any(w in text for w in words):
            return name
    return op.op_type.lower()


def share(ms: float, profile: Profile) -> float:
    total = profile.op_ms
    return ms / total if total else 0.0


def top_ops(profile: Profile, count: int = 10) -> list[OpTime]:
    return sorted(profile.ops, key=lambda op: -op.time_ms)[:count]


def time_by(profile: Profile, key) -> list[tuple[str, float, int]]:
    """(key, ms, op count), slowest first, with ``key(op)`` grouping the ops."""
    groups: dict[str, list[float]] = {}
    for op in profile.ops:
        groups.setdefault(key(op), []).append(op.time_ms)
    return sorted(((k, sum(v), len(v)) for k, v in groups.items()), key=lambda row: -row[1])


def float_ops(profile: Profile) -> list[OpTime]:
    """Compute ops of an INT8 artifact that ran in float (islands first)."""
    if not profile.integer:
        return []
    found = [op for op in profile.ops if op.role == COMPUTE and op.is_float]
    return sorted(found, key=lambda op: (not op.float_island, -op.time_ms))


def diagnosis(profile: Profile) -> str | None:
    """One line naming the largest avoidable cost the profile shows, where a rule applies; None otherwise.

    Rules, first that applies: ops the INT8 budget kept in float take >= 10% of the time; float islands of an
    INT8 artifact take >= 10%; ops outside the delegate or accelerator take >= 10%; quantize and dequantize
    steps take >= 15%.
    """

    def pct(ops: list[OpTime]) -> float:
        return share(sum(op.time_ms for op in ops), profile)

    rules = [
        ([op for op in profile.ops if op.kept_float], 0.10, "kept in float by the INT8 budget"),
        ([op for op in profile.ops if op.float_island], 0.10, "running in float between dequantize and quantize"),
        (
            [op for op in profile.ops if op.delegated is False],
            0.10,
            "outside " + (next((op.placement for op in profile.ops if op.delegated), None) or "the accelerator"),
        ),
        ([op for op in profile.ops if op.role in (QUANTIZE, DEQUANTIZE)], 0.15, "quantizing and dequantizing"),
    ]
    for ops, threshold, what in rules:
        if ops and pct(ops) >= threshold:
            return f"{pct(ops):.0%} of the time in {len(ops)} op(s) {what}"
    return None


def int8_against_fp32(profiles: list[Profile]) -> list[tuple[str, str, float, float]]:
    """(engine, family, INT8 ms, FP32 ms) per op family, for each engine that profiled both an INT8 and an FP32
    artifact in the same setting (threads and batch)."""
    rows = []
    for p in profiles:
        if not p.integer or p.status != "ok":
            continue
        fp32 = next(
            (
                q
                for q in profiles
                if q.status == "ok"
                and q.engine == p.engine
                and q.precision == "fp32"
                and (q.threads, q.batch_size) == (p.threads, p.batch_size)
            ),
            None,
        )
        if fp32 is None:
            continue
        int8 = dict((k, ms) for k, ms, _ in time_by(p, family))
        base = dict((k, ms) for k, ms, _ in time_by(fp32, family))
        for key in sorted(set(int8) | set(base), key=lambda k: -(base.get(k, 0) + int8.get(k, 0))):
            rows.append((p.engine or "", key, int8.get(key, 0.0), base.get(key, 0.0)))
    return rows
