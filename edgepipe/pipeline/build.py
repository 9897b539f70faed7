"""Stage 1: index the dataset, build the architecture (optionally pretrain its backbone), add a new head."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgepipe.architectures import build_classifier, compute
from edgepipe.architectures.classifier import BACKBONE, resolve_alpha, resolve_architecture, set_batchnorm_momentum
from edgepipe.config import RunConfig
from edgepipe.data import format_summary, make_index
from edgepipe.errors import ConfigError
from edgepipe.fileio import atomic_path, write_json, write_text
from edgepipe.pipeline import foreign
from edgepipe.pipeline.rundir import RunDir
from edgepipe.pipeline.stage import Echo, Stage, file_digest
from edgepipe.training.controls import (
    Controls,
    check_batch_size,
    distribution,
    distribution_record,
    is_chief,
    leave_results_to_chief,
    scope,
    wait_for_workers,
)
from edgepipe.training.scratch import SCRATCH_BN_MOMENTUM, train_from_scratch
from edgepipe.versions import __version__


def _inputs(config: RunConfig, run: RunDir) -> dict:
    return {
        "edgepipe": __version__,
        "seed": config.seed,
        "data": dataclasses.asdict(config.data),
        "model": dataclasses.asdict(config.model),
        "pretrain": dataclasses.asdict(config.pretrain) if config.pretrain else None,
        "model_file": file_digest(Path(config.model.path)) if config.model.path else None,
        "original_head": config.train.strategy == "classifier",
        "labels_file": file_digest(Path(config.model.labels)) if config.model.labels else None,
    }


def _outputs(run: RunDir) -> list:
    return [run.dataset_index, run.labels, run.model_initial, run.backbone_onnx, run.build_info]


def pretrain(config: RunConfig, source_index: dict, echo: Echo):
    """Train the configured network from scratch on the source data; returns (model, summary).

    With TF_CONFIG naming a cluster, every worker runs this (the build command on each machine).
    """
    p = config.pretrain
    kind, dist = distribution()
    check_batch_size(p.batch_size, distribution_record(kind, dist)["replicas"], "pretrain.batch_size")
    with scope(dist):
        source_model, summary = train_from_scratch(
            config,
            source_index,
            len(source_index["class_names"]),
            epochs=p.epochs,
            batch_size=p.batch_size,
            controls=Controls(learning_rate=p.learning_rate),
            label="pretrain",
            echo=echo,
            augment=p.augment,
        )
    return source_model, summary


def _run(config: RunConfig, run: RunDir, echo: Echo) -> None:
    """Every worker of a cluster runs this stage, for the pretraining; the chief alone writes."""
    if not is_chief() and not config.pretrain:
        leave_results_to_chief(echo, "nothing to train in the build stage")
        return
    m = config.model
    index = make_index(config.data, config.seed)
    echo(format_summary(index["summary"]))
    labels = index["class_names"]
    if foreign.is_foreign(config):  # a backbone from an ONNX file: its feature graph, no Keras model
        write_json(run.dataset_index, index)
        write_text(run.labels, "\n".join(labels) + "\n")
        write_json(run.build_info, foreign.build(config, run, index, echo))
        return
    run.backbone_onnx.unlink(missing_ok=True)  # what an earlier build on a foreign backbone left here
    arch = resolve_architecture(m, config.unsafe_load)
    weights = "none" if m.path else m.weights
    info: dict = {
        "architecture": arch.name,
        "family": arch.family,
        "input_size": m.input_size,
        "channels": m.channels,
        "alpha": resolve_alpha(arch, m.alpha),
        "weights": m.path or weights,
        "num_classes": len(labels),
        "preprocessing": arch.preprocessing.as_dict(),
        "reference": arch.reference.as_dict(),
        "paper": arch.paper,
    }
    if config.train.strategy == "classifier":
        from edgepipe.architectures.original_head import build_original, network_labels, remap_index

        if config.pretrain:
            raise ConfigError(
                "the classifier strategy uses the network as it is; pretraining would replace its head",
                "Remove the pretrain section, or choose another train.strategy.",
            )
        names, aliases = network_labels(m, arch)
        index = remap_index(index, names, aliases)
        labels = index["class_names"]
        model, softmax_added = build_original(
            arch, m.input_size, m.channels, m.alpha, weights, len(labels), config.seed
        )
        info.update(
            num_classes=len(labels),
            head="original",
            softmax_appended=softmax_added,
            dataset_classes=index["dataset_class_names"],
            labels_source=m.labels or "Keras ImageNet class index",
        )
        echo(
            f"classifier strategy: the network's own head with {len(labels)} classes; your classes map to "
            + ", ".join(
                f"{c}->{names.index(c) if c in names else aliases[c]}" for c in index["dataset_class_names"][:8]
            )
            + (" ..." if len(index["dataset_class_names"]) > 8 else "")
        )
    elif config.pretrain:
        p = config.pretrain
        source_index = make_index(p.data, config.seed)
        echo("pretraining the backbone from scratch on the source data:")
        echo(format_summary(source_index["summary"]))
        source_model, summary = pretrain(config, source_index, echo)
        if not is_chief():
            leave_results_to_chief(echo, "pretraining done")
            wait_for_workers(distribution()[1])
            return
        echo(f"  source {summary['heldout_split']} top-1: {summary['top1']:.2%}")
        model = build_classifier(arch, len(labels), m.input_size, m.channels, m.alpha, "none", m.dropout, config.seed)
        model.get_layer(BACKBONE).set_weights(source_model.get_layer(BACKBONE).get_weights())
        info["weights"] = (
            "pretrained on " + p.data.path + (f" classes {','.join(p.data.classes)}" if p.data.classes else "")
        )
        info["pretrain"] = {"source_classes": source_index["class_names"], **summary}
    else:
        model = build_classifier(arch, len(labels), m.input_size, m.channels, m.alpha, weights, m.dropout, config.seed)
        if weights == "none" and not m.path:  # random weights: the network will be trained from scratch
            info["batchnorm_momentum"] = SCRATCH_BN_MOMENTUM
            set_batchnorm_momentum(model, SCRATCH_BN_MOMENTUM)
    info["params"] = int(model.count_params())
    info["macs"] = compute.count(model).macs
    write_json(run.dataset_index, index)
    write_text(run.labels, "\n".join(labels) + "\n")
    with atomic_path(run.model_initial, suffix=".keras") as tmp:
        model.save(tmp)
    write_json(run.build_info, info)
    echo(
        f"built {info['architecture']} ({info['params']:,} parameters, {info['macs'] / 1e6:.1f}M MACs, {len(labels)} classes, "
        f"{m.input_size}x{m.input_size}x{m.channels}, weights: {info['weights']})"
    )
    if config.pretrain:  # the workers that pretrained wait until the run directory is written
        wait_for_workers(distribution()[1])


STAGE = Stage(
    "build",
    "Index the dataset and build the network with a new classification head.",
    _inputs,
    _outputs,
    _run,
    distributed=True,
)
