"""Stage 4: measure every artifact's accuracy and latency on this machine, each with its own runtime."""

from __future__ import annotations

import dataclasses
import itertools
import os
import platform
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgepipe import __version__
from edgepipe.benchmark import BenchSettings, accuracy, agreement, efficiency, measure_latency, predict
from edgepipe.config import RunConfig
from edgepipe.data import materialize
from edgepipe.device import fingerprint, peak_estimate
from edgepipe.errors import EdgepipeError
from edgepipe.fileio import read_json, size_mb, write_json
from edgepipe.pipeline.rundir import RunDir, now_iso
from edgepipe.pipeline.stage import Echo, Stage, file_digest
from edgepipe.runtimes import create_runner
from edgepipe.runtimes.base import devices_for

RESULTS_SCHEMA = "edgepipe.results/1"
REFERENCE_FORMAT = "keras-fp32"


def _inputs(config: RunConfig, run: RunDir) -> dict:
    return {"bench": dataclasses.asdict(config.bench), "artifacts": file_digest(run.artifacts_index),
            "model": file_digest(run.model), "host": platform.node()}


def _outputs(run: RunDir) -> list:
    return [run.results, run.results_csv]


def resolve_threads(threads: Optional[int]) -> int:
    if threads:
        return threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def bench_artifact(path: Path, images: np.ndarray, labels: np.ndarray, settings: BenchSettings, threads: int,
                   reference_probabilities: Optional[np.ndarray] = None, device: Optional[str] = None) -> dict[str, Any]:
    """Accuracy and latency of one artifact through the runner its file type calls for."""
    with create_runner(path, threads=threads, device=device) as runner:
        probabilities = predict(runner, images)
        timing = measure_latency(runner, images, settings)
        record: dict[str, Any] = {
            "runtime": runner.engine,
            "runtime_versions": runner.versions(),
            "device": runner.device,
            "threads": threads,
            "batch_size": settings.batch_size,
            "input": dataclasses.asdict(runner.input_spec()),
            "load_ms": runner.load_ms,
            **timing,
            "top1": accuracy(probabilities, labels, 1),
        }
    if probabilities.shape[1] > 5:
        record["top5"] = accuracy(probabilities, labels, 5)
    if reference_probabilities is not None:
        record["agreement_with_reference"] = agreement(probabilities, reference_probabilities)
    record["_probabilities"] = probabilities
    return record


def measure_into(record: dict[str, Any], path: Path, images: np.ndarray, labels: np.ndarray, settings: BenchSettings,
                 threads: int, reference: Optional[np.ndarray], device: str) -> Optional[np.ndarray]:
    """Add one artifact's measured figures to ``record``, or its status and reason when it cannot run here
    (skipped: engine or device missing; failed: the engine raised); returns its probabilities, if measured."""
    try:
        measured = bench_artifact(path, images, labels, settings, threads, reference, device)
    except EdgepipeError as exc:
        record.update(status="skipped", reason=str(exc))
        return None
    except Exception as exc:  # an engine that cannot run this artifact: reported, the rest go on
        record.update(status="failed", reason=f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}")
        return None
    probabilities = measured.pop("_probabilities")
    record.update(measured)
    return probabilities


