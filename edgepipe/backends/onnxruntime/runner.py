"""ONNX Runtime runner for ``.onnx`` files: CPU, CUDA or TensorRT execution provider.

With the TensorRT provider, CUDA is registered after it for the nodes TensorRT does not
take (as ONNX Runtime recommends), and the providers the session really uses are
recorded with every result, so a partial fallback is visible, never silent.
"""

from __future__ import annotations

import time

import numpy as np

from edgepipe.backends.onnxruntime.backend import ONNX, OnnxRuntimeSettings
from edgepipe.backends.runner import InputSpec, Runner
from edgepipe.errors import MissingDependencyError

#: ONNX Runtime's execution providers by name. TRT_EP is the TensorRT execution provider inside ONNX Runtime,
#: reached through the device name TRT_DEVICE ("tensorrt", as users write it); it is not the TensorRT backend
#: (edgepipe.backends.tensorrt), which builds and runs TensorRT engines itself.
CPU_EP, CUDA_EP, TRT_EP = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
TRT_DEVICE = "tensorrt"
#: device name -> execution provider
PROVIDERS = {"cpu": CPU_EP, "cuda": CUDA_EP, TRT_DEVICE: TRT_EP}


def _available() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "package 'onnxruntime' is not installed (pip install onnxruntime)"
    return None


GRAPH_OPTIMIZATION = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


@ONNX.engine(
    "onnxruntime",
    reads=("onnx",),
    devices=tuple(PROVIDERS),
    available=_available,
    settings=OnnxRuntimeSettings,
    description="ONNX Runtime: CPU, CUDA or TensorRT execution provider",
)
class OnnxRuntimeRunner(Runner):
    """Threads set explicitly; intra-op spinning as the settings say (on by default: lowest latency)."""

    def _activate(self) -> None:
        import onnxruntime as ort

        provider = PROVIDERS.get(self.device)
        if provider is None or provider not in ort.get_available_providers():
            raise MissingDependencyError(
                f"ONNX Runtime has no {self.device} execution provider here",
                "Install onnxruntime-gpu (pip install 'edgepipe[gpu]') on a machine with an NVIDIA GPU, or use --device cpu.",
            )
        self.options = self.session_options()
        self.session = ort.InferenceSession(
            str(self.path), sess_options=self.options, providers=self._providers(provider)
        )
        self.providers_used = self.session.get_providers()
        self._input = self.session.get_inputs()[0]
        self._output_name = self.session.get_outputs()[0].name

    def session_options(self):
        """The session options of the timed session (threads, spinning, optimization level); profiling off."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.settings.spinning else "0")
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION[self.settings.graph_optimization]
        )
        options.log_severity_level = 3
        return options

    def device_provider(self) -> str:
        return PROVIDERS[self.device]

    def session_providers(self) -> list:
        return self._providers(self.device_provider())

    def profile(self, batch: np.ndarray, calls: int):
        from edgepipe.backends.onnxruntime.profile import profile_session

        return profile_session(self, self.engine_input(batch), calls)

    def engine_input(self, batch: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(batch, dtype=self.input_dtype_for(batch.dtype))

    def _providers(self, provider: str) -> list:
        if provider == TRT_EP:
            from pathlib import Path

            cache = Path.home() / ".cache" / "edgepipe" / "ort-tensorrt"
            cache.mkdir(parents=True, exist_ok=True)
            # precision follows the artifact's recorded precision: an fp32 model is measured in fp32,
            # QDQ models quantize explicitly
            precision = self.artifact.precision
            return [
                (
                    provider,
                    {
                        "trt_fp16_enable": precision == "fp16",
                        "trt_int8_enable": precision == "int8",
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(cache),
                        "trt_timing_cache_enable": True,
                        "trt_timing_cache_path": str(cache),
                    },
                ),
                CUDA_EP,
            ]
        return [provider]

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "providers": ",".join(getattr(self, "providers_used", []))}

    def _deactivate(self) -> None:
        del self.session

    def input_spec(self) -> InputSpec:
        shape = tuple(d if isinstance(d, int) else None for d in self._input.shape)
        dtype = self._input.type.replace("tensor(", "").rstrip(")").replace("float", "float32")
        return InputSpec(self._input.name, shape, dtype)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = self.session.run([self._output_name], {self._input.name: batch})[0]
        self.last_compute_ms = (time.perf_counter() - start) * 1e3
        return np.asarray(out, dtype=np.float32)

    def prepare(self, batch_size: int) -> None:
        shape = tuple(d or batch_size for d in self.input_spec().shape)
        self._staged = {self._input.name: np.zeros((batch_size, *shape[1:]), np.float32)}

    def invoke_only(self):
        staged, names = self._staged, [self._output_name]
        return lambda: self.session.run(names, staged)
