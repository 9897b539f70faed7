"""Stage 4: measure every artifact's accuracy and latency on this machine, each with its engines.

Also the standalone ``edgepipe bench ARTIFACT...`` path (no run directory). Both build
:class:`~edgepipe.results.Record` objects through :func:`measure`, so a record looks the
same however it was made; an artifact that cannot be loaded or run becomes a failed
(or skipped) record with its reason, and the others are still measured.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgepipe.versions import __version__
from edgepipe.backends import (
    ENGINES,
    INTEGER_PRECISIONS,
    Artifact,
    Engine,
    create_runner,
    devices_for,
    engines_for,
    identify,
    reference_format,
)
from edgepipe.config import RunConfig
from edgepipe.data import materialize
from edgepipe.device import fingerprint, peak_estimate
from edgepipe.errors import EdgepipeError
from edgepipe.fileio import read_json, size_mb
from edgepipe.harness import BenchSettings, accuracy, agreement, efficiency, measure_latency, predict
from edgepipe.pipeline.rundir import RunDir, now_iso
from edgepipe.pipeline.stage import Echo, Stage, file_digest
from edgepipe.report import write_results
from edgepipe.results import Int8Budget, Record, Results, Status

TIMING = "wall clock per call (time.perf_counter), input quantize + engine + output dequantize"


def _inputs(config: RunConfig, run: RunDir) -> dict:
    return {"bench": dataclasses.asdict(config.bench), "artifacts": file_digest(run.artifacts_index),
            "model": file_digest(run.model), "host": platform.node()}


def _outputs(run: RunDir) -> list:
    return [run.results, run.results_csv]


def resolve_threads(threads: Optional[int]) -> int:
    if threads:
        return threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class Setting:
    """One way of running an artifact: engine, device, threads, batch size and engine settings."""

    engine: Engine
    device: str
    threads: int
    batch_size: int
    engine_settings: Any = None


def engine_settings(config: RunConfig, engine: Engine) -> Any:
    """The engine's settings from the config's bench.<engine> section (its defaults when it has none)."""
    return getattr(config.bench, engine.name, None) if engine.settings else None


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [""])[0][:240] if text else type(exc).__name__


def measure(artifact: Artifact, base: Record, setting: Setting, images: np.ndarray, labels: Optional[np.ndarray],
            settings: BenchSettings, reference: Optional[np.ndarray] = None) -> tuple[Record, Optional[np.ndarray]]:
    """One artifact in one setting: a measured record and its probabilities, or a skipped record (engine,
    package or device missing) or failed one (the engine raised), each with its reason."""
    record = dataclasses.replace(base, engine=setting.engine.name, device=setting.device, threads=setting.threads,
                                 batch_size=setting.batch_size)
    bench = dataclasses.replace(settings, batch_size=setting.batch_size)
    try:
        with create_runner(artifact, threads=setting.threads, engine=setting.engine.name, device=setting.device,
                           settings=setting.engine_settings) as runner:
            probabilities = predict(runner, images)
            timing = measure_latency(runner, images, bench)
            record = dataclasses.replace(
                record, settings=runner.settings_record(), engine_versions=runner.versions(),
                input=dataclasses.asdict(runner.input_spec()), load_ms=runner.load_ms,
                first_inference_ms=timing["first_inference_ms"], warmup_calls=timing["warmup_calls"],
                latency_ms=timing["latency_ms"], compute_ms=timing.get("compute_ms"), copy_ms=timing.get("copy_ms"))
    except EdgepipeError as exc:
        return dataclasses.replace(record, status=Status.SKIPPED, reason=str(exc)), None
    except Exception as exc:  # an engine that cannot load or run this artifact: reported, the rest go on
        return dataclasses.replace(record, status=Status.FAILED, reason=f"{type(exc).__name__}: {_error_line(exc)}"), None
    if labels is not None:
        record.top1 = accuracy(probabilities, labels, 1)
        if probabilities.shape[1] > 5:
            record.top5 = accuracy(probabilities, labels, 5)
    if reference is not None and reference.shape == probabilities.shape:
        record.agreement_with_reference = agreement(probabilities, reference)
    return record, probabilities


def settings_for(artifact: Artifact, config_engines: tuple[str, ...], devices: tuple[str, ...],
                 threads: tuple[int, ...], batches: tuple[int, ...], engine_settings=lambda engine: None) -> list[Setting]:
    """Every (engine, device, threads, batch) an artifact is measured in."""
    out = []
    for engine in engines_for(artifact, config_engines):
        for device, t, b in itertools.product(devices_for(engine, devices), threads, batches):
            out.append(Setting(engine, device, t, b, engine_settings(engine)))
    return out


def _run(config: RunConfig, run: RunDir, echo: Echo) -> None:
    m, b = config.model, config.bench
    index = read_json(run.artifacts_index)
    dataset = materialize(read_json(run.dataset_index), m.input_size, m.channels)
    split = dataset.heldout
    threads = resolve_threads(b.threads)
    settings = BenchSettings(b.batch_size, b.warmup, b.min_iterations, b.min_duration_s, b.warmup_s)
    echo(f"benchmarking on {len(split)} {dataset.heldout_name} images, {threads} thread(s), batch {settings.batch_size}:")
    reference_fmt = reference_format()
    candidates = [({"format": reference_fmt.name, "precision": reference_fmt.precision, "container": reference_fmt.container,
                    "file": run.model.name, "status": Status.OK.value, "description": reference_fmt.description},
                   run.model)]
    candidates += [(item, run.artifacts_dir / item["file"]) for item in index["artifacts"]]
    records: list[Record] = []
    reference = None
    for item, path in candidates:
        base = Record(artifact=item["file"], format=item["format"], precision=item["precision"],
                      status=Status(item["status"]), reason=item.get("reason"), description=item.get("description"),
                      verification=item.get("verification"))
        budget = (item.get("details") or {}).get("int8_budget")
        if budget:
            base.int8_budget = Int8Budget.from_dict(budget)
        if not base.status.measured:
            records.append(base)
            echo("  " + _line(base))
            continue
        base.size_mb = round(size_mb(path), 4)
        artifact = identify(path, item)
        for setting in settings_for(artifact, tuple(b.engines), tuple(b.devices), (threads,), (settings.batch_size,),
                                    lambda engine: engine_settings(config, engine)):
            record, probabilities = measure(artifact, base, setting, split.images, split.labels, settings, reference)
            if reference is None and probabilities is not None:
                reference = probabilities
            records.append(record)
            echo("  " + _line(record))
    build_info = read_json(run.build_info) if run.build_info.exists() else {}
    device = fingerprint()
    reference_top1 = next((r.top1 for r in records if r.top1 is not None), None)
    for record in records:
        if record.top1 is not None and reference_top1 is not None:
            record.top1_change_pp = (record.top1 - reference_top1) * 100
        add_efficiency(record, build_info.get("macs"), device)
    training = read_json(run.training) if run.training.exists() else {}
    results = Results(
        device=device, records=records, created=now_iso(), edgepipe=__version__, run=str(run.path),
        conditions={"threads": threads, **settings.as_dict(), "timing": TIMING},
        architecture=build_info, classes=run.read_labels(),
        heldout={"split": dataset.heldout_name, "images": len(split), "classes": dataset.num_classes},
        reference_format=reference_fmt.name,
        training={k: training.get(k) for k in ("strategy", "top1", "heldout_split", "train_images")},
        baseline_from_scratch=_baseline(training), calibration=index.get("calibration"),
        accuracy_budget_pp=config.export.accuracy_budget_pp)
    write_results(run.results, results)


def add_efficiency(record: Record, macs: Optional[int], device: dict[str, Any]) -> None:
    """MACs per second at the median latency, against the CPU's estimated peak for the threads used."""
    if not macs or record.latency_ms is None:
        return
    peak = None
    if record.device == "cpu":
        peak = peak_estimate(device, record.threads, integer=record.precision in INTEGER_PRECISIONS)
    record.efficiency = efficiency(macs, record.batch_size, record.latency_ms["p50"], peak)


