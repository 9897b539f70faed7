"""The openvino backend object: its container, devices, export options and engine settings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.backends.base import Backend
from edgepipe.options import option


@dataclass
class OpenVINOExportOptions:
    int8_preset: str = option(
        "performance",
        "openvino-int8: NNCF quantization preset: performance (symmetric weights and "
        "activations, the fastest integer kernels) or mixed (asymmetric activations: "
        "more accurate when activations are not centred on zero).",
        choices=("performance", "mixed"),
    )
    int8_overflow_fix: str = option(
        "all",
        "openvino-int8: NNCF's overflow fix, weights quantized to 7 bits so CPUs without "
        "VNNI (AVX2 or AVX-512 only, e.g. AMD EPYC before Zen 4), whose 8-bit products "
        "saturate in 16 bits, compute what VNNI and AMX CPUs compute: all (every layer), "
        "first_layer (NNCF's default) or none.",
        choices=("all", "first_layer", "none"),
    )
    fast_bias_correction: bool = option(
        True,
        "openvino-int8: NNCF's fast bias correction (off: its full bias correction, "
        "more accurate in general and several times slower to export).",
    )
    int8_bias_correction: bool = option(
        True,
        "openvino-int8: NNCF's bias correction after quantization (off: none). It changes "
        "bias values only, never the compiled graph, so a file made only to be timed "
        "(models --measure, a search's latency step) goes without it: 0.5-1.5 s less per "
        "network.",
    )


@dataclass
class OpenVINOSettings:
    performance_hint: str = option(
        "latency",
        "OpenVINO performance hint: latency (one stream, lowest time per call), "
        "throughput (parallel streams for many requests in flight) or none (the "
        "device's own default).",
        choices=("latency", "throughput", "none"),
    )
    num_streams: int | None = option(
        None, "Parallel inference streams; null: the performance hint decides (latency: 1).", min=1
    )
    inference_precision: str = option(
        "f32",
        "Precision the device computes float layers in: f32 (as exported), bf16 or "
        "f16 (faster where the hardware has them, less accurate), or default (the "
        "device's own choice: bf16 on CPUs with AVX512_BF16 or AMX, f16 on GPUs). "
        "The precision in force is recorded.",
        choices=("f32", "bf16", "f16", "default"),
    )
    cpu_pinning: bool | None = option(
        None, "Pin inference threads to CPU cores; null: OpenVINO decides (it pins on Linux)."
    )

    @classmethod
    def tune_candidates(cls) -> list[dict]:
        """What 'bench --tune' sweeps (besides threads): pinning as OpenVINO decides, and off (a pinned thread
        cannot leave a core another process is using). Never the precision, which changes the results; nor
        the throughput hint, whose extra streams split the threads of a single request."""
        return [{"cpu_pinning": None}, {"cpu_pinning": False}]


OPENVINO = Backend(
    "openvino",
    packages=("openvino", "nncf"),
    export_options=OpenVINOExportOptions,
    section="openvino",
    description="OpenVINO IR, ONNX and TFLite files run by OpenVINO Runtime",
)
OPENVINO.device("intel-gpu", "an Intel GPU through OpenVINO's GPU plugin")
OPENVINO.device("npu", "an Intel NPU through OpenVINO's NPU plugin")

#: the rt_info section of every IR edgepipe writes, and the one OpenVINO's Model API reads
SECTION, MODEL_INFO = "edgepipe", "model_info"


def openvino_unavailable() -> str | None:
    """None when OpenVINO Runtime imports, else what to install."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "package 'openvino' is not installed (pip install openvino)"
    return None


def nncf_unavailable() -> str | None:
    """None when OpenVINO imports and NNCF (its quantizer) is installed, else what to install. NNCF is found, not
    imported: importing it takes seconds (it imports PyTorch whenever that is installed), and a process that only
    asks which formats it can build (a search's, which quantizes in its worker processes) never needs it."""
    import importlib.util

    if importlib.util.find_spec("nncf") is None:
        return "package 'nncf' is not installed (pip install nncf)"
    return openvino_unavailable()


def ir_info(model: Any) -> dict[str, Any]:
    """What an ``openvino.Model`` records about itself in edgepipe's rt_info section (format, precision,
    labels, ...); {} for an IR edgepipe did not write."""
    info: dict[str, Any] = {}
    for key in ("format", "precision", "producer", "input"):
        if model.has_rt_info([SECTION, key]):
            info[key] = model.get_rt_info([SECTION, key]).astype(str)
    for key in ("labels", "preprocessing"):
        if model.has_rt_info([SECTION, key]):
            info[key] = json.loads(model.get_rt_info([SECTION, key]).astype(str))
    return info


def _read_info(path: Path) -> dict[str, Any]:
    # read_model parses the .xml and maps the .bin; nothing is compiled
    import openvino as ov

    return ir_info(ov.Core().read_model(str(path)))


def weights_path(xml: Path) -> Path:
    """The .bin an IR's .xml loads its weights from (OpenVINO looks beside the .xml, same stem)."""
    return Path(xml).with_suffix(".bin")


OPENVINO.container(
    "openvino",
    suffixes=(".xml",),
    default_engine="openvino",
    read_info=_read_info,
    companions=lambda path: [weights_path(path)],
    description="OpenVINO IR: .xml graph and .bin weights (labels, format and precision in its rt_info)",
)
