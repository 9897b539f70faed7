"""LiteRT backend: ``.tflite`` files converted by TensorFlow's TFLite converter, run by LiteRT
(ai-edge-litert) with the XNNPACK delegate on the CPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from edgepipe.backends.base import Backend
from edgepipe.options import option


@dataclass
class LiteRTExportOptions:
    int8_io: str = option("uint8", "Integer type of the input and output tensors of full-integer TFLite models (tflite-int8).",
                          choices=("uint8", "int8"))


@dataclass
class LiteRTSettings:
    xnnpack: bool = option(True, "Run with LiteRT's default XNNPACK delegate (off: the reference kernels, for comparison).")


LITERT = Backend("litert", packages=("ai-edge-litert", "tflite-runtime"), export_options=LiteRTExportOptions, section="tflite",
                 description="TFLite files run by LiteRT")


def _read_info(path: Path) -> dict[str, Any]:
    from edgepipe.backends.litert.metadata import read_metadata

    meta = read_metadata(path)
    return {**(meta.get("edgepipe") or {}), **({"labels": meta["labels"]} if meta.get("labels") else {})}


LITERT.container("tflite", suffixes=(".tflite",), default_engine="litert", read_info=_read_info,
                 description="TFLite flatbuffer (with TFLite model metadata)")

from edgepipe.backends.litert import export, runner  # noqa: E402,F401  (register the formats and the engine)
