"""Stage 4: measure every artifact's accuracy, latency and memory on this machine, with its engines.

The standalone ``edgepipe bench ARTIFACT...`` path (no run directory, ``edgepipe.standalone.bench``) uses
the same machinery. Both turn plans
(an artifact in one setting) into :class:`~edgepipe.results.Record` objects through
``pipeline.measure``, so a record looks the same however it was made: an artifact that cannot
be loaded or run becomes a failed (or skipped) record with its reason, and the others are
still measured, in interleaved rounds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.backends import (
    INTEGER_PRECISIONS,
    Engine,
    artifact_size_mb,
    formats,
    identify,
    reference_format,
)
from edgepipe.config import RunConfig
from edgepipe.data import materialize
from edgepipe.device import fingerprint, peak_estimate, resolve_threads
from edgepipe.errors import EdgepipeError
from edgepipe.export_index import INDEX_NAME, ExportIndex, ExportRecord, read_export_index
from edgepipe.fileio import read_json, sha256_value
from edgepipe.harness import BenchSettings, efficiency
from edgepipe.pipeline import foreign
from edgepipe.pipeline.measure import line, measure_plans, plan, settings_for
from edgepipe.pipeline.rundir import RunDir, now_iso
from edgepipe.pipeline.stage import Echo, Stage, file_digest
from edgepipe.report import write_results
from edgepipe.results import Record, Results, Status
from edgepipe.significance import paired_comparison
from edgepipe.versions import __version__

TIMING = "wall clock per call (time.perf_counter), input quantize + engine + output dequantize"


def _inputs(config: RunConfig, run: RunDir) -> dict:
    return {
        "bench": dataclasses.asdict(config.bench),
        "artifacts": file_digest(run.artifacts_index),
        "model": file_digest(foreign.trained_model(config, run)),
        "host": platform.node(),
    }


def _outputs(run: RunDir) -> list:
    return [run.results, run.results_csv]


def mark_oversubscribed(records: list[Record], device: dict[str, Any], echo: Echo) -> None:
    """Record on every measured record (and each setting --tune tried) whether it ran more threads than the
    device's usable cores, and say so once per thread count: such latency includes threads waiting for a core."""
    usable = device.get("usable_cores")
    if not usable:
        return
    over: dict[int, int] = {}
    for record in records:
        if record.latency_ms is None or record.threads is None:
            continue
        record.oversubscribed = record.threads > usable
        tuning = record.tuning or {}
        for tried in [*tuning.get("candidates", []), tuning.get("default"), tuning.get("best")]:
            if tried and tried.get("threads") is not None:
                tried["oversubscribed"] = tried["threads"] > usable
        if record.oversubscribed:
            over[record.threads] = over.get(record.threads, 0) + 1
    for threads, count in sorted(over.items()):
        echo(
            f"  oversubscribed: {threads} thread(s) on {usable} usable core(s) for {count} record(s); "
            "their latency includes threads waiting for a core"
        )


def engine_settings(config: RunConfig, engine: Engine) -> Any:
    """The engine's settings from the config's bench.<engine> section (its defaults when it has none)."""
    return getattr(config.bench, engine.name, None) if engine.settings else None


def _candidates(run: RunDir, index: ExportIndex, foreign_reference: str | None) -> list[tuple[ExportRecord, Path]]:
    """The FP32 reference model, then every exported artifact, as (export record, path).

    On a foreign backbone (``foreign_reference``: the format of its joined classifier) the reference is that
    format's artifact when it was exported (verified against the classifier), else the classifier itself under
    that format's name: one record of it either way."""
    exported = [(item, run.file("artifacts", item.file)) for item in index.artifacts]
    if foreign_reference is not None:
        if any(i.format == foreign_reference and i.status.measured for i, _ in exported):
            return exported
        joined = ExportRecord.of_format(
            formats().get(foreign_reference),
            run.model_onnx.name,
            Status.OK,
            "the classifier joined on your backbone (the reference)",
        )
        return [(joined, run.model_onnx)] + [(i, p) for i, p in exported if i.format != foreign_reference]
    reference = ExportRecord.of_format(reference_format(), run.model.name, Status.OK)
    return [(reference, run.model)] + exported


def _base_record(item: ExportRecord, path: Path) -> Record:
    """The bench record an export record starts: its artifact, status, reason, verification and INT8 budget."""
    base = Record(
        artifact=item.file,
        format=item.format,
        precision=item.precision,
        status=item.status,
        reason=item.reason,
        description=item.description,
        verification=item.verification,
        int8_budget=item.int8_budget,
    )
    if base.status.measured:
        base.size_mb = round(artifact_size_mb(path), 4)
    return base


