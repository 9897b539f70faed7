"""TensorRT's layer profiler (IProfiler) on an execution context of its own.

The timed context never has a profiler attached: a second execution context of the same engine gets
one, with the runner's device buffers, and TensorRT calls ``report_layer_time`` for every layer of
every call. Each layer's precision and tactic come from the engine inspector where the engine was
built with detailed profiling verbosity (otherwise only names and times are known).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from edgepipe.profiles import COMPUTE, DATA, DEQUANTIZE, QUANTIZE, EngineProfile, OpTime

PROFILER = "TensorRT IProfiler (report_layer_time per layer and call) on a second execution context"
WARMUP_CALLS = 3
_PRECISIONS = {"Float": "fp32", "Half": "fp16", "Int8": "int8", "BFloat16": "bf16", "FP8": "fp8", "Int32": "int32"}
_ROLES = {"Quantize": QUANTIZE, "Dequantize": DEQUANTIZE, "Reformat": DATA, "Shuffle": DATA, "NoOp": DATA}


def _profiler_class():
    import tensorrt as trt

    class LayerTimes(trt.IProfiler):
        """Sums the time TensorRT reports for each layer."""

        def __init__(self):
            trt.IProfiler.__init__(self)
            self.ms: dict[str, list[float]] = {}
            self.recording = False

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            if self.recording:
                self.ms.setdefault(layer_name, []).append(ms)

    return LayerTimes


def profile_context(runner: Any, batch: np.ndarray, calls: int) -> EngineProfile:
    """Per-layer median times of ``calls`` executions of ``batch`` on a second context of ``runner``'s engine."""
    from edgepipe.gpu import check

    runner.prepare(len(batch))
    rt = runner.rt
    host, device, array = runner._buffers[runner.input_name]
    array[...] = batch
    check(rt.cudaMemcpy(device, host, array.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice))
    context = runner.trt_engine.create_execution_context()
    context.set_input_shape(runner.input_name, tuple(array.shape))
    for name in (runner.input_name, runner.output_name):
        context.set_tensor_address(name, int(runner._buffers[name][1]))
    profiler = _profiler_class()()
    context.profiler = profiler
    walls = []
    for i in range(WARMUP_CALLS + calls):
        profiler.recording = i >= WARMUP_CALLS
        start = time.perf_counter()
        context.execute_async_v3(int(runner.stream))
        check(rt.cudaStreamSynchronize(runner.stream))
        if profiler.recording:
            walls.append((time.perf_counter() - start) * 1e3)
    facts = _layer_facts(runner.trt_engine)
    ops = [_op(name, float(np.median(times)), facts.get(name, {})) for name, times in profiler.ms.items()]
    del context
    return EngineProfile(PROFILER, calls, float(np.min(walls)), ops)


def _layer_facts(engine: Any) -> dict[str, dict]:
    """{layer name: the inspector's JSON for it} (names only unless built with detailed verbosity)."""
    import tensorrt as trt

    inspector = engine.create_engine_inspector()
    facts = {}
    for i in range(engine.num_layers):
        try:
            info = json.loads(inspector.get_layer_information(i, trt.LayerInformationFormat.JSON))
        except (ValueError, TypeError):
            continue
        if isinstance(info, dict) and info.get("Name"):
            facts[info["Name"]] = info
    return facts


def _op(name: str, ms: float, info: dict) -> OpTime:
    layer_type = info.get("LayerType") or "layer"
    outputs = info.get("Outputs") or [{}]
    datatype = str(outputs[0].get("Format/Datatype", "")) if isinstance(outputs[0], dict) else ""
    precision = next((p for key, p in _PRECISIONS.items() if key in datatype), None)
    return OpTime(
        name=name,
        op_type=layer_type,
        time_ms=ms,
        kernel=info.get("TacticName") or info.get("Tactic"),
        precision=precision,
        placement="TensorRT",
        delegated=True,
        role=_ROLES.get(layer_type, COMPUTE),
    )
