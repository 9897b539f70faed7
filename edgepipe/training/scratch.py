"""Training a network from scratch: the pretraining of the build stage and the train stage's baseline."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from edgepipe.architectures import build_classifier
from edgepipe.architectures.classifier import resolve_architecture, set_batchnorm_momentum
from edgepipe.data import materialize
from edgepipe.training.controls import Controls, predict_arrays
from edgepipe.training.strategies import fit

if TYPE_CHECKING:
    from edgepipe.config import RunConfig

#: momentum for batch normalization when a network is trained from scratch (see set_batchnorm_momentum)
SCRATCH_BN_MOMENTUM = 0.9


def train_from_scratch(
    config: RunConfig,
    data_index: dict,
    num_classes: int,
    *,
    epochs: int,
    batch_size: int,
    controls: Controls,
    label: str,
    echo: Callable[[str], None],
    augment=None,
):
    """Build the configured network with random weights and train every layer; returns (model, summary).

    Under a tf.distribute strategy, call it inside the strategy's scope: the network is built there.
    """
    m = config.model
    dataset = materialize(data_index, m.input_size, m.channels)
    model = build_classifier(
        resolve_architecture(m, config.unsafe_load),
        num_classes,
        m.input_size,
        m.channels,
        m.alpha,
        "none",
        m.dropout,
        config.seed,
    )
    set_batchnorm_momentum(model, SCRATCH_BN_MOMENTUM)
    history = fit(
        model,
        dataset.train,
        dataset.splits["val"],
        epochs=epochs,
        batch_size=batch_size,
        controls=controls,
        seed=config.seed,
        label=label,
        echo=echo,
        augment=augment,
    )
    top1 = evaluate_top1(model, dataset.heldout)
    return model, {
        "epochs": epochs,
        "heldout_split": dataset.heldout_name,
        "heldout_images": len(dataset.heldout),
        "top1": top1,
        "history": history,
        "batchnorm_momentum": SCRATCH_BN_MOMENTUM,
    }


def evaluate_top1(model, split) -> float:
    import numpy as np

    probabilities = predict_arrays(model, split.images.astype(np.float32))
    return float(np.mean(np.argmax(probabilities, axis=1) == split.labels))
