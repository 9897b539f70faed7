"""OpenVINO's per-layer performance counters (PERF_COUNT) on a model compiled for profiling alone.

The profiled model is compiled with the timed model's properties plus ``PERF_COUNT``; its counters
(``InferRequest.get_profiling_info``) give every executed layer's real time (a running average since
compilation, so the profiled calls' mean is taken from the running totals), its type and the kernel it ran (``exec_type``, e.g. ``brgconv_avx512_amx_I8`` or a ``ref`` reference kernel). The
compiled model's runtime graph gives each layer's inputs, runtime precision and original layer names.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgepipe.profiles import COMPUTE, DATA, QUANTIZE, EngineProfile, OpTime

PROFILER = "OpenVINO per-layer performance counters (PERF_COUNT, InferRequest.get_profiling_info)"
WARMUP_CALLS = 3
DATA_TYPES = frozenset(
    {
        "Reorder",
        "Reshape",
        "Transpose",
        "Concatenation",
        "Concat",
        "Input",
        "Output",
        "Parameter",
        "Result",
        "Const",
        "Constant",
        "Convert",
        "Gather",
        "Pad",
        "Split",
        "StridedSlice",
        "Squeeze",
        "Unsqueeze",
    }
)
_PRECISIONS = {"i8": "int8", "u8": "int8", "i16": "int16", "i32": "int32", "f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def _text(value: Any) -> str:
    """An rt_info value as text (OpenVINO wraps them in OVAny)."""
    for attempt in (lambda v: v.astype(str), lambda v: str(v.value)):
        try:
            return attempt(value)
        except Exception:
            continue
    return str(value)


def profile_compiled(runner: Any, batch: np.ndarray, calls: int) -> EngineProfile:
    """Per-layer mean real times of ``calls`` inferences of ``batch`` on a model compiled like ``runner``'s
    with PERF_COUNT on (OpenVINO keeps running averages, not each call's time)."""
    compiled = runner.compile_for(len(batch), {"PERF_COUNT": True})
    request = compiled.create_infer_request()
    tensor = runner._tensor(batch)
    for _ in range(WARMUP_CALLS):
        request.infer({0: tensor})
    before = _executed(request)
    walls = []
    for _ in range(calls):
        start = time.perf_counter()
        request.infer({0: tensor})
        walls.append((time.perf_counter() - start) * 1e3)
    after = _executed(request)
    graph = _runtime_graph(compiled)
    ops = []
    for name, (info, average) in after.items():
        # the CPU plugin's counters are running averages over every call since compilation (the slow first
        # calls included): the profiled calls' own mean is the difference of the running totals
        earlier = before.get(name, (None, 0.0))[1] * WARMUP_CALLS
        ops.append(_op(info, max(0.0, (average * (WARMUP_CALLS + calls) - earlier) / calls), graph.get(name, {})))
    return EngineProfile(PROFILER, calls, float(np.min(walls)), ops)


def _executed(request: Any) -> dict[str, tuple[Any, float]]:
    """{layer name: (its counter, its running average in ms)} for the layers that executed."""
    return {
        info.node_name: (info, info.real_time.total_seconds() * 1e3)
        for info in request.get_profiling_info()
        if str(info.status).endswith("EXECUTED") and "NOT" not in str(info.status)
    }


def _runtime_graph(compiled: Any) -> dict[str, dict[str, Any]]:
    """{layer name: inputs, outputs, runtime precision, original layer names} from the compiled model's
    execution graph."""
    graph: dict[str, dict[str, Any]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        name = op.get_friendly_name()
        graph[name] = {
            "inputs": tuple(i.get_source_output().get_node().get_friendly_name() for i in op.inputs()),
            "precision": _text(rt["runtimePrecision"]) if "runtimePrecision" in rt else None,
            "original": tuple(n for n in _text(rt["originalLayersNames"]).split(",") if n)
            if "originalLayersNames" in rt
            else (),
        }
    return graph


def _precision(exec_type: str, runtime: Any) -> Any:
    if runtime and runtime.lower() in _PRECISIONS:
        return _PRECISIONS[runtime.lower()]
    suffix = exec_type.rsplit("_", 1)[-1].lower()
    return _PRECISIONS.get(suffix)


def _op(info: Any, ms: float, node: dict[str, Any]) -> OpTime:
    node_type, exec_type = info.node_type, info.exec_type
    role = QUANTIZE if node_type == "FakeQuantize" else (DATA if node_type in DATA_TYPES else COMPUTE)
    return OpTime(
        name=info.node_name,
        op_type=node_type,
        time_ms=ms,
        kernel=exec_type,
        precision=_precision(exec_type, node.get("precision")),
        placement=None,
        delegated=False if exec_type.startswith("ref") else None,
        role=role,
        inputs=node.get("inputs", ()),
        outputs=(info.node_name,),
        aliases=node.get("original", ()),
    )
