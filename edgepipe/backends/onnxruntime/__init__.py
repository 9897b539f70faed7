"""ONNX backend: ``.onnx`` files made by tf2onnx (FP32) or from an ONNX classifier brought by the user (source), ONNX Runtime's float16 converter and static
quantizer or NNCF (INT8, QDQ), run by ONNX Runtime on the CPU or its CUDA and TensorRT execution providers."""

from edgepipe.backends.onnxruntime import backend, export, runner, source  # noqa: F401  (each registers what it defines)
