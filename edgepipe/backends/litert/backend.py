"""The litert backend object: its containers, devices, export options and engine settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.backends.base import Backend
from edgepipe.options import option


@dataclass
class LiteRTExportOptions:
    int8_io: str = option(
        "uint8",
        "Integer type of the input and output tensors of full-integer TFLite models (tflite-int8).",
        choices=("uint8", "int8"),
    )
    float_stem: bool = option(
        False,
        "tflite-int8: the first recipe keeps the input stem (the model's preprocessing and its first "
        "convolution) in float and the rest int8, faster on x86 CPUs with XNNPACK, where int8 kernels are slow "
        "on the image's few channels and the integer input is converted outside XNNPACK (off, the default: "
        "full integer only, which integer-only accelerators need).",
    )


@dataclass
class LiteRTSettings:
    xnnpack: bool = option(
        True, "Run with LiteRT's default XNNPACK delegate (off: the reference kernels, for comparison)."
    )


LITERT = Backend(
    "litert",
    packages=("ai-edge-litert", "tflite-runtime"),
    export_options=LiteRTExportOptions,
    section="tflite",
    description="TFLite files run by LiteRT",
)


def _read_info(path: Path) -> dict[str, Any]:
    from edgepipe.backends.litert.metadata import read_metadata

    meta = read_metadata(path)
    return {**(meta.get("edgepipe") or {}), **({"labels": meta["labels"]} if meta.get("labels") else {})}


LITERT.container(
    "tflite",
    suffixes=(".tflite",),
    default_engine="litert",
    read_info=_read_info,
    description="TFLite flatbuffer (with TFLite model metadata)",
)
