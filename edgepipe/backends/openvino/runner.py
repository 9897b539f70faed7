"""OpenVINO Runtime runner for IR, ONNX and TFLite files on the CPU, an Intel GPU or an Intel NPU.

The model is compiled for a fixed batch (static shapes are OpenVINO's fast path) with the thread count,
performance hint, streams and inference precision set explicitly, and one infer request is reused.
What the compiled model reports back is what is recorded, so a device that overrides a setting
(e.g. computes in bf16 unless told f32) is visible, never silent.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgepipe.backends.openvino.backend import OPENVINO, OpenVINOSettings, openvino_unavailable
from edgepipe.backends.runner import InputSpec, Runner
from edgepipe.errors import MissingDependencyError

#: edgepipe device -> OpenVINO device name
DEVICES = {"cpu": "CPU", "intel-gpu": "GPU", "npu": "NPU"}
#: properties read back from the compiled model, and their names in the settings record
IN_FORCE = {
    "INFERENCE_NUM_THREADS": "threads",
    "PERFORMANCE_HINT": "performance_hint",
    "NUM_STREAMS": "num_streams",
    "INFERENCE_PRECISION_HINT": "inference_precision",
    "ENABLE_CPU_PINNING": "cpu_pinning",
    "EXECUTION_DEVICES": "execution_devices",
}


def compile_config(settings: OpenVINOSettings, threads: int, supported: set[str]) -> dict[str, Any]:
    """The compile properties for ``settings`` and ``threads``, limited to those the device ``supported``
    (a GPU has no thread count, an NPU no precision choice); 'none'/'default'/null leave the device's own."""
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads}
    if settings.performance_hint != "none":
        config["PERFORMANCE_HINT"] = settings.performance_hint.upper()
    if settings.num_streams is not None:
        config["NUM_STREAMS"] = settings.num_streams
    if settings.inference_precision != "default":
        config["INFERENCE_PRECISION_HINT"] = settings.inference_precision  # OpenVINO's own names: f32, bf16, f16
    if settings.cpu_pinning is not None:
        config["ENABLE_CPU_PINNING"] = settings.cpu_pinning
    return {key: value for key, value in config.items() if key in supported}


def _plain(value: Any) -> Any:
    """A property value as JSON: OpenVINO types by their short names (f32), enums by name."""
    if hasattr(value, "get_type_name"):
        return value.get_type_name()
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return getattr(value, "name", str(value))


def tflite_io_quantization(path) -> tuple[tuple | None, tuple | None]:
    """(input, output) quantization of a .tflite file as (dtype, scale, zero point), None for float tensors.

    OpenVINO's TFLite frontend keeps a full-integer model's integer input and output, so the runner
    quantizes and dequantizes as LiteRT does; the parameters are the file's own, read by LiteRT.
    """
    from edgepipe.backends.litert.runner import interpreter_class, open_interpreter

    if interpreter_class()[0] is None:
        raise MissingDependencyError(
            "reading a .tflite file's input/output quantization needs LiteRT", "pip install ai-edge-litert"
        )
    interpreter = open_interpreter(path, xnnpack=False)  # tensor details only: no delegate to prepare
    found = []
    for detail in (interpreter.get_input_details()[0], interpreter.get_output_details()[0]):
        dtype = np.dtype(detail["dtype"])
        found.append(None if dtype.kind == "f" else (dtype, *detail["quantization"]))
    return found[0], found[1]


def _dims(port: Any) -> tuple:
    """A model input's or output's shape as its file declares it (None for a dynamic dimension)."""
    return tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())


#: compiled models (one per batch size) a runner keeps: a compile takes about 0.25 s for a small network here
KEPT_COMPILED = 3


