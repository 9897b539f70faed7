"""What a backend is, and the registries its decorators fill.

A backend owns one inference technology end to end: the artifact *containers* it
reads and writes (``.tflite``, ``.onnx``, OpenVINO IR, TensorRT engines), the
export *formats* it builds (``tflite-int8``: a container plus a precision), the
*engines* that run artifacts (a Runner class per engine), its typed export
options and engine settings, and its metadata (sidecars, caches). A backend is
one package under ``edgepipe/backends/`` that creates a :class:`Backend` and
registers everything through its decorators::

    LITERT = Backend("litert", packages=("ai-edge-litert",))
    LITERT.container("tflite", suffixes=(".tflite",), default_engine="litert", ...)

    @LITERT.engine("litert", reads=("tflite",), devices=("cpu",))
    class LiteRTRunner(Runner): ...

    @LITERT.format("tflite-int8", container="tflite", precision="int8", ...)
    def export_tflite_int8(ctx, path): ...

Stages, reports and the CLI only ask these registries; they never test a format
or engine name themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.registry import Registry

#: precisions whose arithmetic is integer (efficiency is judged against the CPU's integer peak)
INTEGER_PRECISIONS = ("int8", "int16x8")


def always_available() -> str | None:
    return None


@dataclass(frozen=True)
class Tolerance:
    """How close an artifact's outputs must be to the Keras model's on the same images.

    ``max_abs_diff`` bounds the largest probability difference; ``min_agreement``
    bounds the fraction of images whose top-1 class matches. None: not checked.
    """

    max_abs_diff: float | None = None
    min_agreement: float | None = None

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
class Container:
    """A kind of artifact file, and how to read what the file itself records about it."""

    name: str
    backend: str
    suffixes: tuple[str, ...]
    default_engine: str
    description: str
    #: the file's own record of what it is: {"format", "precision", "labels", ...}; {} when it has none
    read_info: Callable[[Path], dict[str, Any]]
    #: files that must travel with the artifact (a TensorRT sidecar, OpenVINO's .bin)
    companions: Callable[[Path], list[Path]] = lambda path: []


@dataclass(frozen=True)
class Format:
    """An export format: a container in one precision, and the function that builds it.

    ``build(ctx, path)`` writes the artifact at ``path`` (atomically) and returns
    what it knows about it as a JSON-able dict.
    """

    name: str
    backend: str
    container: str
    precision: str
    description: str
    build: Callable[..., dict[str, Any]]
    needs_calibration: bool = False
    available: Callable[[], str | None] = always_available
    #: key in TOLERANCES when it is not the precision (e.g. fp16-compute)
    tolerance_key: str | None = None
    #: the FP32 model itself, which every other artifact is compared with (not exported by 'all')
    reference: bool = False
    #: why it is not built from a model that is not a Keras one (e.g. an ONNX file): the reason, or a function
    #: answering it here (None when its converter is installed); None: it is
    keras_only: str | Callable[[], str | None] | None = None

    def unbuildable_from_source(self) -> str | None:
        """Why this format cannot be built here from a source that is not a Keras model, or None."""
        return self.keras_only() if callable(self.keras_only) else self.keras_only

    @property
    def suffix(self) -> str:
        return CONTAINERS.get(self.container).suffixes[0]

    @property
    def tolerance(self) -> Tolerance:
        return TOLERANCES.get(self.tolerance_key or self.precision, Tolerance(min_agreement=0.9))


@dataclass(frozen=True)
class Engine:
    """An inference engine: the Runner class, the containers it reads and the devices it runs on."""

    name: str
    backend: str
    runner: type
    reads: tuple[str, ...]
    devices: tuple[str, ...]
    available: Callable[[], str | None]
    description: str
    #: dataclass of the engine's settings (config section bench.<engine>), or None; a classmethod
    #: ``tune_candidates()`` on it lists the settings ``bench --tune`` sweeps (dicts of overrides)
    settings: type | None = None
    #: whether the thread count can differ from one runner to the next in one process (not TensorFlow's)
    tunable_threads: bool = True


@dataclass(frozen=True)
class ModelSource:
    """A kind of model file besides Keras' that export starts from (an ONNX classifier, a torch.export program).

    ``read(path, preprocessing, input_size, unsafe=False)`` checks the file (one-line EdgepipeErrors; ``unsafe``
    allows a file whose loading runs code), writes nothing, and returns an object with ``size``, ``channels``, ``outputs``, ``name``, ``labels`` (or None),
    ``preprocessing()`` (what artifacts record), ``describe()``, ``write(path)`` (the graph the formats start
    from, taking raw NHWC pixels) and ``reference(images, threads)`` (probabilities every artifact is judged
    against). ``preprocessing`` is a ``pixels.PixelTransform``.

    ``read_backbone(path, preprocessing, input_size)``, when the kind can be a backbone a run trains a new head on,
    checks it the same way and returns its feature graph (see ``backends.onnxruntime.backbone.OnnxBackbone``);
    None when it cannot. ``reference`` names the format of the classifier such a run makes (the reference its
    artifacts are judged against).
    """

    backend: str
    suffixes: tuple[str, ...]
    read: Callable[..., Any]
    description: str
    read_backbone: Callable[..., Any] | None = None
    reference: str | None = None


@dataclass(frozen=True)
class ObjectSource:
    """A kind of in-memory model besides a Keras one that export starts from (a PyTorch module).

    ``accepts(obj)`` says whether it reads ``obj``, without importing a framework the caller has not imported;
    ``read(obj, preprocessing, input_size, input_shape)`` returns what ``ModelSource.read`` does.
    """

    backend: str
    accepts: Callable[[Any], bool]
    read: Callable[..., Any]
    description: str


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    description: str


BACKENDS: Registry[Backend] = Registry("backend")
CONTAINERS: Registry[Container] = Registry("artifact container")
FORMATS: Registry[Format] = Registry("format", list_command="edgepipe formats")
ENGINES: Registry[Engine] = Registry("engine", list_command="edgepipe formats")
DEVICES: dict[str, DeviceInfo] = {}
#: file suffix -> the model source that reads it
SOURCES: dict[str, ModelSource] = {}
#: the in-memory model sources, in the order registered
OBJECT_SOURCES: list[ObjectSource] = []


class Backend:
    """One engine's build side and run side, registered together."""

    def __init__(
        self,
        name: str,
        *,
        packages: tuple[str, ...] = (),
        export_options: type | None = None,
        section: str | None = None,
        description: str = "",
    ):
        self.name = name
        #: package distributions whose versions are recorded with every run
        self.packages = packages
        #: dataclass of the backend's export options (config section export.<section>), or None
        self.export_options = export_options
        #: the config section of its export options, named after the files it makes (export.tflite, export.onnx)
        self.section = section or name
        self.description = description
        BACKENDS.add(name, self)

    def container(
        self,
        name: str,
        *,
        suffixes: tuple[str, ...],
        default_engine: str,
        description: str,
        read_info: Callable[[Path], dict[str, Any]],
        companions: Callable[[Path], list[Path]] | None = None,
    ) -> Container:
        entry = Container(
            name,
            self.name,
            tuple(s.lower() for s in suffixes),
            default_engine,
            description,
            read_info,
            companions or (lambda path: []),
        )
        CONTAINERS.add(name, entry)
        return entry

    def device(self, name: str, description: str) -> None:
        DEVICES.setdefault(name, DeviceInfo(name, description))

    def format(
        self,
        name: str,
        *,
        container: str,
        precision: str,
        description: str,
        needs_calibration: bool = False,
        available: Callable[[], str | None] = always_available,
        tolerance: str | None = None,
        reference: bool = False,
        keras_only: str | Callable[[], str | None] | None = None,
    ) -> Callable:
        def decorator(fn: Callable) -> Callable:
            FORMATS.add(
                name,
                Format(
                    name,
                    self.name,
                    container,
                    precision,
                    description,
                    fn,
                    needs_calibration,
                    available,
                    tolerance,
                    reference,
                    keras_only,
                ),
            )
            return fn

        return decorator

    def model_source(
        self,
        *,
        suffixes: tuple[str, ...],
        read: Callable[..., Any],
        description: str,
        read_backbone: Callable[..., Any] | None = None,
        reference: str | None = None,
    ) -> None:
        """Register a kind of model file export starts from besides Keras' (see :class:`ModelSource`)."""
        for suffix in suffixes:
            SOURCES[suffix.lower()] = ModelSource(
                self.name, tuple(suffixes), read, description, read_backbone, reference
            )

    def object_source(self, *, accepts: Callable[[Any], bool], read: Callable[..., Any], description: str) -> None:
        """Register a kind of in-memory model export starts from besides Keras' (see :class:`ObjectSource`)."""
        OBJECT_SOURCES.append(ObjectSource(self.name, accepts, read, description))

    def engine(
        self,
        name: str,
        *,
        reads: tuple[str, ...],
        devices: tuple[str, ...],
        available: Callable[[], str | None] = always_available,
        description: str = "",
        settings: type | None = None,
        tunable_threads: bool = True,
    ) -> Callable:
        def decorator(cls: type) -> type:
            cls.engine = name
            cls.devices = devices
            ENGINES.add(
                name, Engine(name, self.name, cls, reads, devices, available, description, settings, tunable_threads)
            )
            return cls

        return decorator

    def formats(self) -> list[Format]:
        return [f for _, f in FORMATS if f.backend == self.name]

    def engines(self) -> list[Engine]:
        return [e for _, e in ENGINES if e.backend == self.name]