def _baseline(training: dict) -> Optional[dict]:
    baseline = training.get("baseline_from_scratch")
    if not baseline:
        return None
    return {k: baseline.get(k) for k in ("top1", "epochs", "heldout_split", "heldout_images")}


def _line(record: Record) -> str:
    name = record.format or record.artifact
    if record.latency_ms is None:
        return f"{name:<14} {record.status}: {record.reason}"
    lat = record.latency_ms
    top1 = f"top-1 {record.top1:.2%}  " if record.top1 is not None else ""
    where = f"[{record.engine}, {record.device}] "
    return (f"{where}{name:<14} {top1}p50 {lat['p50']:.3f} ms  p90 {lat['p90']:.3f} ms  "
            f"{lat['images_per_s']:.1f} images/s ({lat['iterations']} runs)")


STAGE = Stage("bench", "Measure accuracy and latency of every artifact on this machine.",
              _inputs, _outputs, _run, requires=("train", "export"))


def bench_files(paths: list[Path], echo: Echo, data_dir: Optional[Path] = None, labels_file: Optional[Path] = None,
                threads: tuple[int, ...] = (1,), batches: tuple[int, ...] = (1,),
                settings: BenchSettings = BenchSettings(), seed: int = 0, devices: tuple[str, ...] = ("cpu",),
                engines: tuple[str, ...] = ()) -> Results:
    """Benchmark artifacts on their own (no run directory): one record per artifact, engine, device,
    thread count and batch size.

    With ``data_dir`` (an image folder, one subfolder per class) accuracy is measured too; class
    indices follow ``labels_file`` (e.g. the run's labels.txt), the labels the artifact records, or the
    folder's sorted class names. Without it, latency is measured on seeded random pixels, and accuracy
    is left out. An artifact that cannot be loaded or run is a failed record; the others are measured.
    """
    for path in paths:
        if not path.exists():
            raise EdgepipeError(f"artifact '{path}' does not exist", "Check the path.")
    for name in engines:
        ENGINES.canonical(name)
    artifacts = [identify(path) for path in paths]
    records: list[Record] = []
    for path, artifact in zip(paths, artifacts):
        base = Record(artifact=str(path), format=artifact.format, precision=artifact.precision, status=Status.OK,
                      size_mb=round(size_mb(path), 4))
        try:
            shape, classes = probe(artifact)
        except EdgepipeError as exc:
            records.append(dataclasses.replace(base, status=Status.SKIPPED, reason=str(exc)))
            echo(f"  {path.name}: " + _line(records[-1]))
            continue
        except Exception as exc:  # not loadable: a failed record, the other artifacts are still measured
            what = "not an image classifier" if isinstance(exc, NotAnImageClassifier) else "cannot load"
            records.append(dataclasses.replace(base, status=Status.FAILED, reason=f"{what}: {_error_line(exc)}"))
            echo(f"  {path.name}: " + _line(records[-1]))
            continue
        check_batch_memory(shape, max(batches))
        labels_order = read_labels_file(labels_file) if labels_file else artifact.labels
        if labels_order is not None and len(labels_order) != classes:
            raise EdgepipeError(f"{'labels file ' + str(labels_file) if labels_file else path.name + ' records labels that'}"
                                f" name {len(labels_order)} classes, but {path.name} has {classes} outputs",
                                "Pass the labels.txt the model was trained with (--labels).")
        images, labels = bench_images(data_dir, labels_order, shape, seed)
        for setting in settings_for(artifact, engines, devices, threads, batches):
            record, _ = measure(artifact, base, setting, images, labels, settings)
            records.append(record)
            echo(f"  {path.name} {setting.device}, threads {setting.threads} batch {setting.batch_size}: " + _line(record))
    labelled = {tuple(a.labels or ()) for a in artifacts} - {()}
    classes = read_labels_file(labels_file) if labels_file else (list(labelled.pop()) if len(labelled) == 1 else None)
    return Results(
        device=fingerprint(), records=records, created=now_iso(), edgepipe=__version__, classes=classes,
        conditions={**settings.as_dict(), "threads": list(threads), "batch_sizes": list(batches),
                    "devices": list(devices), "engines": list(engines) or "each artifact's default engine",
                    "timing": TIMING, "data": str(data_dir) if data_dir else "seeded random pixels (no accuracy)"})


