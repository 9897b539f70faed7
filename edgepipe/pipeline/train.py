"""Stage 2: transfer learning to the target data, evaluation on the held-out split."""

from __future__ import annotations

import csv
import dataclasses
import io

from edgepipe.config import RunConfig
from edgepipe.data import materialize
from edgepipe.fileio import atomic_path, read_json, write_json, write_text
from edgepipe.pipeline.build import evaluate_top1, train_from_scratch
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
    return [run.model, run.training, run.history_csv]


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

    m = config.model
    index = read_json(run.dataset_index)
    dataset = materialize(index, m.input_size, m.channels)
    model = keras.models.load_model(run.model_initial, compile=False, safe_mode=not config.model.unsafe_load)
    strategy = STRATEGIES.get(config.train.strategy)
    echo(f"training with strategy '{strategy.name}': {strategy.description}")
    outcome = strategy.fn(model, dataset, config.train, config.seed, echo)
    top1 = evaluate_top1(model, dataset.heldout)
    echo(f"  {dataset.heldout_name} top-1 (Keras FP32): {top1:.2%} on {len(dataset.heldout)} images")
    summary = {
        "strategy": strategy.name,
        "heldout_split": dataset.heldout_name,
        "heldout_images": len(dataset.heldout),
        "top1": top1,
        "train_images": len(dataset.train),
        **outcome,
    }
    if config.train.baseline_from_scratch:
        epochs = _baseline_epochs(config)
        echo(f"baseline: the same network trained from scratch on the target data alone ({epochs} epochs):")
        _, baseline = train_from_scratch(
            config, index, dataset.num_classes, epochs=epochs, batch_size=config.train.batch_size,
            learning_rate=config.pretrain.learning_rate if config.pretrain else config.train.learning_rate,
            label="scratch", echo=echo, augment=config.pretrain.augment if config.pretrain else config.train.augment)
        echo(f"  from-scratch {baseline['heldout_split']} top-1: {baseline['top1']:.2%}")
        summary["baseline_from_scratch"] = baseline
    with atomic_path(run.model, suffix=".keras") as tmp:
        model.save(tmp)
    write_text(run.history_csv, history_csv(outcome["history"]))
    write_json(run.training, summary)


STAGE = Stage("train", "Transfer-learn to the target data and evaluate on the held-out split.",
              _inputs, _outputs, _run, requires=("build",))
