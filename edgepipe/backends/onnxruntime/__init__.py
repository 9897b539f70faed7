"""ONNX backend: ``.onnx`` files made by tf2onnx (FP32) or from a classifier brought by the user (source: an ONNX
file, or a PyTorch module or torch.export program exported to ONNX by PyTorch), ONNX Runtime's float16 converter and
static quantizer or NNCF (INT8, QDQ), run by ONNX Runtime on the CPU or its CUDA and TensorRT execution providers."""

# each registers what it defines
from edgepipe.backends.onnxruntime import backbone, backend, export, runner, source, torch_source  # noqa: F401
