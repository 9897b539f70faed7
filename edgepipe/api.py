"""The public Python API: ``run``, ``export``, ``bench``, ``compare`` (and ``verify``, ``merge``).

The command line is a thin layer over these functions; notebooks and other tools
call them directly::

    import edgepipe

    run = edgepipe.run("examples/image-folder.yaml", data="my_photos")
    print(run.results.records[0].top1)

Every function raises :class:`edgepipe.errors.EdgepipeError` (one line, what is
wrong and how to fix it) for bad input, and prints progress through ``echo``
(default: print; pass ``echo=lambda line: None`` to keep quiet).
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from edgepipe.config import BENCH_DEFAULTS, EXPORT_DEFAULTS
from edgepipe.errors import EdgepipeError
from edgepipe.export_index import ExportRecord
from edgepipe.progress import Echo

if TYPE_CHECKING:
    from edgepipe.config import RunConfig

PathLike = Union[str, Path]

#: flag name -> dotted config key: the keyword arguments ``run`` accepts besides a config
OVERRIDE_KEYS = {
    "data": "data.path",
    "arch": "model.arch",
    "alpha": "model.alpha",
    "weights": "model.weights",
    "input_size": "model.input_size",
    "strategy": "train.strategy",
    "epochs": "train.epochs",
    "formats": "export.formats",
    "output": "output",
    "seed": "seed",
    "threads": "bench.threads",
    "name": "name",
    "model": "model.path",
    "preprocessing": "model.preprocessing",
    "qat_epochs": "export.qat.epochs",
}


# ------------------------------------------------------------------------------------ arguments

#: kind -> (what it is, in an error; does a value qualify; the value to keep)
_KINDS: dict[str, tuple[str, Callable[[Any], bool], Callable[[Any], Any]]] = {
    "count": (
        "a whole number of at least 1",
        lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1,
        int,
    ),
    "name": ("a name (text)", lambda v: isinstance(v, str) and bool(v.strip()), str),
    "path": ("a path (text or pathlib.Path)", lambda v: isinstance(v, (str, os.PathLike)), Path),
    "results": (
        "a results file's path or Results",
        lambda v: isinstance(v, (str, os.PathLike)) or _is_results(v),
        lambda v: v if _is_results(v) else Path(v),
    ),
}


def _values(name: str, value: Any, kind: str, *, empty: bool = False) -> tuple:
    """``value`` as a tuple: one value, or a sequence of them (a str or a path is one value, never a sequence of
    characters). Every value must be of ``kind`` (see _KINDS; a bool is never a number); an EdgepipeError names the
    argument ``name`` and the value otherwise, and for an empty sequence unless ``empty``."""
    what = _KINDS[kind][0]
    items = (
        tuple(value)
        if isinstance(value, Iterable) and not isinstance(value, (str, bytes, os.PathLike, Mapping))
        else (value,)
    )
    if not items and not empty:
        raise EdgepipeError(f"{name} is empty", f"Give {what}, or a list of them.")
    for item in items:
        if not _KINDS[kind][1](item):
            raise EdgepipeError(
                f"{name} takes {what} or a list of them; got {item!r}"
                + (f" in {value!r}" if item is not value else ""),
                _HINTS.get(name),
            )
    return tuple(_KINDS[kind][2](item) for item in items)


def _value(name: str, value: Any, kind: str) -> Any:
    """The one value of ``kind`` in ``value`` (itself, or a sequence of one), as :func:`_values` checks it."""
    items = _values(name, value, kind)
    if len(items) != 1:
        raise EdgepipeError(f"{name} takes one value, got {value!r}", _HINTS.get(name))
    return items[0]


_HINTS = {
    "threads": "e.g. threads=2 or threads=[1, 2]",
    "batch": "e.g. batch=1 or batch=[1, 8]",
    "devices": "e.g. devices='cpu' or devices=['cpu', 'cuda']",
    "engines": "e.g. engines='openvino'",
    "formats": "e.g. formats='tflite-int8' or formats=['tflite-int8', 'onnx-fp32']",
}


def _is_results(value: Any) -> bool:
    from edgepipe.results import Results

    return isinstance(value, Results)


# ------------------------------------------------------------------------------------------- run


@dataclass
class Run:
    """A run directory and what its stages wrote."""

    path: Path
    config: RunConfig
    base: str  # which configuration the run started from

    @property
    def results(self):
        """The measured results (``edgepipe.results.Results``) of the bench stage."""
        from edgepipe.pipeline.rundir import RunDir
        from edgepipe.results import read_results

        return read_results(RunDir(self.path).results)

    @property
    def artifacts(self) -> list[ExportRecord]:
        """The export stage's records (``edgepipe.export_index.ExportRecord``): one per format, with status,
        verification, details and INT8 budget."""
        from edgepipe.export_index import read_export_index
        from edgepipe.pipeline.rundir import RunDir

        return read_export_index(RunDir(self.path).artifacts_index).artifacts

    @property
    def report(self) -> Path:
        return self.path / "report.md"


def resolve_config(config: Any = None, overrides: dict[str, Any] | None = None, unsafe_load: bool = False):
    """(RunConfig, what it started from) for ``config`` (a YAML path, a dict, a RunConfig or None) with
    ``overrides`` (keyword names of OVERRIDE_KEYS, or dotted config keys) applied.

    Without a config: the run directory's saved config.yaml when the output folder is a run directory holding one;
    else, when ``data`` or ``model`` points at the user's own images or model, the defaults for a
    folder of images (``examples/image-folder.yaml``); else the built-in quickstart. When ``arch``
    overrides the base's architecture, the base's settings for its own network (width multiplier,
    ImageNet weights, input size) that the overrides do not give follow the new one (said in what it
    started from).
    """
    from edgepipe import config as cfg

    dotted = {OVERRIDE_KEYS.get(k, k): v for k, v in (overrides or {}).items() if v is not None}
    mapping, described = _base_mapping(config, dotted)
    notes = _follow_architecture(mapping, dotted)
    if notes:
        described += "; " + "; ".join(notes)
    return cfg.from_dict(mapping, dotted, unsafe_load), described


def _base_mapping(config: Any, dotted: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The configuration mapping a run starts from, before overrides, and a description of it (a saved
    config.yaml is read only from a folder edgepipe marked as a run directory)."""
    from edgepipe import config as cfg
    from edgepipe.pipeline.rundir import RunDir, is_run_directory

    if isinstance(config, cfg.RunConfig):
        return cfg.parse_yaml(cfg.to_yaml(config), "the given configuration"), "the given RunConfig"
    if isinstance(config, dict):
        return dict(config), "the given dictionary"
    if config is not None:
        return cfg.read_mapping(config), str(config)
    own = bool(dotted.get("data.path") or dotted.get("model.path"))
    base_path = cfg.image_folder_path() if own else cfg.quickstart_path()
    base = cfg.load(base_path)
    run_dir = Path(dotted["output"]) if dotted.get("output") else Path("runs") / dotted.get("name", base.name)
    if is_run_directory(run_dir) and RunDir(run_dir).config.is_file():
        return cfg.read_mapping(RunDir(run_dir).config), f"the saved configuration of {run_dir}"
    described = "the defaults for your own images (examples/image-folder.yaml)" if own else "the built-in quickstart"
    return cfg.read_mapping(base_path), described


