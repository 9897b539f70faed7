"""Backends: one package per inference technology, each with its exporters, engines and metadata.

Adding a backend is one folder here plus one line in ``BUILTIN`` (or, for a
package outside edgepipe, an entry point in the group ``edgepipe.backends``).
Everything else (the CLI's lists, the config's option sections, the bench
harness, reports) asks the registries through the functions below.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from edgepipe.backends.base import (
    BACKENDS,
    CONTAINERS,
    DEVICES,
    ENGINES,
    FORMATS,
    INTEGER_PRECISIONS,
    OBJECT_SOURCES,
    SOURCES,
    TOLERANCES,
    Backend,
    Container,
    Engine,
    Format,
    Tolerance,
)
from edgepipe.backends.context import ExportContext, ValidationScore
from edgepipe.backends.runner import Artifact, InputSpec, Runner
from edgepipe.errors import EdgepipeError, MissingDependencyError

#: the backends edgepipe ships, in the order their formats are listed
BUILTIN = ("keras", "litert", "onnxruntime", "openvino", "tensorrt")
ENTRY_POINT_GROUP = "edgepipe.backends"

_loaded = False


def load() -> None:
    """Import every backend once (cheap: engines import their packages lazily)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in BUILTIN:
        importlib.import_module(f"edgepipe.backends.{name}")
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        entry.load()


# the registries fill themselves on first use: importing edgepipe.backends (or the config) loads no backend
for _registry in (BACKENDS, CONTAINERS, FORMATS, ENGINES):
    _registry.loader = load


def formats():
    load()
    return FORMATS


def engines():
    load()
    return ENGINES


def containers():
    load()
    return CONTAINERS


def devices() -> dict:
    load()
    return DEVICES


def tracked_packages() -> tuple[str, ...]:
    """Package distributions whose versions every run records (the backends' engines)."""
    load()
    return tuple(p for _, backend in BACKENDS for p in backend.packages)


def artifact_suffixes() -> tuple[str, ...]:
    load()
    return tuple(s for _, c in CONTAINERS for s in c.suffixes)


def container_of(path: str | Path) -> Container:
    """The container a file is, by its suffix (a file type, not a format)."""
    load()
    suffix = Path(path).suffix.lower()
    for _, container in CONTAINERS:
        if suffix in container.suffixes:
            return container
    raise EdgepipeError(
        f"'{Path(path).name}' is not an artifact edgepipe can run",
        "Artifacts end in " + ", ".join(artifact_suffixes()) + ".",
    )


def artifact_files(path: str | Path) -> list[Path]:
    """The artifact file and every file that travels with it (OpenVINO's .bin, a TensorRT sidecar) that exists."""
    path = Path(path)
    return [path] + [p for p in container_of(path).companions(path) if p.exists()]


def artifact_size_mb(path: str | Path) -> float:
    """Size of the artifact with its companion files, in MB (10**6 bytes)."""
    return sum(p.stat().st_size for p in artifact_files(path)) / 1e6


def artifact_digest(path: str | Path) -> str:
    """sha256 of the artifact with its companion files (one file: that file's own sha256)."""
    from edgepipe.fileio import sha256_file, sha256_value

    files = artifact_files(path)
    return sha256_file(files[0]) if len(files) == 1 else sha256_value([sha256_file(p) for p in files])


def identify(path: str | Path, recorded: dict[str, Any] | None = None) -> Artifact:
    """The artifact at ``path``: its format and precision as recorded when it was made (``recorded``,
    an artifacts.json entry), else as the file itself records them; None when neither says."""
    path = Path(path)
    container = container_of(path)
    info = dict(recorded or {})
    if not info.get("format"):
        try:
            info = {**container.read_info(path), **{k: v for k, v in info.items() if v is not None}}
        except Exception:  # an unreadable file is reported when an engine tries to load it
            pass
    labels = info.get("labels")
    return Artifact(
        path, container.name, info.get("format"), info.get("precision"), tuple(labels) if labels else None, info
    )


def default_engine(artifact: Artifact) -> Engine:
    load()
    return ENGINES.get(CONTAINERS.get(artifact.container).default_engine)


def engines_for(artifact: Artifact, wanted: tuple[str, ...] = ()) -> list[Engine]:
    """The engines to measure an artifact with: its container's default engine, then each of ``wanted``
    (engine names) that reads its container, in order."""
    load()
    chosen = [default_engine(artifact)]
    for name in wanted:
        engine = ENGINES.get(name)
        if artifact.container in engine.reads and engine not in chosen:
            chosen.append(engine)
    return chosen


def devices_for(engine: Engine, requested: tuple[str, ...]) -> tuple[str, ...]:
    """The requested devices ``engine`` can use, else its own default device."""
    return tuple(d for d in requested if d in engine.devices) or (engine.devices[0],)


def create_runner(
    artifact: Artifact | str | Path,
    *,
    threads: int,
    engine: str | None = None,
    device: str | None = None,
    settings: Any = None,
) -> Runner:
    """A runner for ``artifact`` on ``device`` (default: the engine's first device) with ``engine``
    (default: the container's default engine); MissingDependencyError naming what is missing."""
    load()
    if not isinstance(artifact, Artifact):
        artifact = identify(artifact)
    entry = ENGINES.get(engine) if engine else default_engine(artifact)
    if artifact.container not in entry.reads:
        raise EdgepipeError(
            f"engine '{entry.name}' cannot read {artifact.container} files ({artifact.path.name})",
            f"{entry.name} reads: {', '.join(entry.reads)}.",
        )
    reason = entry.available()
    if reason:
        raise MissingDependencyError(f"{entry.name} cannot run {artifact.path.name}: {reason}")
    device = device or entry.devices[0]
    if device not in entry.devices:
        raise MissingDependencyError(
            f"{entry.name} does not run on '{device}'", f"{entry.name} runs on: {', '.join(entry.devices)}."
        )
    if settings is None and entry.settings is not None:
        settings = entry.settings()
    return entry.runner(artifact, threads=threads, device=device, settings=settings)


def model_source(path: str | Path) -> Any | None:
    """The ModelSource that reads ``path`` (an ONNX classifier...), by its suffix; None for a Keras file or any
    other path."""
    load()
    return SOURCES.get(Path(path).suffix.lower())


def object_source(obj: Any) -> Any | None:
    """The ObjectSource that reads ``obj`` (a PyTorch module...); None for a Keras model or anything else."""
    load()
    return next((s for s in OBJECT_SOURCES if s.accepts(obj)), None)


def reference_format() -> Format:
    """The format of the FP32 model every artifact is compared with (the Keras model)."""
    load()
    return next(f for _, f in FORMATS if f.reference)


__all__ = [
    "Artifact",
    "BACKENDS",
    "Backend",
    "CONTAINERS",
    "artifact_digest",
    "artifact_files",
    "artifact_size_mb",
    "Container",
    "DEVICES",
    "ENGINES",
    "Engine",
    "ValidationScore",
    "ExportContext",
    "FORMATS",
    "Format",
    "INTEGER_PRECISIONS",
    "InputSpec",
    "object_source",
    "Runner",
    "TOLERANCES",
    "Tolerance",
    "artifact_suffixes",
    "container_of",
    "containers",
    "create_runner",
    "default_engine",
    "devices",
    "devices_for",
    "engines",
    "engines_for",
    "formats",
    "identify",
    "load",
    "model_source",
    "reference_format",
    "tracked_packages",
]
