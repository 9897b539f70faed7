"""TensorRT backend: engines built from the ONNX backend's output with the TensorRT Python API and run
with pinned buffers on one CUDA stream. An engine runs only on the GPU model and TensorRT version it
was built with, so a sidecar JSON beside it records them (and its format and precision)."""

from edgepipe.backends.tensorrt import backend, export, runner  # noqa: F401  (each registers what it defines)
