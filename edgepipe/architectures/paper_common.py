"""Helpers shared by the networks built here from their papers."""

from __future__ import annotations

from typing import Optional


def load_weights_file(model, weights: Optional[str]):
    """Load a weights file (``.weights.h5`` or Keras 2 ``.h5``) into a paper-built model; ``None`` keeps random weights."""
    if weights is None:
        return model
    if weights == "imagenet":
        raise ValueError(f"{model.name} has no ImageNet weights")  # refused earlier by check_weights_request
    model.load_weights(weights)
    return model
