"""The one interface every inference engine implements, and the artifact it runs.

A runner is activated (engine loaded), describes its input, infers batches of
raw pixels and returns class probabilities as float32, and is deactivated; it is
a context manager. Quantized engines quantize inputs and dequantize outputs
themselves, so callers never branch on format.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Artifact:
    """An artifact file and what it is, as recorded when it was made (never guessed from its name)."""

    path: Path
    container: str
    format: str | None = None  # None for a file that does not say what it is
    precision: str | None = None
    labels: tuple[str, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        """The format name, or the container with a note when the file records no format."""
        return self.format or f"{self.container} (format not recorded in the file)"


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | None, ...]  # NHWC; None for a dynamic dimension
    dtype: str  # dtype of the engine's own input tensor (e.g. "uint8" for a full-integer model)


class Runner(abc.ABC):
    """Base class: subclasses implement ``_activate``, ``_infer``, ``input_spec`` and ``versions``.

    ``settings`` is the engine's settings dataclass (None: its defaults);
    :meth:`settings_record` says what was in force, and is recorded with every result.
    """

    #: set by the Backend.engine decorator
    engine: str = ""
    devices: tuple[str, ...] = ("cpu",)

    def __init__(self, artifact: Artifact, threads: int, device: str = "cpu", settings: Any = None):
        self.artifact = artifact
        self.path = Path(artifact.path)
        self.threads = int(threads)
        self.device = device
        self.settings = settings
        self.active = False
        self.load_ms: float | None = None
        #: set by runners that can time the engine apart from staging: the last call's engine time
        #: (CPU: the invoke/run call; GPU: compute between CUDA events) and host-device copy time, in ms
        self.last_compute_ms: float | None = None
        self.last_copy_ms: float | None = None

    # -- lifecycle ---------------------------------------------------------------
    def activate(self) -> Runner:
        start = time.perf_counter()
        self._activate()
        self.load_ms = (time.perf_counter() - start) * 1e3
        self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
        self.active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    # -- inference ------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (float32, (N, classes)) for raw-pixel images (N, H, W, C)."""
        if not self.active:
            raise RuntimeError(f"{type(self).__name__} used before activate()")
        batch = np.asarray(batch)
        return self._infer(np.ascontiguousarray(batch, dtype=self.input_dtype_for(batch.dtype)))

    def pixel_dtype(self) -> np.dtype:
        """The dtype in which the engine takes raw pixels exactly as they are (float32 unless the model's input
        is integer pixels with no scale or shift)."""
        return np.dtype(np.float32)

    def input_dtype_for(self, dtype) -> np.dtype:
        """What ``infer`` hands the engine for pixels of ``dtype``: the same when it is the engine's own pixel
        dtype (no conversion), else float32."""
        native = self.pixel_dtype()
        return native if np.dtype(dtype) == native else np.dtype(np.float32)

    def prepare(self, batch_size: int) -> None:
        """Make the engine ready for ``batch_size`` (resize tensors etc.); no-op by default."""

    def release_other_sizes(self) -> None:
        """Release what the engine keeps ready for batch sizes other than the current one (a memory figure then
        counts one); no-op by default."""

    @classmethod
    def declared_shapes(cls, artifact: Artifact) -> tuple[tuple, tuple] | None:
        """(input shape, output shape) as the file declares them (None for a dynamic dimension), read without
        preparing the engine (no compile, no delegate); None where this engine cannot read them so (the caller
        then runs the model once to learn them)."""
        return None

    def invoke_only(self) -> Callable[[], None]:
        """A zero-argument call that runs the engine on already-staged input (for overhead checks)."""
        raise NotImplementedError

    def settings_record(self) -> dict[str, Any]:
        """The engine settings in force (threads included), recorded with every measurement."""
        record: dict[str, Any] = {"threads": self.threads}
        if self.settings is not None:
            record.update(dataclasses.asdict(self.settings))
        return record

    def profile(self, batch: np.ndarray, calls: int):
        """Per-op times of ``calls`` calls on ``batch`` (raw pixels, as ``infer`` takes them), taken by the engine's
        own profiler in a session or compiled model of its own with this runner's settings: the timed session
        never has a profiler on. Returns an edgepipe.profiles.EngineProfile; the runner must be active. Raises
        edgepipe.profiles.ProfilingUnavailable where the engine offers edgepipe no per-op profiler."""
        from edgepipe.profiles import ProfilingUnavailable

        raise ProfilingUnavailable(f"{self.engine or type(self).__name__} offers edgepipe no per-op profiler")

    def engine_input(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` as the engine's own input tensor takes it (quantized where the input is integer), for
        profilers that feed a session of their own; float32 pixels by default."""
        return np.ascontiguousarray(batch, dtype=np.float32)

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
