"""Stage 3: export the trained model to every requested format, calibrated on the training split,
and verify every artifact against the model it came from."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.backends import (
    ExportContext,
    Format,
    artifact_digest,
    artifact_files,
    artifact_size_mb,
    formats,
)
from edgepipe.calibration import CalibrationSet, draw
from edgepipe.config import EXPORT_DEFAULTS, RunConfig
from edgepipe.data import materialize
from edgepipe.errors import EdgepipeError, first_line
from edgepipe.export_index import ExportIndex, ExportRecord, read_export_index, write_export_index
from edgepipe.fileio import inside, link_file, make_folder, read_json, sha256_file
from edgepipe.harness.memory import peak_memory_mb, reset_peak_memory
from edgepipe.pipeline import foreign
from edgepipe.pipeline.rundir import RunDir
from edgepipe.pipeline.stage import Echo, Stage, file_digest
from edgepipe.progress import step
from edgepipe.quantization.options import QatConfig
from edgepipe.results import Status, skipped_verification
from edgepipe.verification import ArtifactScorer, run_artifact, verify

VERIFY_IMAGES = 256


def _inputs(config: RunConfig, run: RunDir) -> dict:
    return {
        "seed": config.seed,
        "export": dataclasses.asdict(config.export),
        "model": file_digest(foreign.trained_model(config, run)),
        "dataset": file_digest(run.dataset_index),
        "build": file_digest(run.build_info),
    }


def index_files(index_path: Path) -> list[Path]:
    """Every file an export wrote, per its index: the index, each artifact and the files that travel with it."""
    if not index_path.exists():
        return [index_path]
    folder = index_path.parent
    files = [index_path]
    for record in read_export_index(index_path).artifacts:
        if record.status.measured:
            files += artifact_files(inside(folder, record.file))
    return files


def _outputs(run: RunDir) -> list:
    return index_files(run.artifacts_index)


@dataclass(kw_only=True)
class ExportJob:
    """Everything one export needs besides the model: names, calibration, validation data, options."""

    formats: list[str]
    out_dir: Path
    stem: str
    labels: list[str]
    preprocessing: dict
    calibration_set: CalibrationSet | None = None
    calibration_pool: tuple[np.ndarray, np.ndarray] | None = None
    validation: tuple[np.ndarray, np.ndarray] | None = None
    calibration_method: str = "minmax"
    accuracy_budget_pp: float = EXPORT_DEFAULTS.accuracy_budget_pp
    threads: int = 1
    #: backend name -> its export options dataclass (defaults for the backends not named)
    options: dict[str, Any] = field(default_factory=dict)
    #: where temporary work goes (a folder inside the run or output directory)
    workdir_parent: Path | None = None
    #: quantization-aware fine-tuning settings (None: its defaults)
    qat: QatConfig | None = None
    #: a source that is not a Keras model (what backends.model_source read), and its raw-pixel graph on disk
    source: Any = None
    source_onnx: Path | None = None
    #: why there are no ``validation`` images to verify the artifacts on (recorded as a skipped verification)
    unverified: str | None = None
    #: TFLite and ONNX converted from the Keras model's frozen graph (ExportContext.frozen_graph)
    frozen_graph: bool = False
    #: a folder of artifacts made before, each filed under a digest of everything that enters its file (see
    #: artifact_key): one found there is copied in place of converting the model again, then verified like any
    #: other. With ``file_artifacts``, each artifact made here is filed there too
    artifact_cache: Path | None = None
    file_artifacts: bool = False
    #: False: take nothing from the cache (a forced redo), only file what is made
    take_cached: bool = True


def _context(model, job: ExportJob, echo: Echo, reference: np.ndarray | None) -> ExportContext:
    ctx = ExportContext(
        model,
        job.labels,
        job.preprocessing,
        job.calibration_set,
        workdir_parent=job.workdir_parent,
        calibration_method=job.calibration_method,
        accuracy_budget_pp=job.accuracy_budget_pp,
        calibration_pool=job.calibration_pool,
        options=dict(job.options),
        qat=job.qat,
        echo=echo,
        source_onnx=job.source_onnx,
        source_name=job.source.name if job.source is not None else None,
        frozen_graph=job.frozen_graph,
    )
    if job.validation is not None and reference is not None:
        images, labels = job.validation
        ctx.score = ArtifactScorer(images, labels, job.threads)
        ctx.reference_top1 = float(np.mean(np.argmax(reference, 1) == labels))
        ctx.validation = (images, labels)
        ctx.reference_probabilities = reference
    return ctx


def _reference(model, job: ExportJob) -> np.ndarray | None:
    """The source model's probabilities on the validation images (what every artifact is judged against): the
    Keras model's, or a foreign source's own (an ONNX file run by ONNX Runtime on the same raw pixels)."""
    if job.validation is None:
        return None
    if job.source is not None:
        return job.source.reference(job.validation[0], job.threads)
    from edgepipe.training.controls import predict_arrays

    return predict_arrays(model, job.validation[0].astype(np.float32))


#: export.isolation auto: convert in child processes when the model file is larger than this (about ten million
#: parameters): converting ResNet50 (98 MB) to four formats in one process peaked at 6.7 GB resident
ISOLATE_ABOVE_MB = 40


def isolated(setting: str, model_path: Path | None) -> bool:
    """Whether to convert each format in a child process (export.isolation: auto, process or none)."""
    if setting == "auto":
        return model_path is not None and Path(model_path).stat().st_size / 1e6 > ISOLATE_ABOVE_MB
    return setting == "process"


def export_all(
    model, job: ExportJob, echo: Echo, model_path: Path | None = None, isolate: bool = False, unsafe: bool = False
) -> list[ExportRecord]:
    """Export the model to each format and verify each artifact against it.

    In this process, ``model`` (a keras.Model) is used directly; with ``isolate``, each format is
    converted in a child process that loads ``model_path``, so the memory a converter holds is returned
    when it ends (this process never loads TensorFlow for the export). Each record carries the peak
    resident memory of the process that made it. A format that fails, cannot be built here, or fails
    verification is recorded with its reason, never raised, so the others still export.
    """
    reference = (
        _run_child(_Task("reference", str(model_path), job, unsafe=unsafe), echo)["probabilities"]
        if isolate
        else _reference(model, job)
    )
    verify_images = None if reference is None else job.validation[0][:VERIFY_IMAGES]
    records: list[ExportRecord] = []
    outputs: dict[str, str] = {}
    ctx = None if isolate else _context(model, job, echo, reference)
    cache = job.artifact_cache
    cached = cache is not None and (job.file_artifacts or cache.is_dir())  # nothing to look up: no digests taken
    weights = weights_digest(model) if cached and not isolate and model is not None else None
    settings = None if weights is None else settings_digest(job)  # once: every format's key shares it
    try:
        for name in job.formats:
            fmt = formats().get(name)
            key = None if weights is None else artifact_key(weights, name, settings)
            adopted = None if key is None or not job.take_cached else _adopted(job, key, fmt, echo)
            if adopted is not None:
                record = adopted
                ctx.outputs.setdefault(name, job.out_dir / record.file)
            elif isolate:
                done = _run_child(_Task("format", str(model_path), job, name, outputs, reference, unsafe), echo)
                record = done["record"]
                record.export_process, record.peak_rss_mb = "a child process", done["peak_rss_mb"]
                outputs.update(done["outputs"])
            else:
                reset_peak_memory()
                record = _export_one(ctx, fmt, job.out_dir, job.stem, echo)
                record.export_process, record.peak_rss_mb = "this process", peak_memory_mb()
                if key is not None and job.file_artifacts and record.status == Status.OK:
                    _file(job, key, record)
            if key is not None and record.status == Status.OK:  # where it is (or would be) filed
                record.details = {**(record.details or {}), "artifact_cache_key": key}
            if record.status == Status.OK and verify_images is None:
                record.verification = skipped_verification(job.unverified or "no validation images to verify on")
                echo(f"    not verified: {record.verification['reason']}")
            elif record.status == Status.OK:
                _verify_into(
                    record,
                    fmt,
                    job.out_dir / record.file,
                    verify_images,
                    reference[:VERIFY_IMAGES],
                    job.threads,
                    echo,
                )
            records.append(record)
    finally:
        if ctx is not None:
            ctx.close()
    return records


@dataclass
class _Task:
    """What a child process of an isolated export does: the reference probabilities, or one format."""

    kind: str
    model_path: str
    job: ExportJob | None
    format_name: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    reference: np.ndarray | None = None
    unsafe: bool = False


def _child(task: _Task, echo: Echo) -> dict[str, Any]:
    """In the child process: load the model and do the task."""
    from edgepipe.architectures.loading import load_keras_model
    from edgepipe.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    model = load_keras_model(task.model_path, task.unsafe)
    if task.kind == "facts":
        return {"facts": _facts(model), "peak_rss_mb": peak_memory_mb()}
    if task.kind == "reference":
        return {"probabilities": _reference(model, task.job), "peak_rss_mb": peak_memory_mb()}
    ctx = _context(model, task.job, echo, task.reference)
    ctx.outputs.update({k: Path(v) for k, v in task.outputs.items()})
    try:
        record = _export_one(ctx, formats().get(task.format_name), task.job.out_dir, task.job.stem, echo)
    finally:
        ctx.close()
    made = {task.format_name: str(task.job.out_dir / record.file)} if record.status == Status.OK else {}
    return {"record": record, "outputs": made, "peak_rss_mb": peak_memory_mb()}


def _facts(model) -> dict[str, Any]:
    """What an export needs to know of the model before converting it: input size and channels, outputs, name."""
    shape = model.inputs[0].shape
    return {
        "size": int(shape[1]),
        "channels": int(shape[-1]),
        "outputs": int(model.outputs[0].shape[-1]),
        "name": model.name,
    }


def _run_child(task: _Task, echo: Echo, temporary: bool = False) -> dict[str, Any]:
    """Run a task in a fresh Python process (``edgepipe.child``), relaying its lines; its result, or
    EdgepipeError. The task and its answer are exchanged in the job's work folder, or with ``temporary``
    (before the output folder may be made) in the system's temporary folder."""
    from edgepipe import child

    workdir = None if temporary else task.job.workdir_parent
    if workdir is not None:
        make_folder(workdir)
    try:
        return child.run("edgepipe.pipeline.export:_in_child", task, pickled=True, echo=echo, folder=workdir)
    except child.ChildFailed as exc:
        if exc.kind == "raised":
            raise EdgepipeError(f"exporting in a child process failed: {exc.line}") from None
        raise EdgepipeError(
            f"the export process ended unexpectedly (exit code {exc.exit_code})",
            "If it ran out of memory, export fewer formats at a time.",
        ) from None


