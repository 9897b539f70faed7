"""LiteRT backend: ``.tflite`` files converted by TensorFlow's TFLite converter, run by LiteRT
(ai-edge-litert) with the XNNPACK delegate on the CPU."""

from edgepipe.backends.litert import backend, export, runner  # noqa: F401  (each registers what it defines)
