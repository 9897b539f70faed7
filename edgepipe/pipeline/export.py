"""Stage 3: export the trained model to every requested format, calibrated on the training split,
and verify every artifact against the model it came from."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgepipe.calibration import CalibrationSet, draw
from edgepipe.backends import ExportContext, Format, artifact_digest, artifact_files, artifact_size_mb, formats
from edgepipe.config import RunConfig
from edgepipe.data import materialize
from edgepipe.errors import EdgepipeError
from edgepipe.fileio import make_folder, read_json, sha256_file, write_json
from edgepipe.pipeline.rundir import RunDir
from edgepipe.pipeline.stage import Echo, Stage, file_digest
from edgepipe.progress import step
from edgepipe.results import Status
from edgepipe.verification import Evaluator, run_artifact, verify

VERIFY_IMAGES = 256


def _inputs(config: RunConfig, run: RunDir) -> dict:
    return {
        "seed": config.seed,
        "export": dataclasses.asdict(config.export),
        "model": file_digest(run.model),
        "dataset": file_digest(run.dataset_index),
        "build": file_digest(run.build_info),
    }


def index_files(index_path: Path) -> list[Path]:
    """Every file an export wrote, per its index: the index, each artifact and the files that travel with it."""
    if not index_path.exists():
        return [index_path]
    folder = index_path.parent
    files = [index_path]
    for record in read_json(index_path).get("artifacts", []):
        if Status(record["status"]).measured:
            files += artifact_files(folder / record["file"])
    return files


def _outputs(run: RunDir) -> list:
    return index_files(run.artifacts_index)


@dataclass
class ExportJob:
    """Everything one export needs besides the model: names, calibration, validation data, options."""

    formats: list[str]
    out_dir: Path
    stem: str
    labels: list[str]
    preprocessing: dict
    calibration_set: Optional[CalibrationSet] = None
    calibration_pool: Optional[tuple[np.ndarray, np.ndarray]] = None
    validation: Optional[tuple[np.ndarray, np.ndarray]] = None
    calibration_method: str = "minmax"
    accuracy_budget_pp: float = 1.0
    threads: int = 1
    #: backend name -> its export options dataclass (defaults for the backends not named)
    options: dict[str, Any] = field(default_factory=dict)
    #: where temporary work goes (a folder inside the run or output directory)
    workdir_parent: Optional[Path] = None


def export_all(model, job: ExportJob, echo: Echo) -> list[dict[str, Any]]:
    """Export ``model`` to each format and verify each artifact against it.

    A format that fails, cannot be built here, or fails verification is
    recorded with its reason, never raised, so the others still export.
    """
    ctx = ExportContext(model, job.labels, job.preprocessing, job.calibration_set, workdir_parent=job.workdir_parent,
                        calibration_method=job.calibration_method, accuracy_budget_pp=job.accuracy_budget_pp,
                        calibration_pool=job.calibration_pool, options=dict(job.options), echo=echo)
    verify_images = reference = None
    if job.validation is not None:
        images, labels = job.validation
        probabilities = model.predict(images.astype(np.float32), batch_size=64, verbose=0)
        ctx.evaluate = Evaluator(images, labels, job.threads)
        ctx.reference_top1 = float(np.mean(np.argmax(probabilities, 1) == labels))
        ctx.validation = (images, labels)
        ctx.reference_probabilities = probabilities
        verify_images, reference = images[:VERIFY_IMAGES], probabilities[:VERIFY_IMAGES]
    records = []
    try:
        for name in job.formats:
            fmt = formats().get(name)
            record = _export_one(ctx, fmt, job.out_dir, job.stem, echo)
            if record["status"] == Status.OK.value and verify_images is not None:
                _verify_into(record, fmt, job.out_dir / record["file"], verify_images, reference, job.threads, echo)
            records.append(record)
    finally:
        ctx.close()
    return records


def _verify_into(record: dict[str, Any], fmt: Format, path: Path, images: np.ndarray, reference: np.ndarray,
                 threads: int, echo: Echo) -> None:
    try:
        record["verification"] = verify(fmt, run_artifact(path, fmt.name, images, threads), reference)
    except Exception as exc:  # the artifact exists but its engine cannot run it
        reason = f"could not run: {str(exc).strip().splitlines()[0][:200]}"
        record["verification"] = {"passed": False, "problems": [reason]}
    v = record["verification"]
    if not v["passed"]:
        record["status"] = Status.FAILED_VERIFICATION.value
        record["reason"] = "; ".join(v["problems"])
        echo(f"    verification FAILED: {record['reason']}")
    else:
        echo(f"    verified on {v['images']} images: top-1 agreement {v['top1_agreement']:.1%}, "
             f"max |Δp| {v['max_abs_diff']:.2e}")


def _export_one(ctx: ExportContext, fmt: Format, out_dir: Path, stem: str, echo: Echo) -> dict[str, Any]:
    path = out_dir / f"{stem}-{fmt.name}{fmt.suffix}"
    record: dict[str, Any] = {"format": fmt.name, "precision": fmt.precision, "container": fmt.container,
                              "file": path.name, "description": fmt.description}
    unavailable = fmt.available()
    if unavailable:
        echo(f"  {fmt.name}: skipped ({unavailable})")
        return {**record, "status": Status.SKIPPED.value, "reason": unavailable}
    start = time.perf_counter()
    try:
        with step(echo, f"  {fmt.name}: exporting"):
            details = fmt.build(ctx, path)
    except Exception as exc:  # any converter failure is reported for this format; the others go on
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        echo(f"  {fmt.name}: failed ({reason})")
        return {**record, "status": Status.FAILED.value, "reason": reason}
    seconds = time.perf_counter() - start
    ctx.outputs.setdefault(fmt.name, path)
    echo(f"  {fmt.name}: {path.name} ({artifact_size_mb(path):.2f} MB, {seconds:.1f} s)")
    budget = details.get("int8_budget")
    if budget and budget.get("met") is False:
        echo(f"    accuracy budget not met: {budget.get('note')}")
    return {**record, "status": Status.OK.value, "size_mb": round(artifact_size_mb(path), 4), "sha256": artifact_digest(path),
            "export_seconds": round(seconds, 2), "details": details}


def backend_options(config: RunConfig) -> dict[str, Any]:
    """The export options of every backend that has them, from the config's export.<backend> sections."""
    from edgepipe.backends import BACKENDS

    return {name: getattr(config.export, backend.section) for name, backend in BACKENDS if backend.export_options}


