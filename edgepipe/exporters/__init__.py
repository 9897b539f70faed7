"""Exporters, one module per target format family, registered by format name."""

from edgepipe.exporters.base import EXPORTERS, ExportContext, Exporter, register_exporter
from edgepipe.exporters import onnx_export, tflite  # noqa: F401  (register)

__all__ = ["EXPORTERS", "ExportContext", "Exporter", "register_exporter"]