def _run(config: RunConfig, run: RunDir, echo: Echo) -> None:
    m = config.model
    index = read_json(run.artifacts_index)
    dataset = materialize(read_json(run.dataset_index), m.input_size, m.channels)
    split = dataset.heldout
    threads = resolve_threads(config.bench.threads)
    settings = BenchSettings(config.bench.batch_size, config.bench.warmup, config.bench.min_iterations,
                             config.bench.min_duration_s, config.bench.warmup_s)
    echo(f"benchmarking on {len(split)} {dataset.heldout_name} images, {threads} thread(s), batch {settings.batch_size}:")
    candidates = [{"format": REFERENCE_FORMAT, "precision": "fp32", "file": run.model.name, "status": "ok",
                   "description": "Keras model (the FP32 reference)"}]
    candidates += index["artifacts"]
    records, reference = [], None
    for item in candidates:
        record = {k: item.get(k) for k in ("format", "precision", "file", "status", "reason", "description")}
        if item.get("details", {}).get("attempts"):
            record["int8_budget"] = {k: item["details"].get(k) for k in (
                "accuracy_budget_pp", "budget_met", "chosen_attempt", "attempts", "budget_note", "kept_float")}
        path = run.path / item["file"] if item["format"] == REFERENCE_FORMAT else run.artifacts_dir / item["file"]
        if item["status"] not in ("ok", "failed-verification"):
            records.append(record)
            echo("  " + _line(record))
            continue
        for device in devices_for(path, tuple(config.bench.devices)):
            measured_record = {**record, "verification": item.get("verification"), "size_mb": round(size_mb(path), 4),
                               "device": device}
            probabilities = measure_into(measured_record, path, split.images, split.labels, settings, threads,
                                         reference, device)
            if reference is None:
                reference = probabilities
            records.append(measured_record)
            echo("  " + (f"[{device}] " if len(config.bench.devices) > 1 else "") + _line(measured_record))
    reference_top1 = records[0].get("top1")
    build_info = read_json(run.build_info) if run.build_info.exists() else {}
    device = fingerprint()
    for record in records:
        if record.get("top1") is not None and reference_top1 is not None:
            record["top1_change_pp"] = (record["top1"] - reference_top1) * 100
        add_efficiency(record, build_info.get("macs"), device)
    training = read_json(run.training) if run.training.exists() else {}
    results = {
        "schema": RESULTS_SCHEMA,
        "edgepipe": __version__,
        "created": now_iso(),
        "run": str(run.path),
        "architecture": build_info,
        "device": device,
        "conditions": {"threads": threads, **settings.as_dict(),
                       "timing": "wall clock per call (time.perf_counter), input quantize + engine + output dequantize"},
        "heldout": {"split": dataset.heldout_name, "images": len(split), "classes": dataset.num_classes},
        "reference_format": REFERENCE_FORMAT,
        "training": {k: training.get(k) for k in ("strategy", "top1", "heldout_split", "train_images")},
        "baseline_from_scratch": _baseline(training),
        "calibration": index.get("calibration"),
        "accuracy_budget_pp": config.export.accuracy_budget_pp,
        "records": records,
    }
    write_results(run.results, results)


def write_results(path: Path, results: dict[str, Any]) -> Path:
    """results.json and, beside it, the same records as CSV (one line per artifact and setting)."""
    from edgepipe.fileio import write_text
    from edgepipe.report.table import rows, to_csv

    write_json(path, results)
    csv_path = path.with_suffix(".csv")
    write_text(csv_path, to_csv(rows(results)))
    return csv_path


def add_efficiency(record: dict[str, Any], macs: Optional[int], device: dict[str, Any]) -> None:
    """MACs per second at the median latency, against the CPU's estimated peak for the threads used."""
    if not macs or "latency_ms" not in record:
        return
    peak = None
    if record.get("device", "cpu") == "cpu":
        peak = peak_estimate(device, record["threads"], integer=record.get("precision") == "int8")
    record["efficiency"] = efficiency(macs, record["batch_size"], record["latency_ms"]["p50"], peak)


def _baseline(training: dict) -> Optional[dict]:
    baseline = training.get("baseline_from_scratch")
    if not baseline:
        return None
    return {k: baseline.get(k) for k in ("top1", "epochs", "heldout_split", "heldout_images")}


def _line(record: dict) -> str:
    if record["status"] not in ("ok", "failed-verification") or "latency_ms" not in record:
        return f"{record['format']:<14} {record['status']}: {record.get('reason')}"
    lat = record["latency_ms"]
    top1 = f"top-1 {record['top1']:.2%}  " if record.get("top1") is not None else ""
    return (f"{record['format']:<14} {top1}p50 {lat['p50']:.3f} ms  p90 {lat['p90']:.3f} ms  "
            f"{lat['images_per_s']:.1f} images/s ({lat['iterations']} runs)")