def _run(config: RunConfig, run: RunDir, echo: Echo) -> None:
    from edgepipe.architectures.loading import load_keras_model
    from edgepipe.pipeline.bench import resolve_threads

    m, e = config.model, config.export
    model = load_keras_model(str(run.model), config.unsafe_load)
    dataset = materialize(read_json(run.dataset_index), m.input_size, m.channels)
    calibration_set = draw(dataset.train.images, dataset.train.labels, e.calibration_size, config.seed)
    echo(f"calibration set: {len(calibration_set)} training images, sha256 {calibration_set.digest[:12]}")
    built = read_json(run.build_info)
    val = dataset.splits["val"]
    job = ExportJob(e.formats, run.artifacts_dir, built["architecture"].replace("user:", ""), run.read_labels(),
                    built["preprocessing"], calibration_set, (dataset.train.images, dataset.train.labels),
                    (val.images, val.labels), e.calibration_method, e.accuracy_budget_pp,
                    resolve_threads(config.bench.threads), backend_options(config), run.scratch)
    echo(f"exporting to {run.artifacts_dir}:")
    records = export_all(model, job, echo)
    if not any(Status(r["status"]).measured for r in records):
        raise EdgepipeError("no format could be exported", "See the reasons above; fix them or choose other --formats.")
    write_json(run.artifacts_index, {
        "source_model": run.model.name,
        "source_sha256": sha256_file(run.model),
        "calibration": calibration_set.describe() if calibration_set is not None else None,
        "artifacts": records,
    })


STAGE = Stage("export", "Export the trained model to every configured format and verify each artifact.",
              _inputs, _outputs, _run, requires=("train",))