def _run(config: RunConfig, run: RunDir, echo: Echo) -> None:
    m, b = config.model, config.bench
    index = read_export_index(run.artifacts_index)
    dataset = materialize(read_json(run.dataset_index), m.input_size, m.channels)
    split = dataset.heldout
    threads = resolve_threads(b.threads)
    settings = BenchSettings(b.batch_size, b.warmup, b.min_iterations, b.min_duration_s, b.warmup_s)
    echo(
        f"benchmarking on {len(split)} {dataset.heldout_name} images, {threads} thread(s), batch {settings.batch_size}:"
    )
    records: list[Record] = []
    plans = []
    joined = foreign.reference_format(run) if foreign.is_foreign(config) else None
    for item, path in _candidates(run, index, joined):
        base = _base_record(item, path)
        if not base.status.measured:
            records.append(base)
            echo("  " + line(base))
            continue
        artifact = identify(path, item.to_dict())
        plans += [
            plan(artifact, base, s, split.images, split.labels)
            for s in settings_for(
                artifact,
                tuple(b.engines),
                tuple(b.devices),
                (threads,),
                (settings.batch_size,),
                lambda engine: engine_settings(config, engine),
            )
        ]
    device = fingerprint()
    profiles: list | None = [] if b.profile else None
    layers = model_layers(run.model) if b.profile and joined is None else None
    measured = measure_plans(
        plans,
        settings,
        echo,
        memory=b.memory,
        tune_threads=threads if b.tune else None,
        profiles=profiles,
        profile_context=lambda p: profile_join(p, device, layers),
    )
    for record in measured:
        echo("  " + line(record))
    ref = joined or reference_format().name
    _compare_with_reference(plans, ref, split.labels, dataset.class_names)
    records = measured + records
    build_info = read_json(run.build_info) if run.build_info.exists() else {}
    device = fingerprint()
    mark_oversubscribed(records, device, echo)
    for record in records:
        add_efficiency(record, build_info.get("macs"), device)
    training = read_json(run.training) if run.training.exists() else {}
    roles = dataset.roles()
    results = Results(
        device=device,
        records=records,
        created=now_iso(),
        edgepipe=__version__,
        run=str(run.path),
        conditions={
            "threads": threads,
            **settings.as_dict(),
            "timing": TIMING,
            "rounds": "interleaved",
            "tuned": b.tune,
        },
        architecture=build_info,
        classes=run.read_labels(),
        heldout={
            **roles["reported"],
            "classes": dataset.num_classes,
            "labels_sha256": sha256_value(split.labels.tolist()),
            "images_sha256": hashlib.sha256(np.ascontiguousarray(split.images).tobytes()).hexdigest(),
            "labels": split.labels.tolist(),
        },  # with each record's predictions: paired tests in compare
        selection=roles["selection"],
        reference_format=ref,
        training={k: training.get(k) for k in ("strategy", "top1", "heldout_split", "train_images")},
        profiles=profiles or [],
        baseline_from_scratch=_baseline(training),
        calibration=index.calibration,
        accuracy_budget_pp=config.export.accuracy_budget_pp,
    )
    write_results(run.results, results)


def _compare_with_reference(
    plans: list, reference_format_name: str, labels: np.ndarray, class_names: list[str]
) -> None:
    """Top-1 change and the image-by-image comparison of every record with the FP32 reference's first record."""
    reference = next(
        (p for p in plans if p.record.format == reference_format_name and p.probabilities is not None), None
    )
    if reference is None:
        return
    for p in plans:
        if p.record.top1 is not None:
            p.record.top1_change_pp = (p.record.top1 - reference.record.top1) * 100
        if p.probabilities is not None and p.record.format != reference_format_name:
            p.record.significance = paired_comparison(
                p.probabilities.argmax(1), reference.probabilities.argmax(1), labels, class_names
            )
            p.record.predictions = p.probabilities.argmax(1).tolist()
    reference.record.predictions = reference.probabilities.argmax(1).tolist()


def add_efficiency(record: Record, macs: int | None, device: dict[str, Any]) -> None:
    """MACs per second at the median latency, against the CPU's estimated peak for the threads used."""
    if not macs or record.latency_ms is None:
        return
    peak = None
    if record.device == "cpu":
        peak = peak_estimate(device, record.threads, compute_kind(record))
    record.efficiency = efficiency(macs, record.batch_size, record.latency_ms["p50"], peak)


#: an engine's recorded inference precision (OpenVINO's names) -> the peak estimate's data type
_COMPUTED_IN = {"bf16": "bf16", "f16": "fp16"}


def compute_kind(record: Record) -> str:
    """The data type the record's layers computed in, for the peak estimate: int8 for integer formats,
    else the reduced precision its engine reports in force (OpenVINO's bf16 or f16), else fp32."""
    if record.precision in INTEGER_PRECISIONS:
        return "int8"
    return _COMPUTED_IN.get(str((getattr(record, "settings", None) or {}).get("inference_precision")), "fp32")


def model_layers(model_path: Path | None) -> list[dict[str, Any]] | None:
    """Per-layer MACs of a Keras model file (name, kind, macs per image), for joining profiles; None without one."""
    if model_path is None:
        return None
    from edgepipe.architectures.compute import count
    from edgepipe.architectures.loading import load_keras_model

    return count(load_keras_model(str(model_path))).as_dict()["layers"]


def recorded_kept_float(path: Path) -> list[str]:
    """The ops the INT8 budget kept in float, as the export index beside an artifact records them ([] if none)."""
    index = Path(path).parent / INDEX_NAME
    try:
        entries = read_export_index(index).artifacts if index.is_file() else []
    except (EdgepipeError, OSError):  # an index this edgepipe cannot read: nothing is known to be kept in float
        return []
    entry = next((e for e in entries if e.file == Path(path).name), None)
    return list(entry.int8_budget.kept_higher_precision) if entry and entry.int8_budget else []


def profile_join(p, device: dict[str, Any], layers: list[dict[str, Any]] | None) -> dict[str, Any]:
    """What a plan's profile is joined with: the source layers' MACs, the ops its INT8 budget kept in float, and
    the CPU's estimated peak for its threads and precision."""
    r = p.record
    kept = r.int8_budget.kept_higher_precision if r.int8_budget else recorded_kept_float(p.artifact.path)
    peak = peak_estimate(device, r.threads, compute_kind(r)) if r.device == "cpu" else None
    return {"layers": layers, "kept_float": kept, "peak": peak}


def _baseline(training: dict) -> dict | None:
    baseline = training.get("baseline_from_scratch")
    if not baseline:
        return None
    return {k: baseline.get(k) for k in ("top1", "epochs", "heldout_split", "heldout_images")}


STAGE = Stage(
    "bench",
    "Measure accuracy and latency of every artifact on this machine.",
    _inputs,
    _outputs,
    _run,
    requires=("train", "export"),
)
