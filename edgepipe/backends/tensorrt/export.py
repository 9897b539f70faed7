"""TensorRT engines built from the ONNX backend's output with the TensorRT Python API.

INT8 uses explicit quantization: a QDQ model made for TensorRT from ``onnx-fp32``
(int8 symmetric activations and per-channel weights, see ``tensorrt.qdq``; not
``onnx-int8``, whose uint8 activations TensorRT refuses; implicit calibrators are
deprecated since TensorRT 10.1 and removed in 11). FP16 sets
the FP16 builder flag on TensorRT 10, and on TensorRT 11 (strongly typed
networks only) builds the ``onnx-fp16`` model. A timing cache (keyed by
TensorRT version and GPU) speeds up rebuilds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepipe.backends.context import ExportContext
from edgepipe.backends.tensorrt.backend import TENSORRT, TensorRTExportOptions, sidecar_path, tensorrt_unavailable
from edgepipe.backends.tensorrt.engine_info import cache_dir, engine_facts, engine_metadata, timing_cache_key
from edgepipe.backends.tensorrt.qdq import tensorrt_int8_graph
from edgepipe.errors import ConfigError, EdgepipeError
from edgepipe.fileio import write_bytes, write_json


def build_plan(options: TensorRTExportOptions, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """What the builder is asked for, from the export options: the batch profile's (min, opt, max) input
    shapes, the workspace limit in bytes, and the DLA core (None: the GPU)."""
    b = options.batch
    if not b.min <= b.opt <= b.max:
        raise ConfigError(
            f"export.tensorrt.batch needs min <= opt <= max, got {b.min}, {b.opt}, {b.max}",
            "Set min, opt and max so that min <= opt <= max.",
        )
    rest = tuple(int(d) for d in input_shape[1:])
    return {
        "profile": tuple((n, *rest) for n in (b.min, b.opt, b.max)),
        "workspace_bytes": options.workspace_mb * 2**20,
        "dla_core": options.dla_core,
    }


#: what the sidecar records as the source of an INT8 engine
INT8_SOURCE = "onnx-fp32 quantized for TensorRT (int8 symmetric QDQ)"


def _source(precision: str, strongly_typed: bool) -> str:
    return {"fp16": "onnx-fp16" if strongly_typed else "onnx-fp32", "int8": INT8_SOURCE}[precision]


def _onnx_for(ctx: ExportContext, precision: str, source: str) -> Path:
    """The ONNX file TensorRT's parser reads: the QDQ graph made for TensorRT for INT8, else ``source``."""
    return tensorrt_int8_graph(ctx) if precision == "int8" else ctx.require(source)


def _build(ctx: ExportContext, path: Path, format_name: str, precision: str) -> dict[str, Any]:
    import tensorrt as trt

    facts = engine_facts()
    strongly_typed = not hasattr(trt.BuilderFlag, "FP16")  # TensorRT 11: precision comes from the model's types
    source = _source(precision, strongly_typed)
    onnx_path = _onnx_for(ctx, precision, source)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgepipeError(f"TensorRT could not parse {source}: {errors[:300]}")
    plan = build_plan(ctx.options_for("tensorrt"), tuple(network.get_input(0).shape))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan["workspace_bytes"])
    if not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales come from the QDQ nodes
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, *plan["profile"])
    config.add_optimization_profile(profile)
    if plan["dla_core"] is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(plan["dla_core"])
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    timing_path = cache_dir() / timing_cache_key(facts)
    cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgepipeError(f"TensorRT failed to build the {precision} engine (see the TensorRT log above)")
    write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
    write_bytes(path, bytes(serialized))
    batch = tuple(shape[0] for shape in plan["profile"])
    meta = engine_metadata(facts, onnx_path, format_name, precision, batch, plan["dla_core"], source)
    write_json(sidecar_path(path), meta)
    return {**meta, "timing_cache": str(timing_path)}


@TENSORRT.format(
    "tensorrt-fp16",
    container="tensorrt",
    precision="fp16",
    available=tensorrt_unavailable,
    tolerance="fp16-compute",
    description="TensorRT engine, FP16, batch profile export.tensorrt.batch (built on this GPU only)",
)
def export_tensorrt_fp16(ctx: ExportContext, path: Path) -> dict[str, Any]:
    return _build(ctx, path, "tensorrt-fp16", "fp16")


@TENSORRT.format(
    "tensorrt-int8",
    container="tensorrt",
    precision="int8",
    needs_calibration=True,
    available=tensorrt_unavailable,
    description="TensorRT engine, INT8 by explicit quantization of a QDQ model made for TensorRT "
    "(int8 symmetric activations, per-channel weights)",
)
def export_tensorrt_int8(ctx: ExportContext, path: Path) -> dict[str, Any]:
    return _build(ctx, path, "tensorrt-int8", "int8")