def _follow_architecture(mapping: dict[str, Any], dotted: dict[str, Any]) -> list[str]:
    """Adapt ``mapping``'s model settings to an architecture the overrides choose (see resolve_config)."""
    from edgepipe.architectures import get_architecture
    from edgepipe.architectures.classifier import follow_architecture

    model = mapping.get("model") if isinstance(mapping.get("model"), dict) else {}
    from edgepipe.config import ModelConfig

    chosen, written = dotted.get("model.arch"), model.get("arch", ModelConfig.arch)
    if not isinstance(chosen, str) or dotted.get("model.path"):
        return []
    arch = get_architecture(chosen)
    if _architecture_name(written) == arch.name:
        return []
    given = {key.split(".", 1)[1] for key in dotted if key.startswith("model.")}
    written_or_default = {key: model.get(key, getattr(ModelConfig, key)) for key in ("alpha", "weights", "input_size")}
    changes, notes = follow_architecture(arch, written_or_default, given)
    if changes:
        mapping["model"] = {**model, **changes}
    return notes


def _architecture_name(name: Any) -> str | None:
    """The registry's name for ``name`` (None when it names no architecture: the base's own problem)."""
    from edgepipe.architectures import get_architecture

    try:
        return get_architecture(name).name if isinstance(name, str) else None
    except EdgepipeError:
        return None


def run(
    config: Any = None,
    *,
    stages: Sequence[str] | None = None,
    force: bool = False,
    unsafe_load: bool = False,
    echo: Echo = print,
    **overrides: Any,
) -> Run:
    """Run the pipeline's stages (default: all of them) and return the run directory.

    ``config`` is a YAML path, a dict, a RunConfig or None (see :func:`resolve_config`);
    ``overrides`` are e.g. ``data="my_photos"``, ``arch="mobilenet_v2"``, ``epochs=5``,
    ``formats=["tflite-int8"]``, ``output="runs/x"``, or dotted keys ``{"train.learning_rate": 0.01}``.
    ``model="backbone.onnx"`` trains a new head on a backbone in ONNX (feature extraction), its ``preprocessing``
    declared as for ``export`` (a name, or a mapping of layout, channels, scale, mean, std).
    ``unsafe_load`` allows a ``model`` file whose loading runs code (only for files you trust).
    """
    from edgepipe.pipeline.sequence import STAGES, run_stages
    from edgepipe.standalone.export import expand_formats

    if overrides.get("formats") is not None:
        overrides["formats"] = expand_formats(list(_values("formats", overrides["formats"], "name")))
    if overrides.get("preprocessing") is not None:
        overrides["preprocessing"] = _preprocessing_setting(overrides["preprocessing"])
    for key in ("model", "data", "output"):  # paths as pathlib.Path too: the configuration keeps text
        if isinstance(overrides.get(key), os.PathLike):
            overrides[key] = os.fspath(overrides[key])
    unknown = [k for k in overrides if k not in OVERRIDE_KEYS and "." not in k]
    if unknown:
        from edgepipe.registry import did_you_mean

        raise EdgepipeError(
            f"run() got an unknown setting '{unknown[0]}'", did_you_mean(unknown[0], list(OVERRIDE_KEYS))
        )
    resolved, base = resolve_config(config, overrides, unsafe_load)
    echo(f"configuration: {base}")
    names = list(STAGES if stages is None else _values("stages", stages, "name"))
    for name in names:
        if name not in STAGES:
            raise EdgepipeError(f"unknown stage '{name}'", "Stages: " + ", ".join(STAGES) + ".")
    handle = run_stages(resolved, names, echo=echo, force=force)
    return Run(handle.path, resolved, base)


def _preprocessing_setting(value: Any) -> Any:
    """model.preprocessing from what ``run`` was given: a name stays a name; a mapping or a pixels.PixelTransform
    (a name with keys overriding it, as the command line's flags give) becomes the mapping of its known keys."""
    from edgepipe.pixels import resolve

    if isinstance(value, str):
        return value
    return {k: v for k, v in resolve(value).as_dict().items() if v is not None}


# ----------------------------------------------------------------------------------------- export


@dataclass
class Exported:
    """What ``export`` wrote: the index file and one record per format (``edgepipe.export_index.ExportRecord``:
    status, reason, verification, details, INT8 budget)."""

    index: Path
    artifacts: list[ExportRecord]

    def __getitem__(self, format_name: str) -> ExportRecord:
        """The record of ``format_name``; KeyError when it was not among the formats exported."""
        found = next((a for a in self.artifacts if a.format == format_name), None)
        if found is None:
            raise KeyError(format_name)
        return found

    def path(self, format_name: str) -> Path:
        return self.index.parent / self[format_name].file


