"""Stage 2: transfer learning to the target data, evaluation on the held-out split."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io

import numpy as np

from edgepipe.config import RunConfig
from edgepipe.data import materialize
from edgepipe.evaluation import evaluate, format_evaluation
from edgepipe.fileio import atomic_path, read_json, write_json, write_text
from edgepipe.pipeline.build import train_from_scratch
from edgepipe.pipeline.controls import Controls, distribution
from edgepipe.pipeline.rundir import RunDir
from edgepipe.pipeline.stage import Echo, Stage, file_digest
from edgepipe.pipeline.strategies import STRATEGIES


def _inputs(config: RunConfig, run: RunDir) -> dict:
    return {
        "seed": config.seed,
        "train": dataclasses.asdict(config.train),
        "baseline_epochs": _baseline_epochs(config),
        "model_initial": file_digest(run.model_initial),
        "dataset": file_digest(run.dataset_index),
    }


def _outputs(run: RunDir) -> list:
    return [run.model, run.training, run.history_csv, run.history_png, run.confusion_png]


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
    import keras

    from edgepipe.report.plots import confusion_plot, history_plot

    m = config.model
    index = read_json(run.dataset_index)
    dataset = materialize(index, m.input_size, m.channels)
    strategy = STRATEGIES.get(config.train.strategy)
    echo(f"training with strategy '{strategy.name}': {strategy.description}")
    where, dist = distribution()
    if dist is not None:
        echo(f"  {dist.num_replicas_in_sync} replicas: tf.distribute {type(dist).__name__}")
    with dist.scope() if dist is not None else contextlib.nullcontext():
        model = keras.models.load_model(run.model_initial, compile=False, safe_mode=not config.unsafe_load)
        outcome = strategy.fn(model, dataset, config.train, config.seed, echo, cache_dir=run.path / "cache")
    probabilities = np.asarray(model.predict(dataset.heldout.images.astype(np.float32), batch_size=64, verbose=0))
    evaluation = evaluate(probabilities, dataset.heldout.labels, dataset.class_names)
    top5 = f", top-5 {evaluation['top5']:.2%}" if "top5" in evaluation else ""
    echo(f"  {dataset.heldout_name} top-1 (Keras FP32): {evaluation['top1']:.2%}{top5} on {len(dataset.heldout)} images")
    echo(format_evaluation(evaluation))
    summary = {
        "strategy": strategy.name,
        "distribution": where,
        "heldout_split": dataset.heldout_name,
        "heldout_images": len(dataset.heldout),
        "top1": evaluation["top1"],
        "top5": evaluation.get("top5"),
        "train_images": len(dataset.train),
        **outcome,
        "evaluation": evaluation,
    }
    if config.train.baseline_from_scratch:
        epochs = _baseline_epochs(config)
        echo(f"baseline: the same network trained from scratch on the target data alone ({epochs} epochs):")
        _, baseline = train_from_scratch(
            config, index, dataset.num_classes, epochs=epochs, batch_size=config.train.batch_size,
            controls=Controls(learning_rate=config.pretrain.learning_rate) if config.pretrain
            else Controls.from_config(config.train),
            label="scratch", echo=echo, augment=config.pretrain.augment if config.pretrain else config.train.augment)
        echo(f"  from-scratch {baseline['heldout_split']} top-1: {baseline['top1']:.2%}")
        summary["baseline_from_scratch"] = baseline
    with atomic_path(run.model, suffix=".keras") as tmp:
        model.save(tmp)
    write_text(run.history_csv, history_csv(outcome["history"]))
    if not history_plot(outcome["history"], run.history_png, f"{strategy.name}: training history"):
        run.history_png.unlink(missing_ok=True)
    confusion_plot(evaluation, run.confusion_png, f"{dataset.heldout_name} split")
    write_json(run.training, summary)


STAGE = Stage("train", "Transfer-learn to the target data and evaluate on the held-out split.",
              _inputs, _outputs, _run, requires=("build",))
