"""Memory footprint of an artifact on an engine, measured in a fresh process.

A process that has loaded other models (or TensorFlow) says nothing about what one
artifact needs, so each is measured in a child process that imports only edgepipe's
registry and the engine: resident memory before loading, after loading, and the peak
during a loop of inferences (the kernel's high-water mark, reset after loading where
Linux allows it). The child runs ``_child`` with a JSON request, through ``edgepipe.child``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.backends.runner import Artifact
from edgepipe.device import proc_kb

MB = 1024 * 1024


def status_mb(field: str) -> float | None:
    """A size from this process's /proc/self/status (VmRSS: resident now, VmHWM: peak resident), in MB; None
    where unknown."""
    kb = proc_kb("/proc/self/status", field)
    return None if kb is None else kb * 1024 / MB


def reset_peak_memory() -> bool:
    """Reset this process's peak resident size to its current size (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory_mb() -> float | None:
    """This process's peak resident size since its start or the last reset, in MB to 0.1 (None where unknown)."""
    peak = status_mb("VmHWM")
    return None if peak is None else round(peak, 1)


def _child(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from edgepipe.backends import create_runner, engines

    engine = engines().get(request["engine"])
    settings = engine.settings(**request["settings"]) if engine.settings and request.get("settings") else None
    artifact = Artifact(Path(request["path"]), request["container"], request.get("format"), request.get("precision"))
    before = status_mb("VmRSS")
    shape = [request["batch_size"], *request["shape"][1:]]
    images = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
    with create_runner(
        artifact, threads=request["threads"], engine=engine.name, device=request["device"], settings=settings
    ) as runner:
        runner.prepare(request["batch_size"])
        runner.release_other_sizes()  # an engine that compiled at load for another batch size keeps only this one
        after_load = status_mb("VmRSS")
        load_peak = status_mb("VmHWM")
        reset = reset_peak_memory()
        for _ in range(request["iterations"]):
            runner.infer(images)
        peak = status_mb("VmHWM")
    return {
        "rss_before_load_mb": before,
        "rss_after_load_mb": after_load,
        "peak_rss_mb": peak,
        "peak_rss_with_load_mb": load_peak if reset else peak,
        "peak_basis": "high-water mark reset after loading (peak of the inference loop)"
        if reset
        else "high-water mark of the whole process (could not be reset after loading)",
        "iterations": request["iterations"],
        "process": "fresh process: edgepipe's registry and the engine only",
    }


@dataclass
class MemoryResult:
    """What measuring one artifact's memory found: ``figures`` (MB, see ``_child``), or ``error`` (one line)
    when the fresh process could not run it."""

    figures: dict[str, Any] | None = None
    error: str | None = None

    def as_record(self) -> dict[str, Any]:
        """The record's ``memory`` as results.json holds it: the figures, or ``{"error": ...}``."""
        return {"error": self.error} if self.error is not None else dict(self.figures or {})


def measure_memory(
    artifact: Artifact,
    engine: str,
    device: str,
    threads: int,
    settings: Any,
    batch_size: int,
    shape: tuple,
    iterations: int = 20,
    timeout_s: float = 600,
) -> MemoryResult:
    """Memory figures (MB) of one artifact on one engine, measured in a fresh process; with ``error`` instead
    when the child could not run it (it timed out, raised or died)."""
    request = {
        "path": str(artifact.path),
        "container": artifact.container,
        "format": artifact.format,
        "precision": artifact.precision,
        "engine": engine,
        "device": device,
        "threads": threads,
        "settings": dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else None,
        "batch_size": batch_size,
        "shape": [int(d or 1) for d in shape],
        "iterations": iterations,
    }
    from edgepipe import child

    try:
        return MemoryResult(
            child.run("edgepipe.harness.memory:_child", request, timeout_s=timeout_s, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
        )
    except child.ChildFailed as exc:
        if exc.kind == "timeout":
            return MemoryResult(error=f"the measuring process did not finish within {timeout_s:.0f} s")
        return MemoryResult(error=exc.line[:200])