def export(
    model: Any,
    formats: Union[str, Iterable[str]] = ("all",),
    *,
    calibration: Any = None,
    labels: list[str] | None = None,
    output: PathLike | None = None,
    calibration_size: int = 200,
    seed: int = 0,
    calibration_method: str = "minmax",
    accuracy_budget_pp: float = EXPORT_DEFAULTS.accuracy_budget_pp,
    threads: int | None = None,
    options: dict[str, Any] | None = None,
    unsafe_load: bool = False,
    isolation: str = "auto",
    qat: dict[str, Any] | None = None,
    preprocessing: Any = None,
    input_size: int | None = None,
    input_shape: Sequence[int] | None = None,
    echo: Echo = print,
) -> Exported:
    """Export a Keras model (a ``keras.Model`` or a .keras/.h5 path), an image classifier in ONNX (a .onnx path),
    or one from PyTorch (a ``torch.nn.Module`` with its ``input_shape``, e.g. ``(1, 3, 224, 224)``, or a .pt2 path
    saved by ``torch.export.save``; needs ``edgepipe[torch]``) to ``formats`` (one name or a list) and verify each
    artifact.

    An ONNX model's ``preprocessing`` is what it was trained on, folded into every artifact (each takes raw
    NHWC pixels): a mapping of ``layout`` (nchw/nhwc; default: read from the input's shape), ``channels``
    (rgb/bgr), ``scale`` (raw pixels divided by it first), ``mean`` and ``std`` (per channel, after scaling),
    or a named transform ('torch', 'tf', 'caffe', 'lite', 'unit', 'none'); not needed for an ONNX file edgepipe
    wrote. ``input_size`` fixes a dynamic spatial size. Its artifacts are verified against the file itself,
    run by ONNX Runtime on the same raw pixels. A PyTorch model is exported to ONNX by PyTorch
    (``torch.onnx.export``), then taken the same way, with the same ``preprocessing``; its artifacts are verified
    against the PyTorch module itself, run by torch on the same raw pixels. ``unsafe_load`` lets a .pt2 file
    load objects only pickle can (which runs code: only for files you trust).

    ``calibration`` calibrates INT8 formats and verifies every artifact: an image folder (one
    subfolder per class; 80% calibrates, 20% verifies and judges the INT8 accuracy budget), or arrays:
    ``(images, labels)`` (uint8 NHWC raw pixels and class indices) or ``images`` alone (no accuracy
    budget then). ``labels`` names the model's classes (default: the folder's class names).
    ``options`` maps a config section (``"tflite"``, ``"onnx"``, ``"tensorrt"``...) to a dict of its
    export options, e.g. ``{"onnx": {"opset": 13}}``. ``isolation`` converts each format in a child
    process (``"process"``), in this one (``"none"``), or in child processes for models over 40 MB
    (``"auto"``), so the memory a converter holds is returned when it ends. ``qat`` sets the
    quantization-aware fine-tuning tried last when no post-training INT8 recipe is within
    ``accuracy_budget_pp`` (the config's ``export.qat`` keys, e.g. ``{"epochs": 0}`` never tries it).
    """
    from edgepipe.pixels import resolve
    from edgepipe.standalone.export import export_model

    stem = Path(model).stem if isinstance(model, (str, Path)) else getattr(model, "name", None) or type(model).__name__
    out = Path(output) if output is not None else Path("exports") / stem
    index = export_model(
        model,
        list(_values("formats", formats, "name")),
        out,
        echo,
        calibration=calibration,
        class_names=None if labels is None else list(_values("labels", labels, "name")),
        calibration_size=calibration_size,
        seed=seed,
        calibration_method=calibration_method,
        accuracy_budget_pp=accuracy_budget_pp,
        threads=None if threads is None else _value("threads", threads, "count"),
        options=_export_options(options),
        unsafe=unsafe_load,
        isolation=isolation,
        qat=_qat_settings(qat),
        preprocessing=None if preprocessing is None else resolve(preprocessing),
        input_size=None if input_size is None else _value("input_size", input_size, "count"),
        input_shape=input_shape,
    )
    from edgepipe.export_index import read_export_index

    return Exported(index, read_export_index(index).artifacts)


def _export_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """{backend name: options dataclass} from {config section: dict of options}, validated as the config is."""
    from edgepipe import config as cfg
    from edgepipe.backends import BACKENDS

    sections = {b.section: name for name, b in BACKENDS if b.export_options}
    unknown = [s for s in (options or {}) if s not in sections]
    if unknown:
        from edgepipe.registry import did_you_mean

        raise EdgepipeError(f"no backend has export options '{unknown[0]}'", did_you_mean(unknown[0], list(sections)))
    export_config = cfg.from_dict({"export": {**(options or {})}}).export
    return {name: getattr(export_config, section) for section, name in sections.items()}


def _qat_settings(qat: dict[str, Any] | None) -> Any:
    """config.QatConfig from a dict of export.qat keys, validated as the config is."""
    from edgepipe import config as cfg

    return cfg.from_dict({"export": {"qat": dict(qat or {})}}).export.qat


# ------------------------------------------------------------------------------------------ bench


@dataclass
class BenchRequest:
    """A standalone benchmark of artifact files (no run directory), as the command line and SSH pass it on."""

    paths: list[Path]
    _: KW_ONLY  # the rest by name: fifteen settings in a row are too easy to misplace
    data: Path | None = None
    labels: Path | None = None
    threads: tuple[int, ...] = (1,)
    batches: tuple[int, ...] = (1,)
    devices: tuple[str, ...] = ("cpu",)
    engines: tuple[str, ...] = ()
    warmup: int = BENCH_DEFAULTS.warmup
    warmup_s: float = BENCH_DEFAULTS.warmup_s
    min_iterations: int = BENCH_DEFAULTS.min_iterations
    min_duration_s: float = BENCH_DEFAULTS.min_duration_s
    seed: int = 0
    output: Path | None = None
    #: measure each artifact's memory in a fresh process
    memory: bool = True
    #: sweep each engine's settings (threads up to the most in ``threads``) and measure with the fastest
    tune: bool = False
    #: after timing, profile each measured artifact per op with its engine's own profiler (a separate session)
    profile: bool = False

    def __post_init__(self) -> None:
        # the list-valued fields take one value or a sequence, checked here once for every caller
        self.paths = [Path(p) for p in _values("paths", self.paths, "path", empty=True)]
        self.threads = _values("threads", self.threads, "count")
        self.batches = _values("batch", self.batches, "count")
        self.devices = _values("devices", self.devices, "name")
        self.engines = _values("engines", self.engines, "name", empty=True)


