"""Exporter registry and the context exporters share.

An exporter is a function ``(ctx, path) -> details`` registered under a name
that says exactly what the file is (``tflite-int8``). It writes one artifact
at ``path`` (atomically) and returns what it knows about it. Exporters that
build on another format's output (ONNX INT8 and TensorRT on ``onnx-fp32``)
ask the context for it instead of converting again.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgepipe.registry import Registry


@dataclass(frozen=True)
class Tolerance:
    """How close an artifact's outputs must be to the Keras model's on the same images.

    ``max_abs_diff`` bounds the largest probability difference; ``min_agreement``
    bounds the fraction of images whose top-1 class matches. None: not checked.
    """

    max_abs_diff: Optional[float] = None
    min_agreement: Optional[float] = None

    def check(self, figures: dict[str, float]) -> list[str]:
        """Reasons the figures are outside this tolerance (empty when within)."""
        problems = []
        if self.max_abs_diff is not None and figures["max_abs_diff"] > self.max_abs_diff:
            problems.append(f"max |Δp| {figures['max_abs_diff']:.2e} > {self.max_abs_diff:.0e}")
        if self.min_agreement is not None and figures["top1_agreement"] < self.min_agreement:
            problems.append(f"top-1 agreement {figures['top1_agreement']:.1%} < {self.min_agreement:.0%}")
        return problems

    def as_dict(self) -> dict[str, Any]:
        return {"max_abs_diff": self.max_abs_diff, "min_agreement": self.min_agreement}


TOLERANCES = {
    "fp32": Tolerance(max_abs_diff=1e-4),
    # float16 weights, float32 arithmetic (TFLite fp16 on the CPU dequantizes the weights)
    "fp16": Tolerance(max_abs_diff=2e-2, min_agreement=0.98),
    # float16 arithmetic end to end (ONNX fp16, TensorRT FP16): rounding accumulates over dozens of layers
    "fp16-compute": Tolerance(max_abs_diff=5e-2, min_agreement=0.98),
    "dynamic": Tolerance(min_agreement=0.95),
    "int16x8": Tolerance(min_agreement=0.95),
    "int8": Tolerance(min_agreement=0.90),
}


@dataclass(frozen=True)
class Exporter:
    name: str
    fn: Callable[["ExportContext", Path], dict[str, Any]]
    suffix: str
    precision: str
    description: str
    needs_calibration: bool = False
    available: Callable[[], Optional[str]] = lambda: None  # None when buildable here, else why not
    #: key in TOLERANCES when it is not the precision (e.g. fp16-compute)
    tolerance_key: Optional[str] = None

    @property
    def tolerance(self) -> Tolerance:
        return TOLERANCES.get(self.tolerance_key or self.precision, Tolerance(min_agreement=0.9))


EXPORTERS: Registry[Exporter] = Registry("format", list_command="edgepipe formats")


def register_exporter(name: str, *, suffix: str, precision: str, description: str, needs_calibration: bool = False,
                      available: Callable[[], Optional[str]] = lambda: None, tolerance: Optional[str] = None):
    def decorator(fn):
        EXPORTERS.add(name, Exporter(name, fn, suffix, precision, description, needs_calibration, available, tolerance))
        return fn

    return decorator


@dataclass
class ExportContext:
    """What every exporter may use.

    ``validation`` holds (images, labels) of the validation split for the
    accuracy budget of INT8 exporters; ``reference_top1`` is the Keras model's
    top-1 there. The SavedModel and other formats' outputs are made once, on
    first request.
    """

    model: Any  # keras.Model
    labels: list[str]
    preprocessing: dict[str, Any]
    calibration: Any  # CalibrationSet or None
    int8_io: str = "uint8"
    calibration_method: str = "minmax"
    accuracy_budget_pp: float = 1.0
    validation: Optional[tuple[np.ndarray, np.ndarray]] = None
    reference_top1: Optional[float] = None
    threads: int = 1
    calibration_pool: Optional[tuple[np.ndarray, np.ndarray]] = None  # the training split, for larger sets
    options: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    _workdir: Optional[tempfile.TemporaryDirectory] = field(default=None, repr=False)
    _saved_model: Optional[Path] = field(default=None, repr=False)

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="edgepipe-export-")
        return Path(self._workdir.name)

    def saved_model(self) -> Path:
        if self._saved_model is None:
            from edgepipe.quiet import native_output_suppressed

            path = self.workdir / "saved_model"
            with native_output_suppressed():
                self.model.export(str(path), format="tf_saved_model", verbose=False)
            self._saved_model = path
        return self._saved_model

    def require(self, format_name: str) -> Path:
        """The artifact of another format: the one exported in this run, else one made in the work folder."""
        if format_name not in self.outputs:
            exporter = EXPORTERS.get(format_name)
            path = self.workdir / f"dependency-{format_name}{exporter.suffix}"
            exporter.fn(self, path)
            self.outputs[format_name] = path
        return self.outputs[format_name]

    def top1(self, path: Path) -> Optional[float]:
        """Top-1 of an artifact on the validation split, through its runtime (None without validation data)."""
        if self.validation is None:
            return None
        from edgepipe.benchmark import accuracy, predict
        from edgepipe.runtimes import create_runner

        images, labels = self.validation
        with create_runner(path, threads=self.threads) as runner:
            return accuracy(predict(runner, images), labels)

    def close(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir, self._saved_model = None, None