def _in_child(task: _Task) -> dict[str, Any]:
    """What the child process runs: the task, its lines printed for the parent to relay."""
    return _child(task, lambda line: print(line, flush=True))


def _verify_into(
    record: ExportRecord, fmt: Format, path: Path, images: np.ndarray, reference: np.ndarray, threads: int, echo: Echo
) -> None:
    try:
        record.verification = verify(fmt, run_artifact(path, fmt.name, images, threads), reference)
    except Exception as exc:  # the artifact exists but its engine cannot run it
        reason = f"could not run: {first_line(exc)}"
        record.verification = {"passed": False, "problems": [reason]}
    v = record.verification
    if not v["passed"]:
        record.status = Status.FAILED_VERIFICATION
        record.reason = "; ".join(v["problems"])
        echo(f"    verification FAILED: {record.reason}")
    else:
        echo(
            f"    verified on {v['images']} images: top-1 agreement {v['top1_agreement']:.1%}, "
            f"max |Δp| {v['max_abs_diff']:.2e}"
        )


def _export_one(ctx: ExportContext, fmt: Format, out_dir: Path, stem: str, echo: Echo) -> ExportRecord:
    """One format built into ``out_dir``: an OK record with its size, digest and details, or a skipped or failed
    one with its reason (never raised)."""
    path = out_dir / f"{stem}-{fmt.name}{fmt.suffix}"
    record = ExportRecord.of_format(fmt, path.name, Status.SKIPPED)
    unavailable = fmt.available() or (fmt.unbuildable_from_source() if ctx.model is None else None)
    if unavailable:
        echo(f"  {fmt.name}: skipped ({unavailable})")
        return dataclasses.replace(record, reason=unavailable)
    start = time.perf_counter()
    try:
        with step(echo, f"  {fmt.name}: exporting"):
            details = fmt.build(ctx, path)
    except Exception as exc:  # any converter failure is reported for this format; the others go on
        reason = first_line(exc, 300)
        echo(f"  {fmt.name}: failed ({reason})")
        return dataclasses.replace(record, status=Status.FAILED, reason=reason)
    seconds = time.perf_counter() - start
    ctx.outputs.setdefault(fmt.name, path)
    echo(f"  {fmt.name}: {path.name} ({artifact_size_mb(path):.2f} MB, {seconds:.1f} s)")
    details = dict(details)
    budget = details.pop("int8_budget", None)
    if budget is not None and budget.met is False:
        echo(f"    accuracy budget not met: {budget.note}")
    return dataclasses.replace(
        record,
        status=Status.OK,
        size_mb=round(artifact_size_mb(path), 4),
        sha256=artifact_digest(path),
        export_seconds=round(seconds, 2),
        details=details,
        int8_budget=budget,
    )


