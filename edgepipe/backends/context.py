"""What every exporter may use: the model, labels, calibration set, options, and a scorer.

Exporters never run artifacts through the harness themselves: the export stage
passes a *scorer* (``ctx.score(path, format_name)``) that runs a candidate
file on the validation split through the registered engine and returns its
predictions. Recipes judged by accuracy (the INT8 budget) ask it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepipe import defaults

if TYPE_CHECKING:
    import keras

    from edgepipe.calibration import CalibrationSet
    from edgepipe.quantization.options import QatConfig


@dataclass(frozen=True)
class ValidationScore:
    """An artifact's predictions on the validation split, and its top-1 there."""

    probabilities: np.ndarray
    top1: float


Scorer = Callable[[Path, str], ValidationScore]


@dataclass
class ExportContext:
    """Shared by every exporter in one export.

    ``score`` is None when there are no validation images (then no recipe can
    be judged by accuracy and INT8 keeps its first recipe); ``reference_top1`` is
    the Keras model's top-1 there. ``options`` maps a backend name to its export
    options dataclass (see ``options_for``). ``workdir_parent`` is where temporary
    work goes (inside the run or output folder, so nothing is left in the system's
    temporary folder); the SavedModel and other formats' outputs are made once, on
    first request.
    """

    model: keras.Model | None  # None when the source is another kind of model (see source_onnx)
    labels: list[str]
    preprocessing: dict[str, Any]
    calibration: CalibrationSet | None = None
    workdir_parent: Path | None = None
    score: Scorer | None = None
    reference_top1: float | None = None
    #: (uint8 images, labels) of the validation split, for recipes that judge candidates themselves
    validation: tuple[np.ndarray, np.ndarray] | None = None
    reference_probabilities: np.ndarray | None = None
    calibration_method: str = "minmax"
    accuracy_budget_pp: float = defaults.ACCURACY_BUDGET_PP
    calibration_pool: tuple[np.ndarray, np.ndarray] | None = None  # the training split, for larger sets
    options: dict[str, Any] = field(default_factory=dict)
    qat: QatConfig | None = None  # None: its defaults
    outputs: dict[str, Path] = field(default_factory=dict)
    echo: Callable[[str], None] = lambda line: None
    #: the source as an ONNX graph taking raw NHWC pixels, when it is not a Keras model (a foreign network with
    #: its preprocessing folded in): onnx-fp32 is made from it, and formats that convert from Keras are skipped
    source_onnx: Path | None = None
    #: the name of that source (its file's stem, a module's class), which artifacts' metadata name it by
    source_name: str | None = None
    #: convert TFLite from the Keras model's frozen graph (``frozen_function()``) instead of its SavedModel, and
    #: ONNX from that graph instead of tracing the model again: the same operators, tensor shapes and types (a
    #: test compares them), in a fifth (TFLite) and a third (ONNX) of the time; for files made to be timed
    #: (``edgepipe models --measure``, the search's latency step), whose signature names nobody reads
    frozen_graph: bool = False
    _workdir: Path | None = field(default=None, repr=False)
    _saved_model: Path | None = field(default=None, repr=False)
    _frozen: Any = field(default=None, repr=False)

    def options_for(self, backend: str) -> Any:
        """The export options of ``backend`` (its defaults when the caller gave none)."""
        from edgepipe.backends.base import BACKENDS

        if backend not in self.options:
            options_cls = BACKENDS.get(backend).export_options
            self.options[backend] = options_cls() if options_cls else None
        return self.options[backend]

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            parent = self.workdir_parent
            if parent is not None:
                parent.mkdir(parents=True, exist_ok=True)
            self._workdir = Path(tempfile.mkdtemp(prefix="export-", dir=parent))
        return self._workdir

    @property
    def validation_labels(self) -> np.ndarray | None:
        return None if self.validation is None else self.validation[1]

    @property
    def validation_count(self) -> int | None:
        return None if self.validation is None else len(self.validation[1])

    def saved_model(self) -> Path:
        """The model as a TensorFlow SavedModel, exported once per export job: it lives beside the work folder
        (in ``workdir_parent``), so formats converted in separate processes of one job share it."""
        if self._saved_model is None:
            from edgepipe.fileio import atomic_path
            from edgepipe.quiet import native_output_suppressed

            path = (self.workdir_parent or self.workdir) / "saved_model"
            if not (path / "saved_model.pb").exists():
                with atomic_path(path) as tmp, native_output_suppressed():
                    self.model.export(str(tmp), format="tf_saved_model", verbose=False)
            self._saved_model = path
        return self._saved_model

    def frozen_function(self) -> Any:
        """The Keras model's inference graph (dynamic batch, as the SavedModel's signature) with its variables
        folded into constants: what the TFLite converter reads without a SavedModel written and loaded again."""
        return self.frozen_graph_def()[0]

    def frozen_graph_def(self) -> tuple[Any, Any]:
        """(frozen concrete function, its GraphDef), made once per export: what TFLite's converter makes of a
        concrete function itself (``convert_variables_to_constants_v2_as_graph``, control flow kept), so both
        TFLite conversions and ONNX's share one freezing instead of three."""
        if self._frozen is None:
            import tensorflow as tf
            from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2_as_graph

            model = self.model
            spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), model.inputs[0].dtype)
            function = tf.function(lambda images: model(images, training=False))
            self._frozen = convert_variables_to_constants_v2_as_graph(
                function.get_concrete_function(spec), lower_control_flow=False
            )
        return self._frozen

    def require(self, format_name: str) -> Path:
        """The artifact of another format: the one exported in this run, else one made in the work folder."""
        from edgepipe.backends.base import FORMATS

        if format_name not in self.outputs:
            fmt = FORMATS.get(format_name)
            path = self.workdir / f"dependency-{format_name}{fmt.suffix}"
            fmt.build(self, path)
            self.outputs[format_name] = path
        return self.outputs[format_name]

    def close(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir, self._saved_model = None, None
        self._frozen = None
