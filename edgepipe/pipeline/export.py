"""Stage 3: export the trained model to every requested format, calibrated on the training split."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Optional

from edgepipe import calibration
from edgepipe.config import RunConfig
from edgepipe.data import materialize
from edgepipe.errors import EdgepipeError
from edgepipe.exporters import EXPORTERS, ExportContext
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


def export_all(model, formats: list[str], out_dir: Path, stem: str, labels: list[str], preprocessing: dict,
               calibration_set: Optional[calibration.CalibrationSet], int8_io: str, echo: Echo) -> list[dict[str, Any]]:
    """Export ``model`` to each format; a format that fails or cannot be built here is recorded, not raised."""
    ctx = ExportContext(model, labels, preprocessing, calibration_set, int8_io)
    records = []
    try:
        for name in formats:
            records.append(_export_one(ctx, EXPORTERS.get(name), out_dir, stem, echo))
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
    echo(f"  {exporter.name}: {path.name} ({size_mb(path):.2f} MB, {seconds:.1f} s)")
    return {**record, "status": "ok", "size_mb": round(size_mb(path), 4), "sha256": sha256_file(path),
            "export_seconds": round(seconds, 2), "details": details}


def _run(config: RunConfig, run: RunDir, echo: Echo) -> None:
    import keras

    m = config.model
    model = keras.models.load_model(run.model, compile=False, safe_mode=not config.model.unsafe_load)
    labels = run.read_labels()
    calibration_set = None
    if any(EXPORTERS.get(f).needs_calibration for f in config.export.formats):
        dataset = materialize(read_json(run.dataset_index), m.input_size, m.channels)
        calibration_set = calibration.draw(dataset.train.images, dataset.train.labels,
                                           config.export.calibration_size, config.seed)
        echo(f"calibration set: {len(calibration_set)} training images, sha256 {calibration_set.digest[:12]}")
    built = read_json(run.build_info)
    stem = built["architecture"].replace("user:", "")
    echo(f"exporting to {run.artifacts_dir}:")
    records = export_all(model, config.export.formats, run.artifacts_dir, stem, labels, built["preprocessing"],
                         calibration_set, config.export.int8_io, echo)
    ok = [r for r in records if r["status"] == "ok"]
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
