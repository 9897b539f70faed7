"""ONNX Runtime runner for ``.onnx`` files (CPU execution provider here)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from edgepipe.runtimes.base import InputSpec, Runner, register_runtime

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def _available() -> Optional[str]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "package 'onnxruntime' is not installed (pip install onnxruntime)"
    return None


@register_runtime("onnxruntime", suffixes=(".onnx",), available=_available)
class OnnxRuntimeRunner(Runner):
    """Threads set explicitly; spin-waiting off so idle threads do not inflate CPU use."""

    def _activate(self) -> None:
        import onnxruntime as ort

        provider = PROVIDERS.get(self.device)
        if provider is None or provider not in ort.get_available_providers():
            from edgepipe.errors import MissingDependencyError

            raise MissingDependencyError(
                f"ONNX Runtime has no {self.device} execution provider here",
                "Install onnxruntime-gpu (pip install 'edgepipe[gpu]') on a machine with an NVIDIA GPU, or use --device cpu.",
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=[provider])
        self._input = self.session.get_inputs()[0]
        self._output_name = self.session.get_outputs()[0].name

    def _deactivate(self) -> None:
        del self.session

    def input_spec(self) -> InputSpec:
        shape = tuple(d if isinstance(d, int) else None for d in self._input.shape)
        dtype = self._input.type.replace("tensor(", "").rstrip(")").replace("float", "float32")
        return InputSpec(self._input.name, shape, dtype)

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run([self._output_name], {self._input.name: batch})[0], dtype=np.float32)

    def prepare(self, batch_size: int) -> None:
        shape = tuple(d or batch_size for d in self.input_spec().shape)
        self._staged = {self._input.name: np.zeros((batch_size, *shape[1:]), np.float32)}

    def invoke_only(self):
        staged, names = self._staged, [self._output_name]
        return lambda: self.session.run(names, staged)
