"""LiteRT runner for ``.tflite`` files (ai-edge-litert; tflite-runtime as a fallback)."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from edgepipe.backends.litert.backend import LITERT, LiteRTSettings
from edgepipe.backends.runner import InputSpec, Runner


def interpreter_class():
    """(Interpreter class, package name): ai-edge-litert, else tflite-runtime where it imports."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore

        return Interpreter, "tflite-runtime"
    except ImportError:
        return None, None


def _available() -> str | None:
    cls, _ = interpreter_class()
    return None if cls else "package 'ai-edge-litert' is not installed (pip install ai-edge-litert)"


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return x
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _signature(detail: dict) -> tuple:
    """A tensor's shape as the file declares it (None for a dynamic dimension)."""
    return tuple(None if d < 0 else int(d) for d in detail["shape_signature"])


def open_interpreter(model: Any, threads: int = 1, xnnpack: bool = True, allocate: bool = True):
    """A LiteRT interpreter for a file path or flatbuffer bytes, tensors allocated unless asked not to (XNNPACK
    unless asked not to)."""
    cls, _ = interpreter_class()
    kwargs: dict[str, Any] = (
        {"model_content": model} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    )
    if not xnnpack:  # the package the interpreter came from (ai-edge-litert, or tflite-runtime) names the resolver
        resolver = sys.modules[cls.__module__].OpResolverType
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    from edgepipe.quiet import native_output_suppressed

    with native_output_suppressed():
        interpreter = cls(num_threads=threads, **kwargs)
        if allocate:
            interpreter.allocate_tensors()
    return interpreter


@LITERT.engine(
    "litert",
    reads=("tflite",),
    devices=("cpu",),
    available=_available,
    settings=LiteRTSettings,
    description="LiteRT (ai-edge-litert) with XNNPACK, explicit thread count",
)
class LiteRTRunner(Runner):
    """XNNPACK-delegated CPU inference with an explicit thread count."""

    def _activate(self) -> None:
        _, self.package = interpreter_class()
        self.interpreter = open_interpreter(self.path, self.threads, self.settings.xnnpack)
        self._cache_details()

    @classmethod
    def declared_shapes(cls, artifact) -> tuple[tuple, tuple] | None:
        # tensor details only: no delegate, no tensors allocated (the built-in kernels cannot prepare every file
        # XNNPACK runs: a full-integer convolution of one may fail their overflow check)
        interpreter = open_interpreter(artifact.path, xnnpack=False, allocate=False)
        return _signature(interpreter.get_input_details()[0]), _signature(interpreter.get_output_details()[0])

    def _cache_details(self) -> None:
        self._in_detail = self.interpreter.get_input_details()[0]
        self._out_detail = self.interpreter.get_output_details()[0]
        self._batch = int(self._in_detail["shape"][0])
        # raw-pixel uint8/int8 inputs usually have scale 1 and zero point 0 (or -128): quantizing is then
        # a rounding and a shift, written straight into the interpreter's input buffer
        detail = self._in_detail
        scale, zero_point = detail["quantization"] if detail["dtype"] != np.float32 else (0.0, 0)
        self._in_identity = detail["dtype"] != np.float32 and scale == 1.0
        self._in_zero_point = int(zero_point)
        self._in_range = (np.iinfo(detail["dtype"]).min, np.iinfo(detail["dtype"]).max) if self._in_identity else None
        self._rounded = np.empty(tuple(int(d) for d in detail["shape"]), np.float32)
        out = self._out_detail
        self._out_scale, self._out_zero_point = out["quantization"] if out["dtype"] != np.float32 else (1.0, 0)

    def pixel_dtype(self) -> np.dtype:
        """uint8 (or int8) when the input takes raw pixels as they are (scale 1, zero point 0)."""
        if self._in_identity and not self._in_zero_point:
            return np.dtype(self._in_detail["dtype"])
        return np.dtype(np.float32)

    def _deactivate(self) -> None:
        del self.interpreter

    def settings_record(self) -> dict[str, Any]:
        # whether XNNPACK really took over part of the graph (a DELEGATE node), not only whether it was asked for
        delegated = any(op["op_name"] == "DELEGATE" for op in self.interpreter._get_ops_details())
        return {**super().settings_record(), "xnnpack_delegated": delegated}

    def input_spec(self) -> InputSpec:
        detail = self._in_detail
        return InputSpec(detail["name"], _signature(detail), np.dtype(detail["dtype"]).name)

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {self.package: version(self.package)}

    def prepare(self, batch_size: int) -> None:
        if batch_size != self._batch:
            detail = self._in_detail
            self.interpreter.resize_tensor_input(detail["index"], [batch_size, *detail["shape"][1:]])
            self.interpreter.allocate_tensors()
            self._cache_details()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != self._batch:
            self.prepare(len(batch))
        detail = self._in_detail
        if batch.dtype != np.float32:  # already the input's own pixels (see pixel_dtype)
            self.interpreter.tensor(detail["index"])()[...] = batch
        elif self._in_identity:
            np.rint(batch, out=self._rounded)
            if self._in_zero_point:
                self._rounded += self._in_zero_point
            np.clip(self._rounded, *self._in_range, out=self._rounded)
            self.interpreter.tensor(detail["index"])()[...] = self._rounded  # cast into the input buffer
        else:
            self.interpreter.set_tensor(detail["index"], _quantize(batch, detail))
        start = time.perf_counter()
        self.interpreter.invoke()
        self.last_compute_ms = (time.perf_counter() - start) * 1e3
        out = self._out_detail
        raw = self.interpreter.get_tensor(out["index"])
        if out["dtype"] == np.float32:
            return raw
        result = raw.astype(np.float32)
        result -= self._out_zero_point
        result *= self._out_scale
        return result

    def invoke_only(self):
        return self.interpreter.invoke

    def engine_input(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` as the input tensor holds it: quantized where the input is integer."""
        if batch.dtype == self._in_detail["dtype"]:
            return np.ascontiguousarray(batch)
        return np.ascontiguousarray(_quantize(np.asarray(batch, dtype=np.float32), self._in_detail))

    def profile(self, batch: np.ndarray, calls: int):
        """LiteRT's profiler through its C API (see edgepipe.backends.litert.profile for why that way)."""
        from edgepipe.backends.litert.profile import graph_ops, profile_compiled_model
        from edgepipe.profiles import ProfilingUnavailable

        if not self.settings.xnnpack:
            raise ProfilingUnavailable(
                "LiteRT's profiler runs on its CPU accelerator (XNNPACK); these settings "
                "turn XNNPACK off (bench.litert.xnnpack: false)"
            )
        graph = graph_ops(open_interpreter(self.path, xnnpack=False))  # the file's own ops, no delegate
        return profile_compiled_model(self.path, self.threads, self.engine_input(batch), graph, calls)
