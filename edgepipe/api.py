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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from edgepipe.errors import EdgepipeError

Echo = Callable[[str], None]
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
    "qat_epochs": "export.qat.epochs",
}


# ------------------------------------------------------------------------------------------- run


@dataclass
class Run:
    """A run directory and what its stages wrote."""

    path: Path
    config: Any  # RunConfig
    base: str  # which configuration the run started from

    @property
    def results(self):
        """The measured results (``edgepipe.results.Results``) of the bench stage."""
        from edgepipe.pipeline.rundir import RunDir
        from edgepipe.results import read_results

        return read_results(RunDir(self.path).results)

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        """The export stage's records: one per format, with status, verification and details."""
        from edgepipe.fileio import read_json
        from edgepipe.pipeline.rundir import RunDir

        return read_json(RunDir(self.path).artifacts_index)["artifacts"]

    @property
    def report(self) -> Path:
        return self.path / "report.md"


def resolve_config(config: Any = None, overrides: Optional[dict[str, Any]] = None, unsafe_load: bool = False):
    """(RunConfig, what it started from) for ``config`` (a YAML path, a dict, a RunConfig or None) with
    ``overrides`` (keyword names of OVERRIDE_KEYS, or dotted config keys) applied.

    Without a config: the run directory's saved config.yaml when the output folder is a run directory holding one;
    else, when ``data`` or ``model`` points at the user's own images or model, the defaults for a
    folder of images (``examples/image-folder.yaml``); else the built-in quickstart.
    """
    from edgepipe import config as cfg
    from edgepipe.pipeline.rundir import RunDir, is_run_directory

    dotted = {OVERRIDE_KEYS.get(k, k): v for k, v in (overrides or {}).items() if v is not None}
    if isinstance(config, cfg.RunConfig):
        data = cfg.to_yaml(config)
        return cfg.from_dict(cfg.parse_yaml(data, "the given configuration"), dotted, unsafe_load), "the given RunConfig"
    if isinstance(config, dict):
        return cfg.from_dict(config, dotted, unsafe_load), "the given dictionary"
    if config is not None:
        return cfg.load(config, dotted, unsafe_load), str(config)
    own = bool(dotted.get("data.path") or dotted.get("model.path"))
    base_path = cfg.image_folder_path() if own else cfg.quickstart_path()
    base = cfg.load(base_path)
    run_dir = Path(dotted["output"]) if dotted.get("output") else Path("runs") / dotted.get("name", base.name)
    if is_run_directory(run_dir) and RunDir(run_dir).config.is_file():
        return cfg.load(RunDir(run_dir).config, dotted, unsafe_load), f"the saved configuration of {run_dir}"
    described = "the defaults for your own images (examples/image-folder.yaml)" if own else "the built-in quickstart"
    return cfg.load(base_path, dotted, unsafe_load), described


def run(config: Any = None, *, stages: Optional[Sequence[str]] = None, force: bool = False, unsafe_load: bool = False,
        echo: Echo = print, **overrides: Any) -> Run:
    """Run the pipeline's stages (default: all of them) and return the run directory.

    ``config`` is a YAML path, a dict, a RunConfig or None (see :func:`resolve_config`);
    ``overrides`` are e.g. ``data="my_photos"``, ``arch="mobilenet_v2"``, ``epochs=5``,
    ``formats=["tflite-int8"]``, ``output="runs/x"``, or dotted keys ``{"train.learning_rate": 0.01}``.
    ``unsafe_load`` allows a ``model`` file whose loading runs code (only for files you trust).
    """
    from edgepipe.pipeline.export import expand_formats
    from edgepipe.pipeline.runner import STAGES, run_stages

    if overrides.get("formats"):
        overrides["formats"] = expand_formats(list(overrides["formats"]))
    unknown = [k for k in overrides if k not in OVERRIDE_KEYS and "." not in k]
    if unknown:
        from edgepipe.registry import did_you_mean

        raise EdgepipeError(f"run() got an unknown setting '{unknown[0]}'", did_you_mean(unknown[0], list(OVERRIDE_KEYS)))
    resolved, base = resolve_config(config, overrides, unsafe_load)
    echo(f"configuration: {base}")
    names = list(stages or STAGES)
    for name in names:
        if name not in STAGES:
            raise EdgepipeError(f"unknown stage '{name}'", "Stages: " + ", ".join(STAGES) + ".")
    handle = run_stages(resolved, names, echo=echo, force=force)
    return Run(handle.path, resolved, base)


# ----------------------------------------------------------------------------------------- export


@dataclass
class Exported:
    """What ``export`` wrote: the index file and one record per format (status, verification, details)."""

    index: Path
    artifacts: list[dict[str, Any]]

    def __getitem__(self, format_name: str) -> dict[str, Any]:
        return next(a for a in self.artifacts if a["format"] == format_name)

    def path(self, format_name: str) -> Path:
        return self.index.parent / self[format_name]["file"]


