"""The onnxruntime backend object: its containers, devices, export options and engine settings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.backends.base import Backend
from edgepipe.options import option


@dataclass
class OnnxExportOptions:
    opset: int = option(17, "ONNX opset of the exported graph (tf2onnx).", min=13, max=21)
    per_channel: bool = option(True, "onnx-int8: quantize weights per output channel (off: one scale per tensor).")
    activations: str = option(
        "uint8",
        "onnx-int8: activation type. uint8 (weights int8) is what ONNX Runtime fuses into "
        "integer kernels on x86; with int8 activations it leaves every convolution at a "
        "residual branch in float on x86 (int8 suits ARM).",
        choices=("uint8", "int8"),
    )
    symmetric_activations: bool = option(
        False, "onnx-int8: symmetric activation ranges (zero point 0), as some accelerators require."
    )
    int8_reduce_range: bool = option(
        True,
        "onnx-int8: weights quantized to 7 bits (ONNX Runtime's reduce_range; NNCF's overflow fix, every "
        "convolution but depthwise ones and every matrix product), so CPUs without VNNI (AVX2 or AVX-512 "
        "only), whose uint8 x int8 products saturate in 16 bits, compute what VNNI and AMX CPUs compute. "
        "Off: 8-bit weights, for files run only where VNNI is.",
    )

    def weights_description(self) -> str:
        """How an onnx-int8 file's weights are quantized, as its details record it."""
        return (
            "int8 symmetric "
            + ("per-channel" if self.per_channel else "per-tensor")
            + (", 7-bit range (reduce_range: no 16-bit saturation without VNNI)" if self.int8_reduce_range else "")
        )


@dataclass
class OnnxRuntimeSettings:
    spinning: bool = option(
        True,
        "Let idle intra-op threads spin-wait between calls (ONNX Runtime's default; lowest latency). "
        "Off saves idle CPU at some latency cost.",
    )
    graph_optimization: str = option(
        "all", "ONNX Runtime graph optimization level.", choices=("disabled", "basic", "extended", "all")
    )

    @classmethod
    def tune_candidates(cls) -> list[dict]:
        """What 'bench --tune' sweeps: spinning on and off, with all and with extended graph optimizations
        (spinning wins on an idle machine and loses on a busy one; 'all' adds the layout optimizations)."""
        return [{"spinning": s, "graph_optimization": g} for s in (True, False) for g in ("all", "extended")]


ONNX = Backend(
    "onnxruntime",
    packages=("tf2onnx", "onnx", "onnxruntime", "onnxruntime-gpu"),
    export_options=OnnxExportOptions,
    section="onnx",
    description="ONNX files run by ONNX Runtime",
)
ONNX.device("cpu", "the host CPU")
ONNX.device("cuda", "an NVIDIA GPU through CUDA")
ONNX.device("tensorrt", "an NVIDIA GPU through ONNX Runtime's TensorRT execution provider")

#: metadata_props keys edgepipe writes into every ONNX file
FORMAT_KEY, PRECISION_KEY, LABELS_KEY = "edgepipe.format", "edgepipe.precision", "labels"
#: the 'input' metadata of every ONNX file edgepipe writes: it takes raw pixels, its preprocessing inside
RAW_INPUT = "raw pixels 0..255, float32, NHWC"


def _read_info(path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    info: dict[str, Any] = {
        "format": props.get(FORMAT_KEY),
        "precision": props.get(PRECISION_KEY),
        # a file edgepipe did not write takes what its exporter chose (NCHW, normalized...), not raw pixels
        "raw_pixels": props.get("input") == RAW_INPUT,
    }
    if LABELS_KEY in props:
        info["labels"] = json.loads(props[LABELS_KEY])
    return {k: v for k, v in info.items() if v is not None}


ONNX.container(
    "onnx",
    suffixes=(".onnx",),
    default_engine="onnxruntime",
    read_info=_read_info,
    description="ONNX model (labels, preprocessing, format and precision in its metadata)",
)
