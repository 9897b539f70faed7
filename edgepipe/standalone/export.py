"""Export of a model file or object on its own, without a run directory: what ``edgepipe export MODEL`` and
``edgepipe.export`` call. The conversion itself is the export stage's (``edgepipe.pipeline.export``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.backends import formats, model_source, object_source
from edgepipe.calibration import draw
from edgepipe.config import EXPORT_DEFAULTS
from edgepipe.data import materialize
from edgepipe.errors import EdgepipeError
from edgepipe.export_index import INDEX_NAME, ExportIndex, write_export_index
from edgepipe.fileio import make_folder, sha256_file
from edgepipe.pipeline.export import ExportJob, _facts, _run_child, _Task, export_all, isolated
from edgepipe.pipeline.stage import Echo


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
        # val judges the INT8 recipes; nothing is reported here, so no test split is held out
        index = make_index(DataConfig(path=str(calibration), val_fraction=0.2, test_fraction=0.0), seed)
        dataset = materialize(index, size, channels)
        val = dataset.splits["val"]
        return dataset.class_names, (dataset.train.images, dataset.train.labels), (val.images, val.labels)
    images, labels = calibration if isinstance(calibration, tuple) else (calibration, None)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (size, size, channels):
        raise EdgepipeError(
            f"calibration images must be an array (N, {size}, {size}, {channels}) of raw pixels, "
            f"got shape {images.shape}",
            "Pass uint8 images at the model's input size, or a folder.",
        )
    if labels is None:
        return None, (images, np.zeros(len(images), np.int64)), None
    labels = np.asarray(labels, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(images))
    held = order[: max(1, len(images) // 5)]
    kept = order[len(held) :] if len(images) > 1 else order
    return None, (images[kept], labels[kept]), (images[held], labels[held])


def export_model(
    model: Any,
    names: list[str],
    out_dir: Path,
    echo: Echo,
    calibration: Any = None,
    class_names: list[str] | None = None,
    calibration_size: int = 200,
    seed: int = 0,
    calibration_method: str = "minmax",
    accuracy_budget_pp: float = EXPORT_DEFAULTS.accuracy_budget_pp,
    threads: int | None = None,
    unsafe: bool = False,
    options: dict[str, Any] | None = None,
    isolation: str = "auto",
    qat: Any = None,
    preprocessing: Any = None,
    input_size: int | None = None,
    input_shape: Any | None = None,
    frozen_graph: bool = False,
) -> Path:
    """Export any Keras model (an object or a file, not only a run directory's), or a model a backend reads as a
    source (an ONNX or .pt2 file, a PyTorch module at ``input_shape``; with ``preprocessing``, a
    pixels.PixelTransform, and ``input_size`` for a dynamic spatial size), to ``out_dir``; returns artifacts.json's
    path. See ``edgepipe.export`` for ``calibration`` and ``isolation``; ``frozen_graph``: TFLite and ONNX converted
    from the Keras model's frozen graph (ExportJob.frozen_graph)."""
    from edgepipe.device import resolve_threads

    source = str(model) if isinstance(model, (str, Path)) else None
    scratch = out_dir / ".edgepipe-tmp"
    foreign = _foreign_source(model, source, preprocessing, input_size, input_shape, unsafe)
    model, facts = _model_and_facts(model, source, foreign, isolation, unsafe, echo)
    size, channels, outputs = facts["size"], facts["channels"], facts["outputs"]
    names = expand_formats(names)
    labels = list(class_names) if class_names else None
    calibration_set = pool = validation = None
    unverified = "no calibration data was given to verify on (--calibration-data DIR, or calibration= in Python)"
    if calibration is not None:
        found, pool, validation = _calibration_from(calibration, size, channels, seed)
        labels = labels or found
        calibration_set = draw(pool[0], pool[1], calibration_size, seed)
        unverified = "the calibration images have no labels, so none are held out to verify on"
        if validation is not None and (labels is not None and len(labels) != outputs):
            unverified = (
                f"the calibration data has {len(labels)} classes but the model outputs {outputs}: "
                "pass images of the model's own classes to verify (and to give INT8 an accuracy budget)"
            )
            echo(f"note: {unverified}; artifacts are not verified and INT8 has no accuracy budget")
            validation = None
    elif any(formats().get(f).needs_calibration for f in names):
        raise EdgepipeError("INT8 formats need calibration images", "Pass --calibration-data DIR (an image folder).")
    if labels is not None and len(labels) != outputs:
        labels = None
    labels = labels or (foreign.labels if foreign is not None else None) or [f"class_{i}" for i in range(outputs)]
    make_folder(out_dir)
    stem = Path(source).stem if source else facts["name"]
    shutil.rmtree(scratch, ignore_errors=True)  # what an interrupted export here left behind
    described = foreign.preprocessing() if foreign is not None else {"description": "as saved in the model file"}
    job = ExportJob(
        formats=names,
        out_dir=out_dir,
        stem=stem,
        labels=labels,
        preprocessing=described,
        calibration_set=calibration_set,
        calibration_pool=pool,
        validation=validation,
        calibration_method=calibration_method,
        accuracy_budget_pp=accuracy_budget_pp,
        threads=resolve_threads(threads),
        options=options or {},
        workdir_parent=scratch,
        qat=qat,
        source=foreign,
        unverified=None if validation is not None else unverified,
        frozen_graph=frozen_graph,
    )
    if foreign is not None:
        make_folder(scratch)
        job.source_onnx = foreign.write(scratch / "source-raw-pixels.onnx")
    model_path = None if foreign is not None else (Path(source) if source else _saved_copy(model, scratch, isolation))
    isolate = foreign is None and isolated(isolation, model_path)
    echo(f"exporting {source or stem} to {out_dir}" + (" (each format in a child process)" if isolate else "") + ":")
    try:
        records = export_all(model, job, echo, model_path, isolate, unsafe)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return write_export_index(
        out_dir / INDEX_NAME,
        ExportIndex(
            source_model=source or stem,
            source_sha256=sha256_file(source) if source else None,
            source=foreign.describe() if foreign is not None else None,
            calibration=calibration_set.describe() if calibration_set is not None else None,
            artifacts=records,
        ),
    )


def _foreign_source(
    model: Any, source: str | None, preprocessing: Any, input_size: int | None, input_shape: Any | None, unsafe: bool
) -> Any:
    """The checked source when ``source`` is a model file a backend reads (an ONNX classifier, a torch.export
    program) or ``model`` an object one reads (a PyTorch module, at ``input_shape``), else None. EdgepipeError when
    preprocessing or an input size is declared for a Keras model, which holds its own, or an input shape for
    anything but an object source (a file holds its own)."""
    from edgepipe.pixels import PixelTransform

    given = preprocessing or PixelTransform()
    reader = model_source(source) if source is not None else None
    in_memory = object_source(model) if source is None else None
    if input_shape is not None and in_memory is None:
        raise EdgepipeError(
            "an input shape is declared for a PyTorch module only; a model file holds its own",
            "Drop input_shape (a dynamic spatial size takes input_size).",
        )
    if reader is not None:
        return reader.read(Path(source), given, input_size, unsafe=unsafe)
    if in_memory is not None:
        return in_memory.read(model, given, input_size, input_shape)
    declared = preprocessing is not None and any(v is not None for v in preprocessing.as_dict().values())
    if declared or input_size is not None:
        raise EdgepipeError(
            "preprocessing and input size are declared for ONNX and PyTorch models only; a Keras model holds its own",
            "Drop --layout, --channels, --scale, --mean, --std, --preprocessing and --input-size.",
        )
    return None


def _model_and_facts(
    model: Any, source: str | None, foreign: Any, isolation: str, unsafe: bool, echo: Echo
) -> tuple[Any, dict[str, Any]]:
    """(the Keras model or None, its facts: size, channels, outputs, name)."""
    from edgepipe.architectures.loading import load_keras_model

    if foreign is not None:
        return None, {
            "size": foreign.size,
            "channels": foreign.channels,
            "outputs": foreign.outputs,
            "name": foreign.name,
        }
    if source is not None and isolated(isolation, Path(source)):
        # every format converts in a child process: this one never loads TensorFlow, so it holds no model's memory
        # while they run (ResNet50: 1.5 GB less at the peak of the export)
        return None, _run_child(_Task("facts", source, None, unsafe=unsafe), echo, temporary=True)["facts"]
    if source is not None:
        model = load_keras_model(source, unsafe)
    return model, _facts(model)


def _saved_copy(model, scratch: Path, isolation: str) -> Path | None:
    """A model object saved where child processes can load it (only when they may be needed)."""
    if isolation == "none":
        return None
    from edgepipe.fileio import atomic_path

    path = scratch / "model.keras"
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return path