def bench(
    paths: Union[PathLike, Sequence[PathLike]],
    *,
    data: PathLike | None = None,
    labels: PathLike | None = None,
    threads: Union[int, Sequence[int]] = (1,),
    batch: Union[int, Sequence[int]] = (1,),
    devices: Union[str, Sequence[str]] = ("cpu",),
    engines: Union[str, Sequence[str]] = (),
    warmup: int = BENCH_DEFAULTS.warmup,
    warmup_s: float = BENCH_DEFAULTS.warmup_s,
    min_iterations: int = BENCH_DEFAULTS.min_iterations,
    min_duration_s: float = BENCH_DEFAULTS.min_duration_s,
    seed: int = 0,
    output: PathLike | None = None,
    memory: bool = True,
    tune: bool = False,
    profile: bool = False,
    echo: Echo = print,
):
    """Measure artifact files (.tflite, .onnx, .keras, ...) alone: one record per artifact, engine, device,
    thread count and batch size; returns ``edgepipe.results.Results`` (and writes it to ``output``,
    JSON plus CSV, when given). ``data`` is an image folder for accuracy (classes in the order of
    ``labels``, the labels the artifact records, or sorted folder names). ``paths``, ``threads``, ``batch``,
    ``devices`` and ``engines`` each take one value or a list (``threads=2``, ``threads=[1, 2]``)."""
    request = BenchRequest(
        list(_values("paths", paths, "path", empty=True)),
        data=Path(data) if data else None,
        labels=Path(labels) if labels else None,
        threads=_values("threads", threads, "count"),
        batches=_values("batch", batch, "count"),
        devices=_values("devices", devices, "name"),
        engines=_values("engines", engines, "name", empty=True),
        warmup=warmup,
        warmup_s=warmup_s,
        min_iterations=min_iterations,
        min_duration_s=min_duration_s,
        seed=seed,
        output=Path(output) if output else None,
        memory=memory,
        tune=tune,
        profile=profile,
    )
    return bench_request(request, echo)


def bench_request(request: BenchRequest, echo: Echo = print):
    from edgepipe.harness import BenchSettings
    from edgepipe.standalone.bench import bench_files

    check_bench_request(request)
    settings = BenchSettings(1, request.warmup, request.min_iterations, request.min_duration_s, request.warmup_s)
    results = bench_files(
        request.paths,
        echo,
        request.data,
        request.labels,
        request.threads,
        request.batches,
        settings,
        request.seed,
        request.devices,
        request.engines,
        request.memory,
        request.tune,
        request.profile,
    )
    if request.output is not None:
        _write_results(request.output, results)
    return results


def check_bench_request(request: BenchRequest) -> None:
    """Refuse what cannot be measured, before anything runs."""
    from edgepipe.backends import devices, engines

    if not request.paths:
        raise EdgepipeError("no artifact files given", "Pass .tflite, .onnx, .keras or other artifact files.")
    for device in request.devices:
        if device not in devices():
            from edgepipe.registry import did_you_mean

            raise EdgepipeError(f"unknown device '{device}'", did_you_mean(device, list(devices())))
    for name in request.engines:
        engines().canonical(name)
    if request.data is not None and not Path(request.data).is_dir():
        raise EdgepipeError(
            f"data folder '{request.data}' does not exist"
            if not Path(request.data).exists()
            else f"data path '{request.data}' is not a folder",
            "Pass an image folder with one subfolder per class.",
        )
    if request.labels is not None and not Path(request.labels).is_file():
        raise EdgepipeError(
            f"labels file '{request.labels}' does not exist", "Pass the labels.txt the model was trained with."
        )
    if request.output is not None:
        from edgepipe.report import is_results_csv

        _check_output_files([(request.output, _is_results_file), (_beside(request.output, ".csv"), is_results_csv)])


def _check_output_files(files: list[tuple[Path, Callable[[Path], bool]]]) -> None:
    """Refuse, before anything is written, a command's output file or any companion written beside it (first the
    main one, then each companion, each with the test that recognises it as edgepipe's): a folder, an existing file
    edgepipe did not write, or a main output whose name is that of a companion. So a user's own file is never
    replaced, whichever of them it stands in place of, and a rerun replaces what edgepipe wrote earlier."""
    from edgepipe.fileio import check_output_file

    (main, _), *companions = files
    for companion, _ in companions:
        if companion == main and main.name:  # an unnamed path ('.') has no companion: the check below names it
            raise EdgepipeError(
                f"'{main}' would be both the output and the {main.suffix} file written beside it",
                "Choose an output name with another suffix (e.g. .json for results, .md for a report).",
            )
    for path, owned in files:
        check_output_file(path, owned=owned)


def _beside(path: Path, suffix: str) -> Path:
    """The companion file with ``suffix`` written beside ``path`` (``path`` itself when it has no name, such as '.',
    so the check of the main output names the problem)."""
    return path.with_suffix(suffix) if path.name else path


def _is_results_file(path: Path) -> bool:
    from edgepipe.results import read_results

    try:
        read_results(path)
    except EdgepipeError:
        return False
    return True


def _write_results(path: Path, results) -> Path:
    from edgepipe.report import write_results

    return write_results(path, results)


def bench_remote(
    host: str,
    request: BenchRequest,
    *,
    ssh_config: PathLike | None = None,
    remote_edgepipe: str = "edgepipe",
    remote_dir: str = "edgepipe-bench",
    data_sample: int = 20,
    keep: bool = False,
    echo: Echo = print,
):
    """``bench`` on another machine over SSH (OpenSSH, batch mode); returns the remote results (and writes them
    to ``request.output`` when given)."""
    from edgepipe.remote import bench_remote as remote_bench
    from edgepipe.results import Results

    check_bench_request(request)
    data = remote_bench(
        host,
        request,
        echo=echo,
        per_class=data_sample,
        remote_edgepipe=remote_edgepipe,
        remote_dir=remote_dir,
        ssh_config=Path(ssh_config) if ssh_config else None,
        keep=keep,
    )
    results = Results.from_dict(data, source=f"the results fetched from {host}")
    if request.output is not None:
        _write_results(request.output, results)
    return results


# ---------------------------------------------------------------------------------------- measure


