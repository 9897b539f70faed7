"""The tensorrt backend object: its containers, devices, export options and engine settings."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.backends.base import Backend
from edgepipe.options import option


@dataclass
class TensorRTBatch:
    min: int = option(1, "Smallest batch size the engine accepts.", min=1)
    opt: int = option(1, "Batch size TensorRT tunes the engine for.", min=1)
    max: int = option(1, "Largest batch size the engine accepts.", min=1)


@dataclass
class TensorRTExportOptions:
    batch: TensorRTBatch = option(
        TensorRTBatch(), "Optimization profile of the engine's batch dimension (min <= opt <= max)."
    )
    dla_core: int | None = option(
        None,
        "Build for this DLA core (Jetson AGX/Orin NX), with GPU fallback for layers DLA cannot run; null: the GPU.",
        min=0,
        max=3,
    )
    workspace_mb: int = option(1024, "Largest scratch memory TensorRT may use while building, in MB.", min=16)


TENSORRT = Backend(
    "tensorrt",
    packages=("tensorrt", "tensorrt-cu12", "cuda-python"),
    export_options=TensorRTExportOptions,
    description="TensorRT engines on NVIDIA GPUs and Jetson",
)


def tensorrt_unavailable() -> str | None:
    """None when TensorRT can build and run engines here, else why not ('no CUDA device', 'package ...')."""
    from edgepipe.gpu import cuda_unavailable

    try:
        importlib.import_module("tensorrt")
    except ImportError:
        return "package 'tensorrt' is not installed (pip install 'edgepipe[gpu]', or use an NVIDIA image)"
    return cuda_unavailable()


def sidecar_path(engine: Path) -> Path:
    return engine.with_suffix(engine.suffix + ".json")


def read_sidecar(engine: Path) -> dict[str, Any]:
    """The engine's sidecar JSON: where it can run (GPU, TensorRT version) and what it is (format, precision)."""
    from edgepipe.errors import EdgepipeError
    from edgepipe.fileio import read_json

    side = sidecar_path(engine)
    if not side.exists():
        raise EdgepipeError(
            f"{engine.name} has no {side.name} beside it",
            "Keep the engine's .json sidecar with it; it records where the engine can run.",
        )
    return read_json(side)


def _read_info(path: Path) -> dict[str, Any]:
    return read_sidecar(path)


TENSORRT.container(
    "tensorrt",
    suffixes=(".engine",),
    default_engine="tensorrt",
    read_info=_read_info,
    companions=lambda path: [sidecar_path(path)],
    description="serialized TensorRT engine with a .engine.json sidecar",
)
