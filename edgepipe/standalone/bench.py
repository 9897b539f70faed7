"""Benchmark of artifact files on their own, without a run directory: what ``edgepipe bench FILES`` and
``edgepipe.bench`` call. The measurement is the bench stage's (``edgepipe.pipeline.measure``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.backends import ENGINES, Artifact, artifact_size_mb, create_runner, identify
from edgepipe.data import materialize
from edgepipe.device import fingerprint, proc_kb
from edgepipe.errors import EdgepipeError
from edgepipe.harness import BenchSettings
from edgepipe.pipeline.bench import TIMING, mark_oversubscribed, model_layers, profile_join
from edgepipe.pipeline.measure import error_line, line, measure_plans, plan, settings_for
from edgepipe.pipeline.rundir import now_iso
from edgepipe.pipeline.stage import Echo
from edgepipe.results import Record, Results, Status
from edgepipe.versions import __version__


def bench_files(
    paths: list[Path],
    echo: Echo,
    data_dir: Path | None = None,
    labels_file: Path | None = None,
    threads: tuple[int, ...] = (1,),
    batches: tuple[int, ...] = (1,),
    settings: BenchSettings | None = None,
    seed: int = 0,
    devices: tuple[str, ...] = ("cpu",),
    engines: tuple[str, ...] = (),
    memory: bool = True,
    tune: bool = False,
    profile: bool = False,
    model: Path | None = None,
) -> Results:
    """Benchmark artifacts on their own (no run directory): one record per artifact, engine, device,
    thread count and batch size.

    With ``data_dir`` (an image folder, one subfolder per class) accuracy is measured too; class
    indices follow ``labels_file`` (e.g. the run's labels.txt), the labels the artifact records, or the
    folder's sorted class names. Without it, latency is measured on seeded random pixels, and accuracy
    is left out. An artifact that cannot be loaded or run is a failed record; the others are measured.
    With ``profile``, each measured artifact is also profiled per op after timing (``model``: the Keras model
    file whose layers the ops are mapped to, for MACs per layer).
    """
    settings = settings or BenchSettings()
    for path in paths:
        if not path.exists():
            raise EdgepipeError(f"artifact '{path}' does not exist", "Check the path.")
    for name in engines:
        ENGINES.canonical(name)
    artifacts = [identify(path) for path in paths]
    if data_dir is not None:
        _check_raw_pixels(artifacts)
    unmeasured: list[Record] = []
    plans = []
    for path, artifact in zip(paths, artifacts):
        base = Record(
            artifact=str(path),
            format=artifact.format,
            precision=artifact.precision,
            status=Status.OK,
            size_mb=round(artifact_size_mb(path), 4),
        )
        try:
            shape, classes = probe(artifact)
        except EdgepipeError as exc:
            unmeasured.append(dataclasses.replace(base, status=Status.SKIPPED, reason=str(exc)))
            echo(f"  {path.name}: " + line(unmeasured[-1]))
            continue
        except Exception as exc:  # not loadable: a failed record, the other artifacts are still measured
            what = "not an image classifier" if isinstance(exc, NotAnImageClassifier) else "cannot load"
            unmeasured.append(dataclasses.replace(base, status=Status.FAILED, reason=f"{what}: {error_line(exc)}"))
            echo(f"  {path.name}: " + line(unmeasured[-1]))
            continue
        check_batch_memory(shape, max(batches))
        labels_order = read_labels_file(labels_file) if labels_file else artifact.labels
        if labels_order is not None and len(labels_order) != classes:
            raise EdgepipeError(
                f"{'labels file ' + str(labels_file) if labels_file else path.name + ' records labels that'}"
                f" name {len(labels_order)} classes, but {path.name} has {classes} outputs",
                "Pass the labels.txt the model was trained with (--labels).",
            )
        try:
            images, labels = bench_images(data_dir, labels_order, shape, seed)
        except NonSquareInput as exc:  # this artifact alone: the others are still measured
            unmeasured.append(dataclasses.replace(base, status=Status.SKIPPED, reason=str(exc)))
            echo(f"  {path.name}: " + line(unmeasured[-1]))
            continue
        plans += [
            plan(artifact, base, s, images, labels) for s in settings_for(artifact, engines, devices, threads, batches)
        ]
    device = fingerprint()
    profiles: list | None = [] if profile else None
    layers = model_layers(model) if profile else None
    records = measure_plans(
        plans,
        settings,
        echo,
        memory=memory,
        tune_threads=max(threads) if tune else None,
        profiles=profiles,
        profile_context=lambda p: profile_join(p, device, layers),
    )
    for record in records:
        echo("  " + line(record))
    records += unmeasured
    labelled = {tuple(a.labels or ()) for a in artifacts} - {()}
    classes = read_labels_file(labels_file) if labels_file else (list(labelled.pop()) if len(labelled) == 1 else None)
    device = fingerprint()
    mark_oversubscribed(records, device, echo)
    return Results(
        device=device,
        records=records,
        created=now_iso(),
        edgepipe=__version__,
        classes=classes,
        profiles=profiles or [],
        conditions={
            **settings.as_dict(),
            "threads": list(threads),
            "batch_sizes": list(batches),
            "devices": list(devices),
            "engines": list(engines) or "each artifact's default engine",
            "timing": TIMING,
            "rounds": "interleaved",
            "tuned": tune,
            "data": str(data_dir) if data_dir else "seeded random pixels (no accuracy)",
        },
    )


def _check_raw_pixels(artifacts: list[Artifact]) -> None:
    """EdgepipeError for an artifact whose file says it does not take raw pixels (an ONNX file edgepipe did not
    write): its accuracy on the images would be measured without the preprocessing it was trained with."""
    for artifact in artifacts:
        if artifact.info.get("raw_pixels") is False:
            name = artifact.path.name
            raise EdgepipeError(
                f"'{name}' was not written by edgepipe: it takes its input as its exporter made it, not raw pixels, "
                "so its accuracy on --data would be measured without its preprocessing",
                f"Export it first (edgepipe export {name} --calibration-data DIR with --preprocessing or --scale, "
                "--mean, --std...) and bench the artifacts; or drop --data to time it alone.",
            )


class NonSquareInput(EdgepipeError):
    """Image folders are read at square sizes: an artifact taking height != width cannot be scored on them."""


class NotAnImageClassifier(Exception):
    """The artifact does not take a batch of images or does not output one score per class."""


def probe(artifact: Artifact) -> tuple[tuple, int]:
    """(input shape NHWC, number of classes) of an artifact: read from the file where its default engine can
    (an OpenVINO IR, a TFLite file: nothing compiled, no delegate prepared) and the image size and class count
    are fixed there, else from one inference on a blank image; raises NotAnImageClassifier when it takes no
    (N, H, W, 1 or 3) image batch or gives no (N, classes) output."""
    from edgepipe.backends import default_engine

    entry = default_engine(artifact)
    try:
        declared = entry.runner.declared_shapes(artifact) if not entry.available() else None
    except Exception:  # the file's reader cannot tell: running the model says what it takes, or why it cannot
        declared = None
    if declared is not None and None not in declared[0][1:] and len(declared[1]) == 2 and declared[1][1]:
        shape, out = declared
        _check_image_input(shape, "")
        return tuple(shape), _classes(out)
    with create_runner(artifact, threads=1) as runner:
        shape = runner.input_spec().shape
        _check_image_input(shape, f" {runner.input_spec().name}")
        # a side the file leaves open takes the other side's size (square), or 224 when both are open
        height = int(shape[1] or shape[2] or 224)
        width, channels = int(shape[2] or height), int(shape[3] or 3)
        out = runner.infer(np.zeros((1, height, width, channels), np.float32))
    return (shape[0], height, width, channels), _classes(out.shape)


def _check_image_input(shape: tuple, name: str) -> None:
    if len(shape) != 4 or shape[3] not in (1, 3, None) or any(d is not None and d < 1 for d in shape[1:3]):
        raise NotAnImageClassifier(
            f"its input{name} has shape {list(shape)}, not an image batch (N, height, width, 1 or 3 channels)"
        )


def _classes(out: tuple) -> int:
    if len(out) != 2 or out[1] is None or out[1] < 2:
        raise NotAnImageClassifier(f"its output has shape {list(out)}, not one score per class")
    return int(out[1])


def available_memory_bytes() -> int | None:
    """The memory the kernel says is available for a new workload, in bytes; None where unknown."""
    kb = proc_kb("/proc/meminfo", "MemAvailable")
    return None if kb is None else kb * 1024


#: a batch needs its float32 input several times over (the harness's batches, the engine's input and activations)
BATCH_MEMORY_FACTOR = 4


def check_batch_memory(shape: tuple, batch: int) -> None:
    """Refuse a batch size whose input images alone would exhaust the memory available here."""
    need = BATCH_MEMORY_FACTOR * batch * int(np.prod(shape[1:])) * 4
    available = available_memory_bytes()
    if available is not None and need > available:
        raise EdgepipeError(
            f"batch {batch} needs about {need / 1e9:.1f} GB for its {shape[1]}x{shape[2]}x{shape[3]} "
            f"input images alone, and this machine has {available / 1e9:.1f} GB available",
            f"Use a batch of at most {max(1, int(batch * available / need))}.",
        )


def bench_images(data_dir: Path | None, labels: Any, shape: tuple, seed: int):
    """(uint8 images, labels or None) for an artifact with input ``shape`` (NHWC); ``labels`` is the model's
    class order (a list), or None for the folder's sorted class names."""
    size, width, channels = int(shape[1]), int(shape[2]), int(shape[3])
    if data_dir is None:
        return np.random.default_rng(seed).integers(0, 256, (32, size, width, channels)).astype(np.uint8), None
    if width != size:
        raise NonSquareInput(
            f"it takes {size}x{width} images (height x width), and edgepipe reads image folders at square sizes "
            "only: time it without data (random pixels), or bench an artifact with a square input"
        )
    from edgepipe.config import DataConfig
    from edgepipe.data import make_index

    index = make_index(
        DataConfig(path=str(data_dir), val_fraction=0.0, test_fraction=0.0), seed
    )  # every image, one split
    dataset = materialize(index, size, channels)
    images, found = dataset.train.images, dataset.train.labels
    if labels is None:
        return images, found
    order = list(labels)
    missing = [c for c in dataset.class_names if c not in order]
    if missing:
        raise EdgepipeError(
            f"classes {', '.join(missing)} of {data_dir} are not among the model's labels",
            "Use the labels.txt the model was trained with (--labels).",
        )
    remap = np.asarray([order.index(c) for c in dataset.class_names])
    return images, remap[found]


def read_labels_file(path: Path) -> list[str]:
    if not Path(path).is_file():
        raise EdgepipeError(f"labels file '{path}' does not exist", "Pass the labels.txt the model was trained with.")
    try:
        return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise EdgepipeError(
            f"labels file '{path}' is not UTF-8 text", "Pass a labels.txt with one class per line."
        ) from None
