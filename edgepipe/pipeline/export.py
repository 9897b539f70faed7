"""Stage 3: export the trained model to every requested format, calibrated on the training split."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from edgepipe import calibration
from edgepipe.config import RunConfig
from edgepipe.data import materialize
from edgepipe.errors import EdgepipeError
from edgepipe.exporters import EXPORTERS, ExportContext
from edgepipe.exporters.verify import verify
from edgepipe.fileio import read_json, sha256_file, size_mb, write_json
from edgepipe.pipeline.rundir import RunDir
from edgepipe.pipeline.stage import Echo, Stage, file_digest


def _inputs(config: RunConfig, run: RunDir) -> dict:
    return {
        "seed": config.seed,
        "export": dataclasses.asdict(config.export),
        "model": file_digest(run.model),
        "dataset": file_digest(run.dataset_index),
        "build": file_digest(run.build_info),
    }


def _outputs(run: RunDir) -> list:
    return [run.artifacts_index]


VERIFY_IMAGES = 256


@dataclass
class ExportJob:
    """Everything one export needs besides the model: names, calibration, validation data, options."""

    formats: list[str]
    out_dir: Path
    stem: str
    labels: list[str]
    preprocessing: dict
    calibration_set: Optional[calibration.CalibrationSet] = None
    calibration_pool: Optional[tuple[np.ndarray, np.ndarray]] = None
    validation: Optional[tuple[np.ndarray, np.ndarray]] = None
    int8_io: str = "uint8"
    calibration_method: str = "minmax"
    accuracy_budget_pp: float = 1.0
    threads: int = 1


def export_all(model, job: ExportJob, echo: Echo) -> list[dict[str, Any]]:
    """Export ``model`` to each format and verify each artifact against it.

    A format that fails, cannot be built here, or fails verification is
    recorded with its reason, never raised, so the others still export.
    """
    reference_top1, reference_probs, verify_images = None, None, None
    if job.validation is not None:
        images, labels = job.validation
        reference_probs = model.predict(images.astype(np.float32), batch_size=64, verbose=0)
        reference_top1 = float(np.mean(np.argmax(reference_probs, 1) == labels))
        verify_images = images[:VERIFY_IMAGES]
        reference_probs = reference_probs[:VERIFY_IMAGES]
    ctx = ExportContext(model, job.labels, job.preprocessing, job.calibration_set, job.int8_io,
                        job.calibration_method, job.accuracy_budget_pp, job.validation, reference_top1, job.threads,
                        job.calibration_pool)
    records = []
    try:
        for name in job.formats:
            record = _export_one(ctx, EXPORTERS.get(name), job.out_dir, job.stem, echo)
            if record["status"] == "ok" and verify_images is not None:
                try:
                    record["verification"] = verify(EXPORTERS.get(name), job.out_dir / record["file"], verify_images,
                                                    reference_probs, job.threads)
                except Exception as exc:  # the artifact exists but its runtime cannot run it
                    reason = f"could not run: {str(exc).strip().splitlines()[0][:200]}"
                    record["verification"] = {"passed": False, "problems": [reason]}
                if not record["verification"]["passed"]:
                    record["status"] = "failed-verification"
                    record["reason"] = "; ".join(record["verification"]["problems"])
                    echo(f"    verification FAILED: {record['reason']}")
                else:
                    v = record["verification"]
                    echo(f"    verified on {v['images']} images: top-1 agreement {v['top1_agreement']:.1%}, "
                         f"max |Δp| {v['max_abs_diff']:.2e}")
            records.append(record)
    finally:
        ctx.close()
    return records


def _export_one(ctx: ExportContext, exporter, out_dir: Path, stem: str, echo: Echo) -> dict[str, Any]:
    path = out_dir / f"{stem}-{exporter.name}{exporter.suffix}"
    record: dict[str, Any] = {"format": exporter.name, "precision": exporter.precision, "file": path.name,
                              "description": exporter.description}
    unavailable = exporter.available()
    if unavailable:
        echo(f"  {exporter.name}: skipped ({unavailable})")
        return {**record, "status": "skipped", "reason": unavailable}
    start = time.perf_counter()
    try:
        details = exporter.fn(ctx, path)
    except Exception as exc:  # any converter failure is reported for this format; the others go on
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        echo(f"  {exporter.name}: failed ({reason})")
        return {**record, "status": "failed", "reason": reason}
    seconds = time.perf_counter() - start
    ctx.outputs.setdefault(exporter.name, path)
    echo(f"  {exporter.name}: {path.name} ({size_mb(path):.2f} MB, {seconds:.1f} s)")
    if details.get("budget_met") is False:
        echo(f"    accuracy budget not met: {details.get('budget_note')}")
    return {**record, "status": "ok", "size_mb": round(size_mb(path), 4), "sha256": sha256_file(path),
            "export_seconds": round(seconds, 2), "details": details}


def _run(config: RunConfig, run: RunDir, echo: Echo) -> None:
    import keras

    from edgepipe.pipeline.bench import resolve_threads

    m, e = config.model, config.export
    model = keras.models.load_model(run.model, compile=False, safe_mode=not m.unsafe_load)
    dataset = materialize(read_json(run.dataset_index), m.input_size, m.channels)
    calibration_set = calibration.draw(dataset.train.images, dataset.train.labels, e.calibration_size, config.seed)
    echo(f"calibration set: {len(calibration_set)} training images, sha256 {calibration_set.digest[:12]}")
    built = read_json(run.build_info)
    val = dataset.splits["val"]
    job = ExportJob(e.formats, run.artifacts_dir, built["architecture"].replace("user:", ""), run.read_labels(),
                    built["preprocessing"], calibration_set, (dataset.train.images, dataset.train.labels),
                    (val.images, val.labels), e.int8_io, e.calibration_method, e.accuracy_budget_pp,
                    resolve_threads(config.bench.threads))
    echo(f"exporting to {run.artifacts_dir}:")
    records = export_all(model, job, echo)
    ok = [r for r in records if r["status"] in ("ok", "failed-verification")]
    if not ok:
        raise EdgepipeError("no format could be exported", "See the reasons above; fix them or choose other --formats.")
    write_json(run.artifacts_index, {
        "source_model": run.model.name,
        "source_sha256": sha256_file(run.model),
        "calibration": calibration_set.describe() if calibration_set is not None else None,
        "artifacts": records,
    })


STAGE = Stage("export", "Export the trained model to TFLite and ONNX artifacts.", _inputs, _outputs, _run,
              requires=("train",))


def expand_formats(formats: list[str]) -> list[str]:
    """Canonical format names; ``all`` stands for every format this machine can build."""
    out: list[str] = []
    for name in formats:
        names = [n for n, e in EXPORTERS if e.available() is None] if name == "all" else [EXPORTERS.canonical(name)]
        out += [n for n in names if n not in out]
    return out


def export_model_file(model_path: Path, formats: list[str], out_dir: Path, echo: Echo,
                      calibration_dir: Optional[Path] = None, calibration_size: int = 200, seed: int = 0,
                      int8_io: str = "uint8", calibration_method: str = "minmax", accuracy_budget_pp: float = 1.0,
                      threads: int = 1, unsafe: bool = False) -> Path:
    """Export any Keras model file (not only a run directory's) to ``out_dir``; returns artifacts.json's path.

    With ``calibration_dir`` (an image folder with one subfolder per class), 80% of each class calibrates
    and 20% verifies each artifact and judges the INT8 accuracy budget; class names become the labels.
    """
    from edgepipe.architectures.loading import load_keras_model
    from edgepipe.config import DataConfig
    from edgepipe.data import make_index

    model = load_keras_model(str(model_path), unsafe)
    if not hasattr(model, "inputs"):
        raise EdgepipeError(f"'{model_path}' is a SavedModel; export needs a Keras model file",
                            "Save the model as .keras (model.save('model.keras')) and export that.")
    shape = model.inputs[0].shape
    size, channels = int(shape[1]), int(shape[-1])
    formats = expand_formats(formats)
    calibration_set, pool, validation, labels = None, None, None, [f"class_{i}" for i in range(model.outputs[0].shape[-1])]
    if calibration_dir is not None:
        index = make_index(DataConfig(path=str(calibration_dir), val_fraction=0.2), seed)
        dataset = materialize(index, size, channels)
        labels = dataset.class_names
        pool = (dataset.train.images, dataset.train.labels)
        calibration_set = calibration.draw(*pool, calibration_size, seed)
        if len(labels) == model.outputs[0].shape[-1]:
            validation = (dataset.splits["val"].images, dataset.splits["val"].labels)
        else:
            echo(f"note: {calibration_dir} has {len(labels)} classes but the model outputs "
                 f"{model.outputs[0].shape[-1]}; artifacts are verified against nothing and INT8 has no accuracy budget")
    elif any(EXPORTERS.get(f).needs_calibration for f in formats):
        raise EdgepipeError("INT8 formats need calibration images", "Pass --calibration-data DIR (an image folder).")
    job = ExportJob(formats, out_dir, Path(model_path).stem, labels, {"description": "as saved in the model file"},
                    calibration_set, pool, validation, int8_io, calibration_method, accuracy_budget_pp, threads)
    echo(f"exporting {model_path} to {out_dir}:")
    records = export_all(model, job, echo)
    index_path = out_dir / "artifacts.json"
    write_json(index_path, {"source_model": str(model_path), "source_sha256": sha256_file(model_path),
                            "calibration": calibration_set.describe() if calibration_set is not None else None,
                            "artifacts": records})
    return index_path
