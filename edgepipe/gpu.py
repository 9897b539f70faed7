"""Lazy access to CUDA through cuda-python: availability checks and the GPU's facts.

Nothing here imports CUDA at module import; every entry point says which package
or device is missing instead of raising ImportError.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgepipe.errors import MissingDependencyError


def cudart():
    """cuda-python's runtime module (``cuda.bindings.runtime`` in 12.6+/13, ``cuda.cudart`` before)."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise MissingDependencyError("package 'cuda-python' is not installed", "pip install 'edgepipe[gpu]'")


def check(result):
    """Unwrap a cuda-python call's (error, *values) tuple, raising on a CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {int(err)} ({err})")
    return values[0] if len(values) == 1 else tuple(values)


def cuda_unavailable() -> str | None:
    """None when a CUDA device is usable here, else why not."""
    try:
        rt = cudart()
    except MissingDependencyError as exc:
        return str(exc)
    try:
        count = check(rt.cudaGetDeviceCount())
    except Exception as exc:  # driver missing or broken
        return f"no CUDA device ({exc})"
    return None if count > 0 else "no CUDA device"


def cuda_facts(device: int = 0) -> dict[str, Any]:
    """GPU name, compute capability, driver and runtime versions."""
    rt = cudart()
    props = check(rt.cudaGetDeviceProperties(device))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {
        "gpu_name": name.strip("\x00 "),
        "compute_capability": f"{props.major}.{props.minor}",
        "cuda_driver": check(rt.cudaDriverGetVersion()),
        "cuda_runtime": check(rt.cudaRuntimeGetVersion()),
    }