# ------------------------------------------------------------------------------------------ artifact cache

#: an artifact cache entry: the artifact's files and its export record (without verification: each export that
#: takes it verifies it again against its own model)
CACHED_RECORD = "record.json"


def _arrays_digest(arrays) -> str | None:
    """sha256 of arrays in order: each one's shape, type and bytes (None for None)."""
    if arrays is None:
        return None
    import hashlib

    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape} {array.dtype}".encode() + array.tobytes())
    return digest.hexdigest()


def weights_digest(model) -> str:
    """sha256 of a Keras model's weights, in order: two models with the same digest compute the same thing."""
    return _arrays_digest(model.get_weights())


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def artifact_key(weights: str, format_name: str, settings: str) -> str:
    """The name an artifact of ``format_name`` is filed under: a digest of the model's weights (weights_digest)
    and of everything else that enters its file (``settings``: settings_digest of the export job)."""
    from edgepipe.fileio import sha256_value

    return sha256_value({"weights": weights, "format": format_name, "settings": settings})[:16]


def settings_digest(job: ExportJob) -> str:
    """A digest of what, besides the weights, enters an export job's files: the labels and preprocessing their
    metadata holds, the calibration set and pool, the validation images an INT8 budget is judged on, the recipes'
    settings, the threads, and edgepipe's and the engines' versions. The file name (``job.stem``) is not part of it."""
    from edgepipe.device import library_versions
    from edgepipe.fileio import sha256_value

    return sha256_value(
        {
            "labels": list(job.labels),
            "preprocessing": job.preprocessing,
            "calibration": job.calibration_set.digest if job.calibration_set is not None else None,
            "calibration_pool": _arrays_digest(job.calibration_pool),
            "validation": _arrays_digest(job.validation),
            "method": job.calibration_method,
            "budget_pp": job.accuracy_budget_pp,
            "threads": job.threads,
            "options": {k: _plain(v) for k, v in job.options.items()},
            "qat": _plain(job.qat),
            "frozen_graph": job.frozen_graph,
            "versions": library_versions(),
        }
    )