STAGE = Stage("bench", "Measure accuracy and latency of every artifact on this machine's CPU.",
              _inputs, _outputs, _run, requires=("export",))


def bench_files(paths: list[Path], echo: Echo, data_dir: Optional[Path] = None, labels_file: Optional[Path] = None,
                threads: tuple[int, ...] = (1,), batches: tuple[int, ...] = (1,),
                settings: BenchSettings = BenchSettings(), seed: int = 0,
                devices: tuple[str, ...] = ("cpu",)) -> dict[str, Any]:
    """Benchmark artifacts on their own (no run directory): one record per artifact, thread count and batch size.

    With ``data_dir`` (an image folder, one subfolder per class) accuracy is measured too; class
    indices follow ``labels_file`` (e.g. the run's labels.txt) or the folder's sorted class names.
    Without it, latency is measured on seeded random pixels, and accuracy is left out.
    """
    for path in paths:
        if not path.exists():
            raise EdgepipeError(f"artifact '{path}' does not exist", "Pass .tflite, .onnx, .keras or .engine files.")
    records: list[dict[str, Any]] = []
    for path in paths:
        base = {"format": _format_of(path), "file": str(path), "size_mb": round(size_mb(path), 4)}
        try:
            with create_runner(path, threads=1) as probe:
                shape = probe.input_spec().shape
        except EdgepipeError as exc:
            records.append({**base, "status": "skipped", "reason": str(exc)})
            echo("  " + _line(records[-1]))
            continue
        size, channels = int(shape[1]), int(shape[3])
        images, labels = _bench_images(data_dir, labels_file, size, channels, seed)
        for device, t, b in itertools.product(devices_for(path, devices), threads, batches):
            s = dataclasses.replace(settings, batch_size=b)
            record = {**base, "status": "ok", "device": device, "threads": t, "batch_size": b}
            measure_into(record, path, images, labels if labels is not None else np.zeros(len(images), int), s, t,
                         None, device)
            if labels is None:  # random pixels: no accuracy to speak of
                record.pop("top1", None)
                record.pop("top5", None)
            records.append(record)
            echo(f"  {device}, threads {t} batch {b}: " + _line(record))
    return {"schema": RESULTS_SCHEMA, "edgepipe": __version__, "created": now_iso(), "device": fingerprint(),
            "conditions": {**settings.as_dict(), "threads": list(threads), "batch_sizes": list(batches),
                           "devices": list(devices),
                           "timing": "wall clock per call (time.perf_counter), input quantize + engine + output dequantize",
                           "data": str(data_dir) if data_dir else "seeded random pixels (no accuracy)"},
            "records": records}


def _format_of(path: Path) -> str:
    """The format name an artifact's file name carries (<stem>-<format>.<ext>), else its suffix."""
    from edgepipe.exporters import EXPORTERS

    return next((name for name in EXPORTERS.names() if path.stem.endswith(name)), path.suffix.lstrip("."))


def _bench_images(data_dir: Optional[Path], labels_file: Optional[Path], size: int, channels: int, seed: int):
    if data_dir is None:
        return np.random.default_rng(seed).integers(0, 256, (32, size, size, channels)).astype(np.uint8), None
    from edgepipe.config import DataConfig
    from edgepipe.data import make_index

    index = make_index(DataConfig(path=str(data_dir), val_fraction=0.0), seed)
    dataset = materialize(index, size, channels)
    images, labels = dataset.train.images, dataset.train.labels
    if labels_file is not None:
        order = Path(labels_file).read_text(encoding="utf-8").split()
        missing = [c for c in dataset.class_names if c not in order]
        if missing:
            raise EdgepipeError(f"classes {', '.join(missing)} of {data_dir} are not in {labels_file}",
                                "Use the labels.txt the model was trained with.")
        remap = np.asarray([order.index(c) for c in dataset.class_names])
        labels = remap[labels]
    return images, labels
