"""A run on a backbone brought from elsewhere (``model.path`` an ONNX file): the build, train and export stages'
part for it.

build: the backbone checked with its declared preprocessing (``model.preprocessing``), its feature graph written
(``backbone.onnx``: raw NHWC pixels in, pooled features out). train: features computed once per image by ONNX
Runtime and cached, a new head trained on them as on a Keras backbone, joined to the feature graph into one
classifier (``model.onnx``, labels in its metadata), which must give the Keras head's probabilities on the same
features (the join is proved, else the stage fails). export: every format from that classifier, each artifact
verified against it run by ONNX Runtime. Only feature extraction: the backbone's weights are never changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.config import RunConfig
from edgepipe.errors import ConfigError, EdgepipeError
from edgepipe.pipeline.rundir import RunDir
from edgepipe.pipeline.stage import Echo

#: the largest difference in probability allowed between the joined classifier and the Keras head it holds, on
#: the same images (float32 arithmetic in two engines; a wrong join differs by far more)
JOIN_TOLERANCE = 1e-4


def source_of(config: RunConfig) -> Any | None:
    """The ModelSource reading ``model.path`` when it is not a Keras file (an ONNX backbone...), else None.
    EdgepipeError for a kind of file a run cannot train a head on (a .pt2 program, say)."""
    from edgepipe.backends import model_source

    path = config.model.path
    source = model_source(path) if path else None
    if source is not None and source.read_backbone is None:
        raise EdgepipeError(
            f"'{path}' is {source.description}: a run trains a new head on a Keras model or an ONNX backbone",
            f"Export the network to ONNX up to its features and pass that, or export it whole with "
            f"'edgepipe export {Path(path).name} --calibration-data DIR'.",
        )
    return source


def is_foreign(config: RunConfig) -> bool:
    return source_of(config) is not None


def trained_model(config: RunConfig, run: RunDir) -> Path:
    """The model file the train stage wrote: the Keras model, or the classifier joined on a foreign backbone."""
    return run.model_onnx if is_foreign(config) else run.model


def _refusals(config: RunConfig) -> None:
    """ConfigErrors for what a run on a foreign backbone cannot do (before any work starts)."""
    from edgepipe.training.foreign import STRATEGY

    t = config.train
    if t.strategy != STRATEGY:
        raise ConfigError(
            f"train.strategy '{t.strategy}' with a backbone from an ONNX file: fine-tuning or retraining a foreign "
            "backbone's weights is out of scope (edgepipe trains a new head on it: feature-extraction)",
            "Set --strategy feature-extraction; to change the backbone itself, train it in its own framework, then "
            "bring it.",
        )
    reasons = [
        (t.augment.active, "train.augment (the backbone's features are computed once per image, not per batch)"),
        (not t.cache_features, "train.cache_features off (the backbone runs in its own engine, once per image)"),
        (config.pretrain is not None, "a pretrain section (the backbone comes trained)"),
        (t.baseline_from_scratch, "train.baseline_from_scratch (edgepipe cannot build the network to retrain it)"),
    ]
    for refused, what in reasons:
        if refused:
            raise ConfigError(
                f"{what} does not apply to a backbone from an ONNX file", "Remove it from the configuration."
            )


def read_backbone(config: RunConfig) -> Any:
    """The checked backbone (its feature graph made, nothing written) for ``model.path`` with the declared
    ``model.preprocessing``, at ``model.input_size`` and ``model.channels``; one-line EdgepipeErrors for a setting
    the run cannot take, or what the backend finds wrong with the file."""
    from edgepipe.pixels import resolve

    _refusals(config)
    m = config.model
    backbone = source_of(config).read_backbone(Path(m.path), resolve(m.preprocessing), m.input_size)
    if backbone.channels != m.channels:
        raise ConfigError(
            f"'{Path(m.path).name}' takes {backbone.channels} channel(s) but model.channels is {m.channels}",
            f"Set model.channels: {backbone.channels}.",
        )
    return backbone


def build(config: RunConfig, run: RunDir, index: dict, echo: Echo) -> dict[str, Any]:
    """The build stage's part: the backbone's feature graph written to the run directory; build.json's record."""
    backbone = read_backbone(config)
    backbone.write(run.backbone_onnx)
    run.model_initial.unlink(missing_ok=True)  # a Keras model an earlier build of this run directory left
    info = {
        "architecture": f"user:{Path(config.model.path).stem}",
        "family": "onnx backbone",
        "input_size": backbone.size,
        "channels": backbone.channels,
        "alpha": None,
        "weights": config.model.path,
        "num_classes": len(index["class_names"]),
        "preprocessing": backbone.preprocessing(),
        "reference": {"source": "your ONNX backbone"},
        "paper": f"loaded from {config.model.path}",
        "backbone": backbone.describe(),
        "params": backbone.params + (backbone.width + 1) * len(index["class_names"]),
        "macs": None,
    }
    echo(
        f"backbone {Path(config.model.path).name}: {backbone.output} -> {backbone.width} features per image, "
        f"input {backbone.size}x{backbone.size}x{backbone.channels}, preprocessing folded in "
        f"({info['preprocessing']['description']})"
    )
    return info


