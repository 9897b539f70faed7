"""What a TensorRT engine needs beside it: its sidecar JSON (where it can run, what it is) and the
timing cache, keyed by TensorRT version and GPU."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from edgepipe.errors import EdgepipeError
from edgepipe.fileio import cache_dir as user_cache_dir
from edgepipe.fileio import sha256_file


def engine_facts() -> dict[str, Any]:
    """The GPU's facts and the TensorRT version: what an engine is bound to."""
    import tensorrt as trt

    from edgepipe.gpu import cuda_facts

    return {**cuda_facts(), "tensorrt": trt.__version__}


def cache_dir() -> Path:
    return user_cache_dir() / "tensorrt"


def timing_cache_key(facts: dict[str, Any]) -> str:
    """File name of the timing cache: valid for one TensorRT version and one GPU (name and compute capability)."""
    parts = ["timing", facts["tensorrt"], facts["gpu_name"], facts["compute_capability"]]
    return "timing-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:24] + ".bin"


def engine_metadata(
    facts: dict[str, Any],
    onnx_path: Path,
    format_name: str,
    precision: str,
    batch: tuple[int, int, int],
    dla_core: int | None,
    source_format: str,
) -> dict[str, Any]:
    return {
        **facts,
        "format": format_name,
        "precision": precision,
        "source_format": source_format,
        "source_onnx_sha256": sha256_file(onnx_path),
        "batch_profile": {"min": batch[0], "opt": batch[1], "max": batch[2]},
        "dla_core": dla_core,
    }


def check_engine_compatible(sidecar: dict[str, Any], here: dict[str, Any]) -> None:
    """Raise a clear error when an engine was built for another GPU or TensorRT version."""
    for key, label in (("tensorrt", "TensorRT"), ("gpu_name", "GPU"), ("compute_capability", "compute capability")):
        if sidecar.get(key) != here.get(key):
            raise EdgepipeError(
                f"this TensorRT engine was built for {label} {sidecar.get(key)}, but this machine has {here.get(key)}",
                "Engines run only where they were built: rebuild it here with 'edgepipe export' from the ONNX artifact.",
            )
