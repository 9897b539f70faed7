"""The one interface every inference engine implements.

A runner is activated (engine loaded), describes its input, infers batches of
raw pixels and returns class probabilities as float32, and is deactivated.
Quantized engines quantize inputs and dequantize outputs themselves, so callers
never branch on format.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgepipe.errors import EdgepipeError, MissingDependencyError
from edgepipe.registry import Registry


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[Optional[int], ...]  # NHWC; None for a dynamic dimension
    dtype: str  # dtype of the engine's own input tensor (e.g. "uint8" for a full-integer model)


class Runner(abc.ABC):
    """Base class: subclasses implement ``_activate``, ``_infer`` and ``input_spec``."""

    #: engine name, e.g. "litert"
    engine: str = ""
    #: devices (execution providers) the runner can use; the first is its default
    devices: tuple[str, ...] = ("cpu",)

    def __init__(self, path: str | Path, threads: int, device: str = "cpu"):
        self.path = Path(path)
        self.threads = int(threads)
        self.device = device
        self.active = False
        self.load_ms: Optional[float] = None
        #: set by runners that can time the engine apart from staging: the last call's engine time
        #: (CPU: the invoke/run call; GPU: compute between CUDA events) and host-device copy time, in ms
        self.last_compute_ms: Optional[float] = None
        self.last_copy_ms: Optional[float] = None

    # -- lifecycle ---------------------------------------------------------------
    def activate(self) -> "Runner":
        start = time.perf_counter()
        self._activate()
        self.load_ms = (time.perf_counter() - start) * 1e3
        self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
        self.active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    # -- inference ------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (float32, (N, classes)) for raw-pixel images (N, H, W, C)."""
        if not self.active:
            raise RuntimeError(f"{type(self).__name__} used before activate()")
        return self._infer(np.ascontiguousarray(batch, dtype=np.float32))

    def prepare(self, batch_size: int) -> None:
        """Make the engine ready for ``batch_size`` (resize tensors etc.); no-op by default."""

    def invoke_only(self) -> Callable[[], None]:
        """A zero-argument call that runs the engine on already-staged input (for overhead checks)."""
        raise NotImplementedError

    @abc.abstractmethod
    def input_spec(self) -> InputSpec: ...

    @abc.abstractmethod
    def versions(self) -> dict[str, str]:
        """Engine package versions, recorded with every result."""

    @abc.abstractmethod
    def _activate(self) -> None: ...

    def _deactivate(self) -> None:
        pass

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RuntimeEntry:
    name: str
    cls: type[Runner]
    suffixes: tuple[str, ...]
    available: Callable[[], Optional[str]]  # None when usable, else the reason it is not


RUNTIMES: Registry[RuntimeEntry] = Registry("runtime")


def register_runtime(name: str, suffixes: tuple[str, ...], available: Callable[[], Optional[str]]):
    def decorator(cls: type[Runner]) -> type[Runner]:
        cls.engine = name
        RUNTIMES.add(name, RuntimeEntry(name, cls, suffixes, available))
        return cls

    return decorator


def runtime_for(path: str | Path) -> RuntimeEntry:
    """The registered runtime that serves an artifact, by its file suffix."""
    suffix = "".join(Path(path).suffixes[-1:]).lower()
    for _, entry in RUNTIMES:
        if suffix in entry.suffixes:
            return entry
    served = sorted({s for _, e in RUNTIMES for s in e.suffixes})
    raise EdgepipeError(f"no runtime serves '{Path(path).name}'", "Artifacts must end in " + ", ".join(served) + ".")


def create_runner(path: str | Path, threads: int, device: Optional[str] = None) -> Runner:
    """A runner for ``path`` on ``device`` (default: the runner's own first device);
    MissingDependencyError naming the package/device if it cannot run here."""
    entry = runtime_for(path)
    reason = entry.available()
    if reason:
        raise MissingDependencyError(f"{entry.name} cannot run {Path(path).name}: {reason}")
    device = device or entry.cls.devices[0]
    if device not in entry.cls.devices:
        raise MissingDependencyError(f"{entry.name} does not run on '{device}'",
                                     f"{entry.name} runs on: {', '.join(entry.cls.devices)}.")
    return entry.cls(path, threads=threads, device=device)


def devices_for(path: str | Path, requested: tuple[str, ...]) -> tuple[str, ...]:
    """The requested devices this artifact's runner can use, else its own default device."""
    cls = runtime_for(path).cls
    return tuple(d for d in requested if d in cls.devices) or (cls.devices[0],)