@OPENVINO.engine(
    "openvino",
    reads=("openvino", "onnx", "tflite"),
    devices=("cpu", "intel-gpu", "npu"),
    available=openvino_unavailable,
    settings=OpenVINOSettings,
    description="OpenVINO Runtime: IR, ONNX and TFLite files on the CPU, Intel GPU or NPU",
)
class OpenVINORunner(Runner):
    """A model compiled per batch size (the last few kept), one reused infer request each, settings read back."""

    def _activate(self) -> None:
        import openvino as ov

        self.core = ov.Core()
        self._device = DEVICES[self.device]
        available = self.core.available_devices
        if not any(d.split(".")[0] == self._device for d in available):
            raise MissingDependencyError(
                f"OpenVINO has no {self._device} device here (it sees: {', '.join(available) or 'none'})",
                f"Use --device cpu, or install the {self._device} driver for OpenVINO's {self._device} plugin.",
            )
        self._supported = set(self.core.get_property(self._device, "SUPPORTED_PROPERTIES"))
        self.model = self.core.read_model(str(self.path))
        self._input = self.model.inputs[0]
        # the shape the file declares (None for a dynamic dimension), before any reshape
        self._declared = _dims(self._input)
        self._io = tflite_io_quantization(self.path) if self.artifact.container == "tflite" else (None, None)
        self._batch = 0
        self._kept: dict[int, tuple[Any, Any]] = {}  # batch size -> (compiled model, its infer request)
        self.prepare(self._declared[0] or 1)

    def _deactivate(self) -> None:
        del self.request, self.compiled, self.model, self.core, self._kept

    @classmethod
    def declared_shapes(cls, artifact) -> tuple[tuple, tuple] | None:
        if artifact.container == "tflite":  # a TFLite file: its own reader knows it (and integer I/O)
            return None
        import openvino as ov

        model = ov.Core().read_model(str(artifact.path))
        return _dims(model.inputs[0]), _dims(model.outputs[0])

    def prepare(self, batch_size: int) -> None:
        """Compile for ``batch_size`` images with one infer request. The compiled models of the KEPT_COMPILED
        batch sizes used last are kept: going back to one (a bench scores in batches of 32, then times batch 1)
        compiles nothing again."""
        if batch_size == self._batch:
            return
        if batch_size not in self._kept:
            compiled = self.compile_for(batch_size)
            self._kept[batch_size] = (compiled, compiled.create_infer_request())
            while len(self._kept) > KEPT_COMPILED:
                del self._kept[next(iter(self._kept))]
        self._kept[batch_size] = self._kept.pop(batch_size)  # the most recently used last
        self.compiled, self.request = self._kept[batch_size]
        self._batch = batch_size

    def release_other_sizes(self) -> None:
        self._kept = {self._batch: self._kept[self._batch]}

    def compile_for(self, batch_size: int, extra: dict[str, Any] | None = None) -> Any:
        """The model compiled for ``batch_size`` images with this runner's properties (and ``extra`` ones)."""
        self.model.reshape({self._input: [batch_size, *self._declared[1:]]})
        config = compile_config(self.settings or OpenVINOSettings(), self.threads, self._supported)
        return self.core.compile_model(self.model, self._device, {**config, **(extra or {})})

    def profile(self, batch: np.ndarray, calls: int):
        from edgepipe.backends.openvino.profile import profile_compiled

        return profile_compiled(self, self.engine_input(batch), calls)

    def engine_input(self, batch: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self._staged(np.asarray(batch, dtype=np.float32)))

    def settings_record(self) -> dict[str, Any]:
        """What the compiled model reports in force (threads, hint, streams, precision, pinning, devices)."""
        supported = set(self.compiled.get_property("SUPPORTED_PROPERTIES"))
        record = {name: _plain(self.compiled.get_property(key)) for key, name in IN_FORCE.items() if key in supported}
        record.setdefault("threads", self.threads)
        return record

    def input_spec(self) -> InputSpec:
        return InputSpec(self._input.get_any_name(), self._declared, self._input.get_element_type().to_dtype().name)

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        import openvino as ov

        return {
            "openvino": version("openvino"),
            "openvino_build": ov.get_version(),
            "device": str(self.core.get_property(self._device, "FULL_DEVICE_NAME")),
        }

    def _staged(self, batch: np.ndarray) -> np.ndarray:
        quantization = self._io[0]
        if quantization is None:
            return batch
        dtype, scale, zero_point = quantization
        info = np.iinfo(dtype)
        return np.clip(np.rint(batch / scale + zero_point), info.min, info.max).astype(dtype)

    def _probabilities(self, raw: np.ndarray) -> np.ndarray:
        """A float32 copy of the output (the request's buffer is reused), dequantized when it is integer."""
        quantization = self._io[1]
        if quantization is None:
            return np.array(raw, dtype=np.float32, copy=True)
        _, scale, zero_point = quantization
        result = raw.astype(np.float32)
        result -= zero_point
        result *= scale
        return result

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != self._batch:
            self.prepare(len(batch))
        self._staged_input = self._staged(batch)  # kept alive: the input tensor shares its memory
        self.request.set_input_tensor(self._tensor(self._staged_input))
        start = time.perf_counter()
        self.request.infer()
        self.last_compute_ms = (time.perf_counter() - start) * 1e3
        return self._probabilities(self.request.get_output_tensor(0).data)

    @staticmethod
    def _tensor(array: np.ndarray) -> Any:
        import openvino as ov

        return ov.Tensor(np.ascontiguousarray(array), shared_memory=True)

    def invoke_only(self):
        return self.request.infer