class NotAnImageClassifier(Exception):
    """The artifact does not take a batch of images or does not output one score per class."""


def probe(artifact: Artifact) -> tuple[tuple, int]:
    """(input shape NHWC, number of classes) of an artifact, from one inference on a blank image; raises
    NotAnImageClassifier when it takes no (N, H, W, 1 or 3) image batch or gives no (N, classes) output."""
    with create_runner(artifact, threads=1) as runner:
        shape = runner.input_spec().shape
        if len(shape) != 4 or shape[3] not in (1, 3, None) or any(d is not None and d < 1 for d in shape[1:3]):
            raise NotAnImageClassifier(f"its input {runner.input_spec().name} has shape {list(shape)}, not an image "
                                       "batch (N, height, width, 1 or 3 channels)")
        size, channels = int(shape[1] or 224), int(shape[3] or 3)
        out = runner.infer(np.zeros((1, size, size, channels), np.float32))
    if out.ndim != 2 or out.shape[1] < 2:
        raise NotAnImageClassifier(f"its output has shape {list(out.shape)}, not one score per class")
    return (shape[0], size, size, channels), int(out.shape[1])


def available_memory_bytes() -> Optional[int]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


#: a batch needs its float32 input several times over (the harness's batches, the engine's input and activations)
BATCH_MEMORY_FACTOR = 4