def measure_models(
    archs: Sequence[str] | None = None,
    formats: Sequence[str] | None = None,
    *,
    threads: int | None = None,
    input_size: int | None = None,
    force: bool = False,
    remote: str | None = None,
    ssh_config: PathLike | None = None,
    remote_edgepipe: str = "edgepipe",
    remote_dir: str = "edgepipe-bench",
    warmup: int = BENCH_DEFAULTS.warmup,
    warmup_s: float = BENCH_DEFAULTS.warmup_s,
    min_iterations: int = BENCH_DEFAULTS.min_iterations,
    min_duration_s: float = BENCH_DEFAULTS.min_duration_s,
    cache: PathLike | None = None,
    echo: Echo = print,
):
    """What each architecture costs on this machine (or ``remote``, over SSH): p50/p90 latency in ms at batch 1,
    artifact size and peak memory in MB, per format; returns an ``edgepipe.choose.catalogue.Catalogue`` of typed
    rows (``edgepipe.choose.measure.Measurement``).

    ``archs``: registry names, or ``["all"]`` (default: every architecture of at most 6 M parameters by its
    published count). ``formats`` default to tflite-fp32, tflite-int8, openvino-int8 and onnx-int8; one this
    machine cannot build is a row with its reason. Each network is built with random weights (its batch-norm
    statistics and biases drawn as a trained network's) at its default width and ``input_size`` (default: its
    own), exported here (INT8 calibrated on 32 seeded random-pixel images) and its
    formats timed together in interleaved rounds with ``threads`` (default: every core usable here; required with
    ``remote``). Results are cached (``cache``, default $XDG_CACHE_HOME/edgepipe/measurements.json) per device,
    engine versions, network, format and conditions; ``force`` measures again.
    """
    from edgepipe.choose.catalogue import measure_catalogue, resolve_architectures
    from edgepipe.choose.measure import DEFAULT_FORMATS, Conditions, MeasurementCache
    from edgepipe.device import resolve_threads
    from edgepipe.standalone.export import expand_formats

    names = resolve_architectures(archs)
    chosen = expand_formats(list(formats or DEFAULT_FORMATS))
    if input_size is not None and int(input_size) < 1:
        raise EdgepipeError(f"input size must be at least 1 pixel, got {input_size}", "e.g. --input-size 224")
    if remote and not threads:
        raise EdgepipeError(
            "--remote needs --threads N", "The remote machine's cores are not known here; pass --threads."
        )
    conditions = Conditions(
        threads=int(threads or resolve_threads(None)),
        warmup=warmup,
        warmup_s=warmup_s,
        min_iterations=min_iterations,
        min_duration_s=min_duration_s,
    )
    target = _measure_target(remote, ssh_config, remote_edgepipe, remote_dir)
    store = MeasurementCache(Path(cache) if cache else None, echo=echo)
    return measure_catalogue(names, chosen, conditions, target, store, input_size=input_size, force=force, echo=echo)


def _measure_target(remote: str | None, ssh_config: PathLike | None, remote_edgepipe: str, remote_dir: str):
    """The Target artifacts are timed on: this machine through ``bench_request``, or ``remote`` through
    ``bench_remote`` (the same harness there), both with seeded random pixels and, when the conditions ask for it,
    memory in a fresh process."""
    from edgepipe.choose.measure import Target, local_identity, remote_identity
    from edgepipe.device import device_label, fingerprint

    def request(paths, conditions):
        return BenchRequest(
            list(paths),
            threads=(conditions.threads,),
            batches=(conditions.batch_size,),
            warmup=conditions.warmup,
            warmup_s=conditions.warmup_s,
            min_iterations=conditions.min_iterations,
            min_duration_s=conditions.min_duration_s,
            seed=conditions.seed,
            memory=conditions.memory,
        )

    if remote:
        from edgepipe.remote import check_destination

        check_destination(remote)
        return Target(
            f"{remote} (over SSH)",
            remote_identity(remote),
            lambda paths, conditions, echo: bench_remote(
                remote,
                request(paths, conditions),
                ssh_config=ssh_config,
                remote_edgepipe=remote_edgepipe,
                remote_dir=remote_dir,
                echo=echo,
            ),
            remote=remote,
        )
    return Target(
        device_label(fingerprint()),
        local_identity(),
        lambda paths, conditions, echo: bench_request(request(paths, conditions), echo),
    )


# ---------------------------------------------------------------------------------------- profile


def profile(
    artifact: PathLike,
    *,
    threads: int = 1,
    engine: str | None = None,
    device: str = "cpu",
    batch: int = 1,
    calls: int = 20,
    model: PathLike | None = None,
    output: PathLike | None = None,
    echo: Echo = print,
):
    """Profile one artifact per op with its engine's own profiler (in a session of its own) on seeded random
    pixels; returns an ``edgepipe.profiles.Profile`` (written as JSON to ``output`` when given).

    ``engine`` defaults to the artifact's own; ``model`` (its Keras model file) maps ops to source layers for
    MACs and GMAC/s per layer; the ops the INT8 budget kept in float are read from the artifacts.json
    beside the artifact. A profile the engine cannot take has status 'skipped' and the reason."""
    from edgepipe.backends import create_runner, identify
    from edgepipe.device import fingerprint
    from edgepipe.harness.profile import profile_runner
    from edgepipe.pipeline.bench import model_layers, profile_join
    from edgepipe.profiles import Profile
    from edgepipe.standalone.bench import bench_images, probe

    path = _profile_inputs(artifact, threads, batch, calls, model, output)
    found = identify(path)
    shape, _ = probe(found)
    images, _ = bench_images(None, None, shape, 0)
    with create_runner(found, threads=threads, engine=engine, device=device) as runner:
        base = Profile(str(path), found.format, found.precision, runner.engine, device, threads, batch)
        plan = _ProfiledPlan(found, base)
        echo(f"profiling {path.name} [{runner.engine}, {device}, {threads} thread(s), batch {batch}]")
        result = profile_runner(
            runner,
            images,
            base,
            calls=calls,
            **profile_join(plan, fingerprint(), model_layers(Path(model) if model else None)),
        )
    if output is not None:
        from edgepipe.fileio import write_json

        write_json(output, result.to_dict())
    return result


