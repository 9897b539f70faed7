"""Exporters, one module per target format family, registered by format name."""

from edgepipe.exporters.base import EXPORTERS, TOLERANCES, ExportContext, Exporter, Tolerance, register_exporter
from edgepipe.exporters import onnx_export, tensorrt_export, tflite  # noqa: F401  (register)

__all__ = ["EXPORTERS", "TOLERANCES", "ExportContext", "Exporter", "Tolerance", "register_exporter"]