def check_batch_memory(shape: tuple, batch: int) -> None:
    """Refuse a batch size whose input images alone would exhaust the memory available here."""
    need = BATCH_MEMORY_FACTOR * batch * int(np.prod(shape[1:])) * 4
    available = available_memory_bytes()
    if available is not None and need > available:
        raise EdgepipeError(f"batch {batch} needs about {need / 1e9:.1f} GB for its {shape[1]}x{shape[2]}x{shape[3]} "
                            f"input images alone, and this machine has {available / 1e9:.1f} GB available",
                            f"Use a batch of at most {max(1, int(batch * available / need))}.")


def bench_images(data_dir: Optional[Path], labels: Any, shape: tuple, seed: int):
    """(uint8 images, labels or None) for an artifact with input ``shape`` (NHWC); ``labels`` is the model's
    class order (a list), or None for the folder's sorted class names."""
    size, channels = int(shape[1]), int(shape[3])
    if data_dir is None:
        return np.random.default_rng(seed).integers(0, 256, (32, size, size, channels)).astype(np.uint8), None
    from edgepipe.config import DataConfig
    from edgepipe.data import make_index

    index = make_index(DataConfig(path=str(data_dir), val_fraction=0.0), seed)
    dataset = materialize(index, size, channels)
    images, found = dataset.train.images, dataset.train.labels
    if labels is None:
        return images, found
    order = list(labels)
    missing = [c for c in dataset.class_names if c not in order]
    if missing:
        raise EdgepipeError(f"classes {', '.join(missing)} of {data_dir} are not among the model's labels",
                            "Use the labels.txt the model was trained with (--labels).")
    remap = np.asarray([order.index(c) for c in dataset.class_names])
    return images, remap[found]


def read_labels_file(path: Path) -> list[str]:
    if not Path(path).is_file():
        raise EdgepipeError(f"labels file '{path}' does not exist", "Pass the labels.txt the model was trained with.")
    try:
        return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise EdgepipeError(f"labels file '{path}' is not UTF-8 text", "Pass a labels.txt with one class per line.") from None
