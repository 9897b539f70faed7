"""ONNX Runtime's own profiler (SessionOptions.enable_profiling) on a session of its own.

The profiling session has the timed session's settings (threads, spinning, optimization level,
providers) and also writes the graph it optimized, so each profiled node's inputs and outputs are
known: that is what float islands are read from. ONNX Runtime writes one JSON event per node and
run; the first calls are warm-up and are left out.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.backends.onnxruntime.qdq import INTEGER_KERNELS
from edgepipe.profiles import COMPUTE, DATA, DEQUANTIZE, QUANTIZE, EngineProfile, OpTime

PROFILER = "ONNX Runtime profiler (SessionOptions.enable_profiling), one node event per run"
WARMUP_CALLS = 3
LAYOUT_OPS = frozenset(
    {
        "Transpose",
        "Reshape",
        "ReorderInput",
        "ReorderOutput",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "Concat",
        "Pad",
        "Cast",
        "Shape",
        "Gather",
        "Slice",
    }
)
ROLES = {"QuantizeLinear": QUANTIZE, "DequantizeLinear": DEQUANTIZE, "DynamicQuantizeLinear": QUANTIZE}
_INTEGER_TYPES = {"uint8": "int8", "int8": "int8", "int16": "int16", "uint16": "int16", "int32": "int32"}


def profile_session(runner: Any, batch: np.ndarray, calls: int) -> EngineProfile:
    """Per-node median times of ``calls`` runs of ``batch`` in a new profiling session built like ``runner``'s."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgepipe-ort-profile-") as folder:
        options = runner.session_options()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        session = ort.InferenceSession(str(runner.path), sess_options=options, providers=runner.session_providers())
        feed = {session.get_inputs()[0].name: batch}
        outputs = [session.get_outputs()[0].name]
        for _ in range(WARMUP_CALLS):
            session.run(outputs, feed)
        walls = []
        for _ in range(calls):
            start = time.perf_counter()
            session.run(outputs, feed)
            walls.append((time.perf_counter() - start) * 1e3)
        events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
    nodes = {n.name: n for n in graph.node}
    times = _node_times(events, WARMUP_CALLS, calls)
    ops = [_op(name, args, ms, nodes.get(name), runner.device_provider()) for name, (args, ms) in times.items()]
    return EngineProfile(PROFILER, calls, float(np.min(walls)), ops)


def _node_times(events: list[dict], skip: int, calls: int) -> dict[str, tuple[dict, float]]:
    """{node name: (its event args, median ms per run)} over the last ``calls`` runs (runs are the 'model_run'
    session events; node events fall inside them)."""
    runs = sorted(
        (e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    kept = runs[skip : skip + calls]
    found: dict[str, tuple[dict, list[float]]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        run = next((i for i, (start, end) in enumerate(kept) if start <= e["ts"] <= end), None)
        if run is None:
            continue
        name = e["name"][: -len("_kernel_time")]
        args, per_run = found.setdefault(name, (e.get("args") or {}, [0.0] * len(kept)))
        per_run[run] += e["dur"] / 1e3
    return {name: (args, float(np.median(per_run))) for name, (args, per_run) in found.items()}


def _precision(op_type: str, args: dict) -> str:
    if op_type in INTEGER_KERNELS or op_type.startswith("QLinear"):
        return "int8"
    first = (args.get("input_type_shape") or [{}])[0]
    kind = next(iter(first), "float")
    return _INTEGER_TYPES.get(kind, {"float": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(kind, kind))


def _op(name: str, args: dict, ms: float, node: Any, asked_provider: str) -> OpTime:
    op_type = args.get("op_name") or (node.op_type if node is not None else "?")
    provider = args.get("provider")
    role = ROLES.get(op_type) or (DATA if op_type in LAYOUT_OPS else COMPUTE)
    return OpTime(
        name=name,
        op_type=op_type,
        time_ms=ms,
        kernel=f"{op_type} ({provider})" if provider else op_type,
        precision=_precision(op_type, args),
        placement=provider,
        delegated=None if provider is None else provider == asked_provider,
        role=role,
        inputs=tuple(node.input) if node is not None else (),
        outputs=tuple(node.output) if node is not None else (),
    )