def expand_formats(names: list[str]) -> list[str]:
    """Canonical format names; ``all`` stands for every format this machine can build (the reference
    model itself, which every run has, is not re-exported)."""
    out: list[str] = []
    for name in names:
        if name == "all":
            chosen = [n for n, f in formats() if f.available() is None and not f.reference]
        else:
            chosen = [formats().canonical(name)]
        out += [n for n in chosen if n not in out]
    return out


def _calibration_from(calibration: Any, size: int, channels: int, seed: int):
    """(class names or None, training pool, validation split or None) from a folder or arrays."""
    from edgepipe.config import DataConfig
    from edgepipe.data import make_index

    if isinstance(calibration, (str, Path)):
        index = make_index(DataConfig(path=str(calibration), val_fraction=0.2), seed)
        dataset = materialize(index, size, channels)
        val = dataset.splits["val"]
        return dataset.class_names, (dataset.train.images, dataset.train.labels), (val.images, val.labels)
    images, labels = calibration if isinstance(calibration, tuple) else (calibration, None)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (size, size, channels):
        raise EdgepipeError(f"calibration images must be an array (N, {size}, {size}, {channels}) of raw pixels, "
                            f"got shape {images.shape}", "Pass uint8 images at the model's input size, or a folder.")
    if labels is None:
        return None, (images, np.zeros(len(images), np.int64)), None
    labels = np.asarray(labels, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(images))
    held = order[: max(1, len(images) // 5)]
    kept = order[len(held):] if len(images) > 1 else order
    return None, (images[kept], labels[kept]), (images[held], labels[held])


def export_model(model: Any, names: list[str], out_dir: Path, echo: Echo, calibration: Any = None,
                 class_names: Optional[list[str]] = None, calibration_size: int = 200, seed: int = 0,
                 calibration_method: str = "minmax", accuracy_budget_pp: float = 1.0, threads: Optional[int] = None,
                 unsafe: bool = False, options: Optional[dict[str, Any]] = None) -> Path:
    """Export any Keras model (an object or a file, not only a run directory's) to ``out_dir``; returns
    artifacts.json's path. See ``edgepipe.export`` for ``calibration``."""
    from edgepipe.architectures.loading import load_keras_model
    from edgepipe.pipeline.bench import resolve_threads

    source = str(model) if isinstance(model, (str, Path)) else None
    if source is not None:
        model = load_keras_model(source, unsafe)
    shape = model.inputs[0].shape
    size, channels = int(shape[1]), int(shape[-1])
    names = expand_formats(names)
    outputs = int(model.outputs[0].shape[-1])
    labels = list(class_names) if class_names else None
    calibration_set = pool = validation = None
    if calibration is not None:
        found, pool, validation = _calibration_from(calibration, size, channels, seed)
        labels = labels or found
        calibration_set = draw(pool[0], pool[1], calibration_size, seed)
        if validation is not None and (labels is not None and len(labels) != outputs):
            echo(f"note: the calibration data has {len(labels)} classes but the model outputs {outputs}; "
                 "artifacts are verified against nothing and INT8 has no accuracy budget")
            validation = None
    elif any(formats().get(f).needs_calibration for f in names):
        raise EdgepipeError("INT8 formats need calibration images", "Pass --calibration-data DIR (an image folder).")
    if labels is not None and len(labels) != outputs:
        labels = None
    labels = labels or [f"class_{i}" for i in range(outputs)]
    make_folder(out_dir)
    stem = Path(source).stem if source else model.name
    job = ExportJob(names, out_dir, stem, labels, {"description": "as saved in the model file"},
                    calibration_set, pool, validation, calibration_method, accuracy_budget_pp, resolve_threads(threads),
                    options or {}, out_dir / ".edgepipe-tmp")
    echo(f"exporting {source or stem} to {out_dir}:")
    records = export_all(model, job, echo)
    index_path = out_dir / "artifacts.json"
    write_json(index_path, {"source_model": source or stem, "source_sha256": sha256_file(source) if source else None,
                            "calibration": calibration_set.describe() if calibration_set is not None else None,
                            "artifacts": records})
    return index_path