def _companions(path: Path) -> list[Path]:
    """The artifact file and the paths its companion files have beside it (existing or not), in order."""
    from edgepipe.backends import container_of

    return [path, *container_of(path).companions(path)]


def _link_artifact(made: Path, target: Path) -> None:
    """``target`` made the same artifact as ``made``, its companion files first, so that a crash in between never
    leaves the main file (an IR's .xml) beside another artifact's companion (its .bin)."""
    target.unlink(missing_ok=True)
    for source, copy in reversed(list(zip(_companions(made), _companions(target)))):
        if source.exists():
            link_file(source, copy)


def _file(job: ExportJob, key: str, record: ExportRecord) -> None:
    """File the artifact ``record`` names (made in ``job.out_dir``) in the job's artifact cache under ``key``."""
    from edgepipe.fileio import write_json

    entry = job.artifact_cache / key
    _link_artifact(job.out_dir / record.file, entry / record.file)
    write_json(entry / CACHED_RECORD, dataclasses.replace(record, verification=None).to_dict())


def _adopted(job: ExportJob, key: str, fmt: Format, echo: Echo) -> ExportRecord | None:
    """The artifact filed under ``key`` in the job's artifact cache, copied into ``job.out_dir`` under this job's
    name, with its record; None when there is none, or its record or files are not what was filed."""
    entry = job.artifact_cache / key
    try:
        record = ExportRecord.from_dict(read_json(entry / CACHED_RECORD))
        source = entry / str(record.file)
        if record.status != Status.OK or not source.is_file() or artifact_digest(source) != record.sha256:
            return None
    except Exception:  # a damaged entry is no artifact: the format is converted as if there were none
        return None
    start = time.perf_counter()
    target = job.out_dir / f"{job.stem}-{fmt.name}{fmt.suffix}"
    _link_artifact(source, target)
    echo(
        f"  {fmt.name}: {target.name} ({artifact_size_mb(target):.2f} MB), the artifact made before from the same "
        f"weights and settings (artifact cache {key}), not converted again"
    )
    return dataclasses.replace(
        record,
        file=target.name,
        export_seconds=round(time.perf_counter() - start, 2),
        details={**(record.details or {}), "from_artifact_cache": True},
        export_process="this process (copied from the artifact cache)",
        peak_rss_mb=None,
    )


