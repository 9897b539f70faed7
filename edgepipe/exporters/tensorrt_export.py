"""TensorRT engines built from the ONNX exporter's output with the TensorRT Python API.

INT8 uses explicit quantization: the QDQ model of ``onnx-int8`` (implicit
calibrators are deprecated since TensorRT 10.1 and removed in 11). FP16 sets
the FP16 builder flag on TensorRT 10, and on TensorRT 11 (strongly typed
networks only) builds the ``onnx-fp16`` model. An engine runs only on the GPU
model and TensorRT version it was built with, so a sidecar JSON records them
and loading checks it. A timing cache (keyed by TensorRT version and GPU)
speeds up rebuilds.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Optional

from edgepipe.errors import EdgepipeError
from edgepipe.exporters.base import ExportContext, register_exporter
from edgepipe.fileio import read_json, sha256_file, write_bytes, write_json
from edgepipe.gpu import device_facts, tensorrt_unavailable

WORKSPACE_BYTES = 1 << 30


def sidecar_path(engine: Path) -> Path:
    return engine.with_suffix(engine.suffix + ".json")


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgepipe" / "tensorrt"


def cache_key(kind: str, facts: dict[str, Any], *digests: str) -> str:
    """File name for a cache keyed by TensorRT version, GPU (name and compute capability) and input digests.

    A timing cache is valid for one TensorRT version and GPU; a calibration cache
    additionally for one model and one calibration set.
    """
    parts = [kind, facts["tensorrt"], facts["gpu_name"], facts["compute_capability"], *digests]
    return f"{kind}-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:24] + ".bin"


def engine_metadata(facts: dict[str, Any], onnx_path: Path, precision: str, batch_sizes: tuple[int, ...],
                    dla_core: Optional[int], source_format: str) -> dict[str, Any]:
    return {**facts, "precision": precision, "source_format": source_format, "source_onnx_sha256": sha256_file(onnx_path),
            "batch_sizes": list(batch_sizes), "dla_core": dla_core}


def check_engine_compatible(sidecar: dict[str, Any], here: dict[str, Any]) -> None:
    """Raise a clear error when an engine was built for another GPU or TensorRT version."""
    for key, label in (("tensorrt", "TensorRT"), ("gpu_name", "GPU"), ("compute_capability", "compute capability")):
        if sidecar.get(key) != here.get(key):
            raise EdgepipeError(
                f"this TensorRT engine was built for {label} {sidecar.get(key)}, but this machine has {here.get(key)}",
                "Engines run only where they were built: rebuild it here with 'edgepipe export' from the ONNX artifact.",
            )


def _build(ctx: ExportContext, path: Path, precision: str) -> dict[str, Any]:
    import tensorrt as trt

    facts = device_facts()
    strongly_typed = not hasattr(trt.BuilderFlag, "FP16")  # TensorRT 11: precision comes from the model's types
    source = {"fp16": "onnx-fp16" if strongly_typed else "onnx-fp32", "int8": "onnx-int8"}[precision]
    onnx_path = ctx.require(source)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgepipeError(f"TensorRT could not parse {source}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales come from the QDQ nodes
    batch_sizes = tuple(ctx.options.get("batch_sizes", (1,)))
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    _, *rest = network.get_input(0).shape
    profile.set_shape(name, (min(batch_sizes), *rest), (batch_sizes[0], *rest), (max(batch_sizes), *rest))
    config.add_optimization_profile(profile)
    dla_core = ctx.options.get("dla_core")
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    timing_path = cache_dir() / cache_key("timing", facts)
    cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgepipeError(f"TensorRT failed to build the {precision} engine (see the TensorRT log above)")
    write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
    write_bytes(path, bytes(serialized))
    meta = engine_metadata(facts, onnx_path, precision, batch_sizes, dla_core, source)
    write_json(sidecar_path(path), meta)
    return {**meta, "timing_cache": str(timing_path)}


@register_exporter("tensorrt-fp16", suffix=".engine", precision="fp16", available=tensorrt_unavailable,
                   tolerance="fp16-compute",
                   description="TensorRT engine, FP16, static batch-1 profile by default (built on this GPU only)")
def export_tensorrt_fp16(ctx: ExportContext, path: Path) -> dict[str, Any]:
    return _build(ctx, path, "fp16")


@register_exporter("tensorrt-int8", suffix=".engine", precision="int8", needs_calibration=True,
                   available=tensorrt_unavailable,
                   description="TensorRT engine, INT8 by explicit quantization of the onnx-int8 QDQ model")
def export_tensorrt_int8(ctx: ExportContext, path: Path) -> dict[str, Any]:
    return _build(ctx, path, "int8")


def read_sidecar(engine: Path) -> dict[str, Any]:
    side = sidecar_path(engine)
    if not side.exists():
        raise EdgepipeError(f"{engine.name} has no {side.name} beside it",
                            "Keep the engine's .json sidecar with it; it records where the engine can run.")
    return read_json(side)
