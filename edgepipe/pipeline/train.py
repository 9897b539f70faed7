"""Stage 2: transfer learning to the target data, evaluation on the held-out split."""

from __future__ import annotations

import csv
import dataclasses
import io

import numpy as np

from edgepipe.config import RunConfig
from edgepipe.data import materialize
from edgepipe.evaluation import evaluate, format_evaluation
from edgepipe.fileio import atomic_path, read_json, write_json, write_text
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
    predict_arrays,
    scope,
    wait_for_workers,
)
from edgepipe.training.scratch import train_from_scratch
from edgepipe.training.strategies import STRATEGIES


def _inputs(config: RunConfig, run: RunDir) -> dict:
    inputs = {
        "seed": config.seed,
        "train": dataclasses.asdict(config.train),
        "baseline_epochs": _baseline_epochs(config),
        "model_initial": file_digest(run.model_initial),
        "dataset": file_digest(run.dataset_index),
    }
    if foreign.is_foreign(config):
        inputs.update(backbone=file_digest(run.backbone_onnx), dropout=config.model.dropout)
    return inputs


def _outputs(run: RunDir) -> list:
    return [run.model, run.model_onnx, run.training, run.history_csv, run.history_png, run.confusion_png]


def _baseline_epochs(config: RunConfig) -> int:
    if config.train.baseline_epochs:
        return config.train.baseline_epochs
    return config.pretrain.epochs if config.pretrain else config.train.epochs