def train(config: RunConfig, run: RunDir, dataset, echo: Echo) -> tuple[dict[str, Any], np.ndarray]:
    """The train stage's part: the head trained on the backbone's cached features and joined to its graph
    (``model.onnx``), the join proved on the val features. (training.json's outcome, held-out probabilities of
    the joined classifier). EdgepipeError when the joined classifier does not give the head's probabilities."""
    from edgepipe.backends.onnxruntime.backbone import join, run_graph
    from edgepipe.device import resolve_threads
    from edgepipe.fileio import read_json, write_bytes
    from edgepipe.training.foreign import head_weights, train_head

    built = read_json(run.build_info)
    threads = resolve_threads(config.bench.threads)
    graph = run.backbone_onnx
    identity = {k: built["backbone"][k] for k in ("sha256", "input_size", "channels", "features", "output")}
    head, outcome, val_features = train_head(
        lambda images: run_graph(graph, images, threads),
        {**identity, "preprocessing": built["preprocessing"]},
        dataset,
        config.train,
        config.model.dropout,
        config.seed,
        echo,
        cache_dir=run.file("cache"),
    )
    kernel, bias = head_weights(head)
    joined = join(graph, kernel, bias, run.read_labels(), built["preprocessing"])
    write_bytes(run.model_onnx, joined.SerializeToString())
    run.model.unlink(missing_ok=True)  # a Keras model an earlier run of this directory left
    outcome["join_check"] = _join_check(head, run.model_onnx, dataset.splits["val"].images, val_features, threads)
    echo(
        f"  joined {graph.name} and the head into {run.model_onnx.name}: probabilities match the Keras head "
        f"on {outcome['join_check']['images']} val images to max |Δp| {outcome['join_check']['max_abs_diff']:.1e}"
    )
    return outcome, classifier_probabilities(run.model_onnx, dataset.heldout.images, threads)


def classifier_probabilities(path: Path, images: np.ndarray, threads: int) -> np.ndarray:
    """Probabilities of the joined classifier at ``path`` on raw NHWC ``images``, run by ONNX Runtime."""
    from edgepipe.backends.onnxruntime.backbone import run_graph

    return run_graph(path, images, threads)


def _join_check(head, path: Path, images: np.ndarray, cached: np.ndarray, threads: int) -> dict[str, Any]:
    """The joined classifier on the val images against the Keras head on their cached features; EdgepipeError
    when they differ by more than JOIN_TOLERANCE (or there is nothing to compare)."""
    from edgepipe.training.controls import predict_arrays

    if len(images) == 0:
        raise EdgepipeError(
            "the val split is empty, so the joined classifier cannot be checked against its head",
            "Keep data.val_fraction above 0 (or add a val/ folder).",
        )
    joined = classifier_probabilities(path, images, threads)
    expected = predict_arrays(head, np.asarray(cached, np.float32))
    diff = float(np.max(np.abs(joined - expected)))
    check = {
        "images": len(images),
        "max_abs_diff": diff,
        "tolerance": JOIN_TOLERANCE,
        "top1_agreement": float(np.mean(joined.argmax(1) == expected.argmax(1))),
        "against": "the Keras head on the cached features of the same images",
    }
    if not diff <= JOIN_TOLERANCE:
        raise EdgepipeError(
            f"the backbone joined with its head gives other probabilities than the head on the cached features "
            f"(max |Δp| {diff:.2e} > {JOIN_TOLERANCE:g} on {len(images)} val images)",
            "Run with --debug and report it: the join is wrong.",
        )
    return check


def export_source(run: RunDir) -> Any:
    """The joined classifier of the run, read as an ONNX source (it takes raw pixels: nothing is folded again)."""
    from edgepipe.backends import model_source
    from edgepipe.pixels import PixelTransform

    return model_source(run.model_onnx).read(run.model_onnx, PixelTransform())


def reference_format(run: RunDir) -> str:
    """The format of the run's own classifier: the reference its artifacts are judged against."""
    from edgepipe.backends import model_source

    return model_source(run.model_onnx).reference
