"""OpenVINO backend: IR files (``.xml`` with its ``.bin``) converted by OpenVINO from the ONNX backend's
output, FP16-compressed or quantized by NNCF, run by OpenVINO Runtime on the CPU, an Intel GPU or an
Intel NPU. The engine also runs ``.onnx`` and ``.tflite`` files directly, so other backends' artifacts
can be measured with OpenVINO too (``bench.engines: [openvino]``)."""

from edgepipe.backends.openvino import backend, export, runner  # noqa: F401  (each registers what it defines)