def history_csv(history: dict[str, list[float]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    keys = list(history)
    writer.writerow(["epoch", *keys])
    for epoch in range(len(history[keys[0]]) if keys else 0):
        writer.writerow([epoch + 1, *(f"{history[k][epoch]:.6g}" for k in keys)])
    return out.getvalue()


def _run(config: RunConfig, run: RunDir, echo: Echo) -> None:
    """Train under the process's tf.distribute strategy; on several workers each one runs this, and
    the chief alone evaluates and writes the run directory."""
    from edgepipe.architectures.loading import load_keras_model

    # first: joining a cluster waits for every worker, so the chief's build stage has written its outputs
    kind, dist = distribution()
    record = distribution_record(kind, dist)
    m = config.model
    index = read_json(run.dataset_index)
    dataset = materialize(index, m.input_size, m.channels)
    if foreign.is_foreign(config):
        _run_foreign(config, run, dataset, record, echo)
        return
    strategy = STRATEGIES.get(config.train.strategy)
    echo(f"training with strategy '{strategy.name}': {strategy.description}")
    if dist is not None:
        echo(
            f"  tf.distribute {kind}: {record['replicas']} replicas on {record['workers']} worker(s)"
            + (f", this is worker {record['task_index']}" if record["workers"] > 1 else "")
        )
    check_batch_size(config.train.batch_size, record["replicas"], "train.batch_size")
    chief = is_chief()
    with scope(dist):
        model = load_keras_model(str(run.model_initial), config.unsafe_load)
        outcome = strategy.fn(model, dataset, config.train, config.seed, echo, cache_dir=run.file("cache"))
        evaluation = _evaluate(model, dataset, echo) if chief else None
        baseline = _baseline(config, index, dataset.num_classes, echo) if config.train.baseline_from_scratch else None
    if chief:  # the chief alone writes the run directory
        _write(
            run,
            model,
            _summary(strategy.name, record, dataset, outcome, evaluation, baseline),
            f"{strategy.name}: training history",
            f"{dataset.heldout_name} split",
        )
    else:
        leave_results_to_chief(echo, "training done")
    wait_for_workers(dist)


def _run_foreign(config: RunConfig, run: RunDir, dataset, record: dict, echo: Echo) -> None:
    """A new head on a foreign backbone's cached features, joined to its graph (see pipeline.foreign). The
    chief alone trains it, outside any tf.distribute scope: a head on cached features needs no cluster."""
    if not is_chief():
        leave_results_to_chief(echo, "a head on a foreign backbone is trained by worker 0 alone")
        return
    echo(f"training a new head on the backbone from {config.model.path} (feature extraction)")
    outcome, probabilities = foreign.train(config, run, dataset, echo)
    evaluation = _evaluation(probabilities, dataset, "ONNX Runtime, the joined classifier", echo)
    summary = _summary(config.train.strategy, record, dataset, outcome, evaluation, None)
    _write_records(run, summary, f"{config.train.strategy}: training history", f"{dataset.heldout_name} split")


def _summary(
    strategy: str, distribution_used: dict, dataset, outcome: dict, evaluation: dict, baseline: dict | None
) -> dict:
    """training.json."""
    summary = {
        "strategy": strategy,
        "distribution": distribution_used,
        "heldout_split": dataset.heldout_name,
        "heldout_images": len(dataset.heldout),
        "top1": evaluation["top1"],
        "top5": evaluation.get("top5"),
        "train_images": len(dataset.train),
        "splits": dataset.roles(),  # val chose (early stopping, schedule); the held-out split reported
        **outcome,
        "evaluation": evaluation,
    }
    if baseline is not None:
        summary["baseline_from_scratch"] = baseline
    return summary


def _evaluate(model, dataset, echo: Echo) -> dict:
    probabilities = predict_arrays(model, dataset.heldout.images.astype(np.float32))
    return _evaluation(probabilities, dataset, "Keras FP32", echo)


def _evaluation(probabilities: np.ndarray, dataset, what: str, echo: Echo) -> dict:
    """The held-out metrics of ``probabilities`` (of the model ``what`` names), said in the log."""
    evaluation = evaluate(probabilities, dataset.heldout.labels, dataset.class_names)
    top5 = f", top-5 {evaluation['top5']:.2%}" if "top5" in evaluation else ""
    echo(f"  {dataset.heldout_name} top-1 ({what}): {evaluation['top1']:.2%}{top5} on {len(dataset.heldout)} images")
    echo(format_evaluation(evaluation))
    return evaluation


def _baseline(config: RunConfig, index: dict, num_classes: int, echo: Echo) -> dict:
    """The same network trained from scratch on the target data alone (every worker trains it)."""
    epochs = _baseline_epochs(config)
    echo(f"baseline: the same network trained from scratch on the target data alone ({epochs} epochs):")
    _, baseline = train_from_scratch(
        config,
        index,
        num_classes,
        epochs=epochs,
        batch_size=config.train.batch_size,
        controls=Controls(learning_rate=config.pretrain.learning_rate)
        if config.pretrain
        else Controls.from_config(config.train),
        label="scratch",
        echo=echo,
        augment=config.pretrain.augment if config.pretrain else config.train.augment,
    )
    echo(f"  from-scratch {baseline['heldout_split']} top-1: {baseline['top1']:.2%}")
    return baseline


def _write(run: RunDir, model, summary: dict, history_title: str, confusion_title: str) -> None:
    with atomic_path(run.model, suffix=".keras") as tmp:
        model.save(tmp)
    run.model_onnx.unlink(missing_ok=True)  # what an earlier run on a foreign backbone left here
    _write_records(run, summary, history_title, confusion_title)


def _write_records(run: RunDir, summary: dict, history_title: str, confusion_title: str) -> None:
    """training.json, the history (CSV and plot) and the confusion matrix."""
    from edgepipe.report.plots import confusion_plot, history_plot

    write_text(run.history_csv, history_csv(summary["history"]))
    if not history_plot(summary["history"], run.history_png, history_title):
        run.history_png.unlink(missing_ok=True)
    confusion_plot(summary["evaluation"], run.confusion_png, confusion_title)
    write_json(run.training, summary)


STAGE = Stage(
    "train",
    "Transfer-learn to the target data and evaluate on the held-out split.",
    _inputs,
    _outputs,
    _run,
    requires=("build",),
    distributed=True,
)
