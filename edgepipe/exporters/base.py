"""Exporter registry and the context exporters share.

An exporter is a function ``(ctx, path) -> details`` registered under a name
that says exactly what the file is (``tflite-int8``). It writes one artifact
at ``path`` (atomically) and returns what it knows about it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from edgepipe.registry import Registry


@dataclass(frozen=True)
class Exporter:
    name: str
    fn: Callable[["ExportContext", Path], dict[str, Any]]
    suffix: str
    precision: str
    description: str
    needs_calibration: bool = False
    available: Callable[[], Optional[str]] = lambda: None  # None when buildable here, else why not


EXPORTERS: Registry[Exporter] = Registry("format", list_command="edgepipe formats")


def register_exporter(name: str, *, suffix: str, precision: str, description: str, needs_calibration: bool = False,
                      available: Callable[[], Optional[str]] = lambda: None):
    def decorator(fn):
        EXPORTERS.add(name, Exporter(name, fn, suffix, precision, description, needs_calibration, available))
        return fn

    return decorator


@dataclass
class ExportContext:
    """What every exporter may use. The SavedModel export is made once, on first request."""

    model: Any  # keras.Model
    labels: list[str]
    preprocessing: dict[str, Any]
    calibration: Any  # CalibrationSet or None
    int8_io: str = "uint8"
    _workdir: Optional[tempfile.TemporaryDirectory] = field(default=None, repr=False)
    _saved_model: Optional[Path] = field(default=None, repr=False)

    def saved_model(self) -> Path:
        if self._saved_model is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="edgepipe-export-")
            path = Path(self._workdir.name) / "saved_model"
            from edgepipe.quiet import native_output_suppressed

            with native_output_suppressed():
                self.model.export(str(path), format="tf_saved_model", verbose=False)
            self._saved_model = path
        return self._saved_model

    def close(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir, self._saved_model = None, None