def backend_options(config: RunConfig) -> dict[str, Any]:
    """The export options of every backend that has them, from the config's export.<backend> sections."""
    from edgepipe.backends import BACKENDS

    return {name: getattr(config.export, backend.section) for name, backend in BACKENDS if backend.export_options}


def _run(config: RunConfig, run: RunDir, echo: Echo) -> None:
    from edgepipe.architectures.loading import load_keras_model
    from edgepipe.device import resolve_threads

    m, e = config.model, config.export
    source = foreign.export_source(run) if foreign.is_foreign(config) else None
    isolate = source is None and isolated(e.isolation, run.model)
    model = None if isolate or source is not None else load_keras_model(str(run.model), config.unsafe_load)
    dataset = materialize(read_json(run.dataset_index), m.input_size, m.channels)
    calibration_set = draw(dataset.train.images, dataset.train.labels, e.calibration_size, config.seed)
    echo(f"calibration set: {len(calibration_set)} training images, sha256 {calibration_set.digest[:12]}")
    built = read_json(run.build_info)
    val = dataset.splits["val"]
    job = ExportJob(
        formats=e.formats,
        out_dir=run.artifacts_dir,
        stem=built["architecture"].replace("user:", ""),
        labels=run.read_labels(),
        preprocessing=built["preprocessing"],
        calibration_set=calibration_set,
        calibration_pool=(dataset.train.images, dataset.train.labels),
        validation=(val.images, val.labels),
        calibration_method=e.calibration_method,
        accuracy_budget_pp=e.accuracy_budget_pp,
        threads=resolve_threads(config.bench.threads),
        options=backend_options(config),
        workdir_parent=run.scratch,
        qat=e.qat,
        artifact_cache=run.file("cache") / "artifacts",  # what a search put there for its winner (see choose)
        source=source,
        source_onnx=None if source is None else run.model_onnx,
    )
    echo(f"exporting to {run.artifacts_dir}" + (" (each format in a child process)" if isolate else "") + ":")
    records = export_all(model, job, echo, run.model, isolate, config.unsafe_load)
    made_from = foreign.trained_model(config, run)
    if not any(r.status.measured for r in records):
        raise EdgepipeError("no format could be exported", "See the reasons above; fix them or choose other --formats.")
    write_export_index(
        run.artifacts_index,
        ExportIndex(
            source_model=made_from.name,
            source_sha256=sha256_file(made_from),
            source=source.describe() if source is not None else None,
            calibration=calibration_set.describe() if calibration_set is not None else None,
            artifacts=records,
        ),
    )


STAGE = Stage(
    "export",
    "Export the trained model to every configured format and verify each artifact.",
    _inputs,
    _outputs,
    _run,
    requires=("train",),
)