@dataclass
class _ProfiledPlan:
    """What profile_join reads of a plan: the artifact and a record-like object."""

    artifact: Any
    record: Any

    def __post_init__(self):
        self.record.int8_budget = None


def _profile_inputs(
    artifact: PathLike, threads: int, batch: int, calls: int, model: PathLike | None, output: PathLike | None
) -> Path:
    """Refuse what cannot be profiled, before anything runs; the artifact's path."""
    path = Path(artifact)
    if not path.is_file():
        raise EdgepipeError(
            f"artifact '{path}' does not exist" if not path.exists() else f"'{path}' is not a file",
            "Pass an artifact file (.tflite, .onnx, .xml, ...).",
        )
    for name, value in (("threads", threads), ("batch", batch), ("calls", calls)):
        if int(value) < 1:
            raise EdgepipeError(f"--{name} must be at least 1, got {value}", f"e.g. --{name} 1")
    if model is not None and not Path(model).is_file():
        raise EdgepipeError(
            f"model file '{model}' does not exist", "Pass the .keras model the artifact was exported from."
        )
    if output is not None:
        from edgepipe.fileio import check_output_file

        check_output_file(Path(output), owned=_is_profile_file)
    return path


def _is_profile_file(path: Path) -> bool:
    """Whether ``path`` is a profile edgepipe wrote (edgepipe overwrites only its own files)."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and {"artifact", "profiler", "ops", "op_ms"} <= set(data)


# ----------------------------------------------------------------------------------------- search


def search(
    data: PathLike | None = None,
    config: Any = None,
    *,
    options: Any = None,
    archs: Union[str, Sequence[str], None] = None,
    alphas: Union[float, Sequence[float], None] = None,
    input_sizes: Union[int, Sequence[int], None] = None,
    formats: Union[str, Sequence[str], None] = None,
    weights: Union[str, Mapping[str, str], None] = None,
    allow_random_weights: bool | None = None,
    max_latency_ms: float | None = None,
    percentile: str | None = None,
    max_size_mb: float | None = None,
    max_memory_mb: float | None = None,
    min_top1: float | None = None,
    threads: int | None = None,
    remote: str | None = None,
    ssh_config: PathLike | None = None,
    remote_edgepipe: str | None = None,
    remote_dir: str | None = None,
    output: PathLike | None = None,
    force: bool | None = None,
    memory: bool | None = None,
    min_iterations: int | None = None,
    min_duration_s: float | None = None,
    cache: PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    echo: Echo = print,
):
    """Which architecture, width, input size, weights and format is the most accurate on ``data`` within the
    budgets on this machine (or ``remote``); returns an ``edgepipe.choose.answer.SearchResult`` (every candidate
    and artifact with its figures and status, the winner and its run directory ``<output>/winner``).

    Candidates are ``archs`` (default: every architecture of at most 6 M published parameters) x ``alphas`` x
    ``input_sizes`` (default: each architecture's own) x ``formats`` (default: tflite-fp32, tflite-int8,
    openvino-int8, onnx-int8). ``weights``: imagenet (files already on this machine: nothing is downloaded),
    none (random, with ``allow_random_weights``), a file, or {arch: value}; ``allow_random_weights`` also lets
    random weights stand in for missing ImageNet ones (each such candidate says so). Budgets: ``max_latency_ms``
    at ``percentile`` (p50, p90, p95, p99) per image at batch 1, ``max_size_mb``, ``max_memory_mb`` (peak resident),
    ``min_top1`` (percent, validation split). ``config`` (a YAML path, dict or RunConfig) and ``overrides`` (dotted
    keys) give the data, training, export and bench settings every candidate shares, and its ``search:`` section
    any of these options; ``options`` (an ``edgepipe.choose.options.SearchOptions``) and then the keyword
    arguments given (not None) override it. Peak memory (a fresh process per artifact) is measured only with
    ``max_memory_mb`` or ``memory=True``; otherwise the answer says it was not measured, and why. The latency
    step is a screening timing (at most 20 calls and 0.15 s per artifact, or ``min_iterations`` and
    ``min_duration_s``); artifacts within 25% of ``max_latency_ms`` are timed again with the config's bench
    floors, and the winner is timed again in its run.
    A killed search resumes in ``output`` (default runs/search); ``force`` redoes it.
    EdgepipeError (exit 2 on the command line) for a bad budget, or when no artifact meets the budgets (naming
    the closest).
    """
    from edgepipe import config as cfg
    from edgepipe.choose.loop import run_search
    from edgepipe.choose.options import SearchOptions

    given = {k: v for k, v in locals().items() if k in _SEARCH_KEYWORDS}
    if options is not None and not isinstance(options, SearchOptions):
        raise EdgepipeError(
            f"options must be an edgepipe.choose.options.SearchOptions, got {type(options).__name__}",
            "Pass the options as keyword arguments, or build SearchOptions(...).",
        )
    base = config if config is not None else (cfg.image_folder_path() if data else cfg.quickstart_path())
    resolved, described = resolve_config(base, {**(overrides or {}), **({"data": str(data)} if data else {})})
    chosen = SearchOptions(**given).over((options or SearchOptions()).over(SearchOptions.from_config(resolved.search)))
    request = _search_request(resolved, chosen, echo)
    echo(f"configuration: {described}")
    return run_search(request, echo)


#: api.search's keyword arguments that are search options (the others: data, config, overrides, echo)
_SEARCH_KEYWORDS = frozenset(
    (
        "archs alphas input_sizes formats weights allow_random_weights max_latency_ms percentile max_size_mb "
        "max_memory_mb min_top1 threads remote ssh_config remote_edgepipe remote_dir output force memory "
        "min_iterations min_duration_s cache"
    ).split()
)


def _search_request(config, options, echo: Echo):
    """The checked SearchRequest from the run configuration and the resolved SearchOptions (everything refused
    here is refused before any work starts)."""
    from edgepipe.choose.candidates import check_weights_spec
    from edgepipe.choose.catalogue import resolve_architectures
    from edgepipe.choose.loop import SearchRequest
    from edgepipe.choose.measure import DEFAULT_FORMATS, MeasurementCache
    from edgepipe.standalone.export import expand_formats

    o = options
    budgets = o.budgets()
    names = resolve_architectures(None if o.archs is None else list(_values("archs", o.archs, "name")))
    alphas = o.alphas
    widths = None if alphas is None else [_width(a) for a in (alphas if isinstance(alphas, Iterable) else [alphas])]
    sizes = None if o.input_sizes is None else [int(s) for s in _values("input_sizes", o.input_sizes, "count")]
    weights = o.weights or "imagenet"
    check_weights_spec(weights, names)
    if o.remote and not o.threads:
        raise EdgepipeError(
            "--remote needs --threads N", "The remote machine's cores are not known here; pass --threads."
        )
    if budgets.max_memory_mb is not None and o.memory is False:
        raise EdgepipeError(
            "--max-memory-mb needs the memory measurement that --no-memory turns off", "Drop one of them."
        )
    conditions, confirm = _screening(config.bench, o, budgets)
    return SearchRequest(
        config=config,
        archs=names,
        alphas=widths,
        sizes=sizes,
        formats=expand_formats(list(_values("formats", o.formats or DEFAULT_FORMATS, "name"))),
        weights=weights,
        allow_random=bool(o.allow_random_weights),
        budgets=budgets,
        conditions=conditions,
        target=_measure_target(
            o.remote, o.ssh_config, o.remote_edgepipe or "edgepipe", o.remote_dir or "edgepipe-bench"
        ),
        cache=MeasurementCache(Path(o.cache) if o.cache else None, echo=echo),
        output=Path(o.output) if o.output else Path("runs") / "search",
        force=bool(o.force),
        confirm=confirm,
    )


#: the search's screening timing: at most this many calls and seconds per artifact (the bench section's floors
#: when lower); artifacts near the latency budget are timed again with the bench section's own floors. Against
#: full floors (50 calls, 1 s) side by side, 0.15 s stayed within 17% on 135 figures, as 0.3 s did within 15%, well
#: inside the 20% that a figure more than 25% from a budget can be off without changing sides
#: (benchmarks/screening.py; docs/search.md)
SCREEN_ITERATIONS, SCREEN_DURATION_S = 20, 0.15
#: ...after a warm-up of at most this many seconds per artifact (the bench section's when lower)
SCREEN_WARMUP_S = 0.05
#: synthetic images the latency step calibrates INT8 on: latency does not depend on the ranges they give
SCREEN_CALIBRATION = 8


def _screening(bench, o, budgets):
    """(the latency step's Conditions, its Confirm or None). Peak memory, a fresh process per artifact, is
    measured only with a memory budget or when asked (``memory``); the timing floors are the screening's
    unless given (``min_iterations``, ``min_duration_s``), and with a latency budget the artifacts near it are
    timed again with the bench section's floors, when those are fuller."""
    from edgepipe.choose.measure import Conditions, Confirm
    from edgepipe.device import resolve_threads

    threads = int(_value("threads", o.threads, "count") if o.threads else resolve_threads(bench.threads))
    conditions = Conditions(
        threads=threads,
        warmup=bench.warmup,
        warmup_s=min(bench.warmup_s, SCREEN_WARMUP_S),
        min_iterations=o.min_iterations or min(bench.min_iterations, SCREEN_ITERATIONS),
        min_duration_s=min(bench.min_duration_s, SCREEN_DURATION_S)
        if o.min_duration_s is None
        else float(o.min_duration_s),
        calibration_images=SCREEN_CALIBRATION,
        memory=bool(o.memory) or budgets.max_memory_mb is not None,
        weights="candidate",  # each candidate's network as its accuracy step trains it (edgepipe.choose.loop)
    )
    full = dataclasses.replace(
        conditions,
        warmup_s=bench.warmup_s,
        min_iterations=bench.min_iterations,
        min_duration_s=bench.min_duration_s,
        memory=False,
    )
    fuller = full.min_iterations > conditions.min_iterations or full.min_duration_s > conditions.min_duration_s
    if budgets.max_latency_ms is None or not fuller:
        return conditions, None
    return conditions, Confirm(full, budgets.percentile, budgets.max_latency_ms)


def _width(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 4:
        raise EdgepipeError(
            f"alphas takes width multipliers above 0 (e.g. 0.35, 1.0); got {value!r}", "e.g. alphas=[0.35, 0.5]"
        )
    return float(value)


# ---------------------------------------------------------------------------------------- compare


def compare(
    current: Any,
    baseline: Any,
    *,
    max_latency_regression: Union[float, str, None] = None,
    max_accuracy_drop: Union[float, str, None] = None,
    percentiles: Union[str, Sequence[str]] = ("p50",),
    strict: bool = False,
    accuracy_test: str = "none",
):
    """Compare two results (paths or ``Results``); returns a Comparison whose ``violations`` name every threshold
    crossed (a CI gate fails when there are any). ``max_latency_regression`` is a fraction (0.1 = 10% slower) or
    text with a percent sign ("10%"); ``max_accuracy_drop`` is in percentage points of top-1 (0.5 or "0.5pp").
    ``percentiles`` is one or a list of p50, p90, p95, p99.
    ``accuracy_test="mcnemar"``: a top-1 drop beyond ``max_accuracy_drop`` fails only when McNemar's one-sided exact test on
    the same held-out images tells it from chance (p < 0.05)."""
    from edgepipe.report.compare import PERCENTILES, parse_fraction, parse_points
    from edgepipe.report.compare import compare as run_compare

    chosen = _values("percentiles", percentiles, "name")
    for p in chosen:
        if p not in PERCENTILES:
            raise EdgepipeError(f"unknown percentile '{p}'", "Use " + ", ".join(PERCENTILES) + ".")
    if isinstance(max_latency_regression, str):
        max_latency_regression = parse_fraction(max_latency_regression, "max_latency_regression")
    if isinstance(max_accuracy_drop, str):
        max_accuracy_drop = parse_points(max_accuracy_drop, "max_accuracy_drop")
    return run_compare(
        _results(current), _results(baseline), max_latency_regression, max_accuracy_drop, chosen, strict, accuracy_test
    )


def _results(value: Any):
    from edgepipe.results import Results, read_results

    return value if isinstance(value, Results) else read_results(value)


def merge(results: Any, output: PathLike | None = None) -> str:
    """Results (one or a list of paths or ``Results``) from several devices in one Markdown table (and, with
    ``output``, a Pareto plot beside it)."""
    from edgepipe.fileio import write_text
    from edgepipe.report.merge import merge as render
    from edgepipe.report.merge import merged_pareto_plot
    from edgepipe.report.table import analyse_many

    loaded = [_results(r) for r in _values("results", results, "results", empty=True)]
    if not loaded:
        raise EdgepipeError("nothing to merge", "Pass results files with --merge.")
    analysed = analyse_many(loaded)
    text = render(loaded, analysed)
    if output is not None:
        from edgepipe.report.plots import is_edgepipe_png

        out = Path(output)
        png = _beside(out, ".png")
        _check_output_files(
            [
                (out, lambda p: p.read_text(encoding="utf-8", errors="replace").startswith(MERGED_TITLE)),
                (png, is_edgepipe_png),
            ]
        )
        if merged_pareto_plot(loaded, png, analysed):
            text += f"\n![accuracy against latency per device]({png.name})\n"
        write_text(out, text)
    return text


MERGED_TITLE = "# edgepipe: results merged across devices"


def verify(run_dir: PathLike):
    """Check every file of a run directory against its manifest and stage records; returns an Integrity
    (``changed``, ``missing``, ``unrecorded`` files; ``stages_intact``; ``clean``)."""
    from edgepipe.pipeline.rundir import RunDir, is_run_directory
    from edgepipe.pipeline.sequence import STAGES

    path = Path(run_dir)
    if not path.is_dir() or not is_run_directory(path):
        raise EdgepipeError(f"'{path}' is not an edgepipe run directory", "Pass a folder written by 'edgepipe run'.")
    return RunDir(path).check_integrity(tuple(STAGES))


def formats_table() -> list[dict[str, Any]]:
    """Every export format: its engine, file type, precision, what it is, and whether this machine can build it."""
    from edgepipe.backends import CONTAINERS, formats

    return [
        {
            "format": name,
            "backend": f.backend,
            "container": f.container,
            "precision": f.precision,
            "default_engine": CONTAINERS.get(f.container).default_engine,
            "description": f.description,
            "unavailable": f.available(),
        }
        for name, f in formats()
        if not f.reference
    ]


# ------------------------------------------------------------------ what the command line asks besides the above
# The command line imports nothing of edgepipe but this module, edgepipe.errors and edgepipe.versions: its smaller
# questions (what a file is, how a flag parses, how a result prints) are answered here, from where each rule lives.


def refused_write(exc: OSError) -> EdgepipeError | None:
    """The one-line error for a write the output refused (full disk, quota, read-only); None for any other OSError."""
    import errno

    from edgepipe.fileio import NO_SPACE, write_error

    if exc.errno not in NO_SPACE | {errno.EROFS}:
        return None
    return write_error(exc.filename or "to the output", exc)


def is_chief() -> bool:
    """Whether this process writes the run directory: worker 0 of a cluster (TF_CONFIG), or the only process."""
    from edgepipe.training.controls import is_chief as chief

    return chief()


def artifact_suffixes() -> tuple[str, ...]:
    """The file suffixes of the artifacts edgepipe can run (every backend's containers)."""
    from edgepipe.backends import artifact_suffixes as suffixes

    return suffixes()


def is_model_file(path: PathLike) -> bool:
    """Whether ``path`` names a model file to export on its own (Keras, or a file a backend reads as a source)."""
    from edgepipe.architectures.loading import is_model_file as model_file

    return model_file(path)


def pixel_transform(named: Any = None, **detailed: Any) -> Any:
    """The pixels.PixelTransform of a preprocessing name and/or its detailed keys (layout, channels, scale, mean,
    std); EdgepipeError for an unknown name or a bad value."""
    from edgepipe.pixels import resolve

    return resolve(named, **detailed)


def profile_lines(result: Any) -> list[str]:
    """A profile (what ``profile`` returns) as the lines the command line prints."""
    from edgepipe.report.profile import console_lines

    return console_lines(result)


def models(count: bool = True, echo: Echo | None = None) -> list[dict[str, Any]]:
    """Every registered architecture with its facts (parameters, and MACs when ``count``)."""
    from edgepipe.architectures.facts import catalogue

    return catalogue(count, echo=echo)


def models_table(rows: list[dict[str, Any]]) -> str:
    """``models()`` rows as the text table ``edgepipe models`` prints."""
    from edgepipe.architectures.facts import render_models_table

    return render_models_table(rows)


def measured_models_text(result: Any, as_csv: bool = False) -> str:
    """What ``measure_models`` returned, as CSV or as the text table ``edgepipe models --measure`` prints."""
    from edgepipe.choose.catalogue import render_csv, render_table

    return render_csv(result) if as_csv else render_table(result)


def parse_fraction(text: str, flag: str = "--max-latency-regression") -> float:
    """A percentage written with its sign ("10%") as a fraction (0.1); EdgepipeError otherwise."""
    from edgepipe.report.compare import parse_fraction as fraction

    return fraction(text, flag)


def parse_points(text: str, flag: str = "--max-accuracy-drop") -> float:
    """Percentage points ("0.5" or "0.5pp") as a number; EdgepipeError for a percent sign or anything else."""
    from edgepipe.report.compare import parse_points as points

    return points(text, flag)


def engines_table() -> list[dict[str, Any]]:
    """Every engine: the file types it reads and the devices it runs on."""
    from edgepipe.backends import engines

    return [{"engine": name, "reads": list(e.reads), "devices": list(e.devices)} for name, e in engines()]


def devices_table() -> list[dict[str, Any]]:
    """Every device an engine can run on, with what it is."""
    from edgepipe.backends import devices

    return [{"device": name, "description": d.description} for name, d in devices().items()]


__all__ = [
    "BenchRequest",
    "Exported",
    "Run",
    "artifact_suffixes",
    "bench",
    "bench_remote",
    "compare",
    "devices_table",
    "engines_table",
    "export",
    "formats_table",
    "is_chief",
    "is_model_file",
    "measure_models",
    "measured_models_text",
    "merge",
    "models",
    "models_table",
    "parse_fraction",
    "parse_points",
    "pixel_transform",
    "profile",
    "profile_lines",
    "refused_write",
    "resolve_config",
    "run",
    "search",
    "verify",
]
