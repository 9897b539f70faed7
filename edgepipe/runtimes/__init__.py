"""Inference engines behind one interface; ``create_runner(path, threads)`` picks by artifact."""

from edgepipe.runtimes.base import RUNTIMES, InputSpec, Runner, create_runner, register_runtime, runtime_for
from edgepipe.runtimes import keras_runner, litert, onnxruntime_runner, tensorrt_runner  # noqa: F401  (register)

__all__ = ["RUNTIMES", "InputSpec", "Runner", "create_runner", "register_runtime", "runtime_for"]