def export(model: Any, formats: Iterable[str] = ("all",), *, calibration: Any = None, labels: Optional[list[str]] = None,
           output: Optional[PathLike] = None, calibration_size: int = 200, seed: int = 0,
           calibration_method: str = "minmax", accuracy_budget_pp: float = 1.0, threads: Optional[int] = None,
           options: Optional[dict[str, Any]] = None, unsafe_load: bool = False, isolation: str = "auto",
           qat: Optional[dict[str, Any]] = None, echo: Echo = print) -> Exported:
    """Export a Keras model (a ``keras.Model`` or a .keras/.h5 path) to ``formats`` and verify each artifact.

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
    from edgepipe.pipeline.export import export_model

    stem = Path(model).stem if isinstance(model, (str, Path)) else getattr(model, "name", "model")
    out = Path(output) if output is not None else Path("exports") / stem
    index = export_model(model, list(formats), out, echo, calibration=calibration, class_names=labels,
                         calibration_size=calibration_size, seed=seed, calibration_method=calibration_method,
                         accuracy_budget_pp=accuracy_budget_pp, threads=threads,
                         options=_export_options(options), unsafe=unsafe_load, isolation=isolation,
                         qat=_qat_settings(qat))
    from edgepipe.fileio import read_json

    return Exported(index, read_json(index)["artifacts"])


def _export_options(options: Optional[dict[str, Any]]) -> dict[str, Any]:
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


def _qat_settings(qat: Optional[dict[str, Any]]) -> Any:
    """config.QatConfig from a dict of export.qat keys, validated as the config is."""
    from edgepipe import config as cfg

    return cfg.from_dict({"export": {"qat": dict(qat or {})}}).export.qat


# ------------------------------------------------------------------------------------------ bench


@dataclass
class BenchRequest:
    """A standalone benchmark of artifact files (no run directory), as the command line and SSH pass it on."""

    paths: list[Path]
    data: Optional[Path] = None
    labels: Optional[Path] = None
    threads: tuple[int, ...] = (1,)
    batches: tuple[int, ...] = (1,)
    devices: tuple[str, ...] = ("cpu",)
    engines: tuple[str, ...] = ()
    warmup: int = 10
    warmup_s: float = 0.2
    min_iterations: int = 50
    min_duration_s: float = 1.0
    seed: int = 0
    output: Optional[Path] = None
    #: measure each artifact's memory in a fresh process
    memory: bool = True
    #: sweep each engine's settings (threads up to the most in ``threads``) and measure with the fastest
    tune: bool = False


def bench(paths: Sequence[PathLike], *, data: Optional[PathLike] = None, labels: Optional[PathLike] = None,
          threads: Sequence[int] = (1,), batch: Sequence[int] = (1,), devices: Sequence[str] = ("cpu",),
          engines: Sequence[str] = (), warmup: int = 10, warmup_s: float = 0.2, min_iterations: int = 50,
          min_duration_s: float = 1.0, seed: int = 0, output: Optional[PathLike] = None, memory: bool = True,
          tune: bool = False, echo: Echo = print):
    """Measure artifact files (.tflite, .onnx, .keras, ...) alone: one record per artifact, engine, device,
    thread count and batch size; returns ``edgepipe.results.Results`` (and writes it to ``output``,
    JSON plus CSV, when given). ``data`` is an image folder for accuracy (classes in the order of
    ``labels``, the labels the artifact records, or sorted folder names)."""
    request = BenchRequest([Path(p) for p in paths], Path(data) if data else None, Path(labels) if labels else None,
                           tuple(threads), tuple(batch), tuple(devices), tuple(engines), warmup, warmup_s,
                           min_iterations, min_duration_s, seed, Path(output) if output else None, memory, tune)
    return bench_request(request, echo)


def bench_request(request: BenchRequest, echo: Echo = print):
    from edgepipe.harness import BenchSettings
    from edgepipe.pipeline.bench import bench_files

    check_bench_request(request)
    settings = BenchSettings(1, request.warmup, request.min_iterations, request.min_duration_s, request.warmup_s)
    results = bench_files(request.paths, echo, request.data, request.labels, request.threads, request.batches,
                          settings, request.seed, request.devices, request.engines, request.memory, request.tune)
    if request.output is not None:
        _write_results(request.output, results)
    return results


def check_bench_request(request: BenchRequest) -> None:
    """Refuse what cannot be measured, before anything runs."""
    from edgepipe.backends import devices, engines

    if not request.paths:
        raise EdgepipeError("no artifact files given", "Pass .tflite, .onnx, .keras or other artifact files.")
    for name, values in (("threads", request.threads), ("batch", request.batches)):
        if not values or any(int(v) < 1 for v in values):
            raise EdgepipeError(f"--{name} must be whole numbers of at least 1, got {list(values)}", f"e.g. --{name} 1,2")
    for device in request.devices:
        if device not in devices():
            from edgepipe.registry import did_you_mean

            raise EdgepipeError(f"unknown device '{device}'", did_you_mean(device, list(devices())))
    for name in request.engines:
        engines().canonical(name)
    if request.data is not None and not Path(request.data).is_dir():
        raise EdgepipeError(f"data folder '{request.data}' does not exist" if not Path(request.data).exists()
                            else f"data path '{request.data}' is not a folder",
                            "Pass an image folder with one subfolder per class.")
    if request.labels is not None and not Path(request.labels).is_file():
        raise EdgepipeError(f"labels file '{request.labels}' does not exist", "Pass the labels.txt the model was trained with.")
    if request.output is not None:
        from edgepipe.fileio import check_output_file

        check_output_file(request.output, owned=_is_results_file)


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


def bench_remote(host: str, request: BenchRequest, *, ssh_config: Optional[PathLike] = None,
                 remote_edgepipe: str = "edgepipe", remote_dir: str = "edgepipe-bench", data_sample: int = 20,
                 keep: bool = False, echo: Echo = print):
    """``bench`` on another machine over SSH (OpenSSH, batch mode); returns the remote results (and writes them
    to ``request.output`` when given)."""
    from edgepipe.remote import bench_remote as remote_bench
    from edgepipe.results import Results

    check_bench_request(request)
    data = remote_bench(host, request, echo=echo, per_class=data_sample, remote_edgepipe=remote_edgepipe,
                        remote_dir=remote_dir, ssh_config=Path(ssh_config) if ssh_config else None, keep=keep)
    results = Results.from_dict(data, source=f"the results fetched from {host}")
    if request.output is not None:
        _write_results(request.output, results)
    return results


# ---------------------------------------------------------------------------------------- compare


def compare(current: Any, baseline: Any, *, max_latency_regression: Optional[float] = None,
            max_accuracy_drop: Optional[float] = None, percentiles: Sequence[str] = ("p50",), strict: bool = False,
            accuracy_test: str = "none"):
    """Compare two results (paths or ``Results``); returns a Comparison whose ``violations`` name every threshold
    crossed (a CI gate fails when there are any). ``max_latency_regression`` is a fraction (0.1 = 10% slower).
    ``accuracy_test="mcnemar"``: a top-1 drop beyond ``max_accuracy_drop`` fails only when McNemar's one-sided exact test on
    the same held-out images tells it from chance (p < 0.05)."""
    from edgepipe.report.compare import PERCENTILES
    from edgepipe.report.compare import compare as run_compare

    for p in percentiles:
        if p not in PERCENTILES:
            raise EdgepipeError(f"unknown percentile '{p}'", "Use " + ", ".join(PERCENTILES) + ".")
    return run_compare(_results(current), _results(baseline), max_latency_regression, max_accuracy_drop,
                       tuple(percentiles), strict, accuracy_test)


def _results(value: Any):
    from edgepipe.results import Results, read_results

    return value if isinstance(value, Results) else read_results(value)


def merge(results: Sequence[Any], output: Optional[PathLike] = None) -> str:
    """Results from several devices in one Markdown table (and, with ``output``, a Pareto plot beside it)."""
    from edgepipe.fileio import check_output_file, write_text
    from edgepipe.report.merge import merge as render, merged_pareto_plot
    from edgepipe.report.table import analyse_many

    loaded = [_results(r) for r in results]
    if not loaded:
        raise EdgepipeError("nothing to merge", "Pass results files with --merge.")
    analysed = analyse_many(loaded)
    text = render(loaded, analysed)
    if output is not None:
        out = Path(output)
        png = out.with_suffix(".png")
        check_output_file(out, owned=lambda p: p.read_text(encoding="utf-8", errors="replace").startswith(MERGED_TITLE))
        check_output_file(png, owned=lambda p: p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n")
        if merged_pareto_plot(loaded, png, analysed):
            text += f"\n![accuracy against latency per device]({png.name})\n"
        write_text(out, text)
    return text


MERGED_TITLE = "# edgepipe: results merged across devices"


def verify(run_dir: PathLike):
    """Check every file of a run directory against its manifest and stage records; returns a Verification
    (``changed``, ``missing``, ``unrecorded`` files; ``stages_intact``; ``clean``)."""
    from edgepipe.pipeline.rundir import RunDir, is_run_directory
    from edgepipe.pipeline.runner import STAGES

    path = Path(run_dir)
    if not path.is_dir() or not is_run_directory(path):
        raise EdgepipeError(f"'{path}' is not an edgepipe run directory", "Pass a folder written by 'edgepipe run'.")
    return RunDir(path).verify(tuple(STAGES))


def formats_table() -> list[dict[str, Any]]:
    """Every export format: its engine, file type, precision, what it is, and whether this machine can build it."""
    from edgepipe.backends import CONTAINERS, formats

    return [{"format": name, "backend": f.backend, "container": f.container, "precision": f.precision,
             "default_engine": CONTAINERS.get(f.container).default_engine, "description": f.description,
             "unavailable": f.available()} for name, f in formats() if not f.reference]


__all__ = ["BenchRequest", "Exported", "Run", "bench", "bench_remote", "compare", "export", "formats_table", "merge",
           "resolve_config", "run", "verify"]

