"""A new head trained on a backbone edgepipe did not build (an ONNX file): feature extraction only.

The backbone runs once per image in its own engine (``features``: raw-pixel images -> (N, width) float32); the
features go to edgepipe's feature cache as a Keras backbone's do, and the head (dropout and a softmax dense
layer, the same as on a Keras backbone) is trained on them with the same controls (optimizer, schedule, class
weights, early stopping...). Its weights are joined to the backbone's graph afterwards by the backend that read it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.architectures.classifier import CLASSIFIER, DROPOUT
from edgepipe.training.controls import is_chief
from edgepipe.training.strategies import cached_features, feature_cache_location, fit_head_on_features

#: what the head learns on a foreign backbone; any other strategy would change the backbone's weights
STRATEGY = "feature-extraction"


def head_on_features(width: int, classes: int, dropout: float, seed: int):
    """The head a Keras backbone gets, on features of ``width``: dropout, then a softmax dense layer."""
    import keras

    keras.utils.set_random_seed(seed)
    features = keras.Input((width,), name="features")
    x = keras.layers.Dropout(dropout, name=DROPOUT)(features)
    return keras.Model(features, keras.layers.Dense(classes, activation="softmax", name=CLASSIFIER)(x), name="head")


def head_weights(head) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (width, classes), bias (classes,)) of the head's dense layer (dropout is the identity when run)."""
    kernel, bias = head.get_layer(CLASSIFIER).get_weights()
    return np.asarray(kernel, np.float32), np.asarray(bias, np.float32)


def train_head(
    features: Callable[[np.ndarray], np.ndarray],
    backbone: dict[str, Any],
    dataset,
    train_config,
    dropout: float,
    seed: int,
    echo: Callable[[str], None],
    cache_dir: Path | None = None,
) -> tuple[Any, dict[str, Any], np.ndarray]:
    """(the trained Keras head, what training.json records, the val features) for a head on a foreign
    backbone's ``features``. ``backbone`` is what identifies it (the file's sha256, the preprocessing, the input
    size, the feature width): the disk cache's files are named by its digest and the images', so a changed file,
    preprocessing or size computes the features again and anything else (another learning rate, more epochs)
    reuses them."""
    width = int(backbone["features"])
    count = len(dataset.train) + len(dataset.splits["val"])
    where = feature_cache_location(train_config.feature_cache, width, count)
    if where == "disk" and cache_dir is not None and is_chief():
        digest = hashlib.sha256(json.dumps(backbone, sort_keys=True, default=str).encode())
        train_features, val_features, note = cached_features(digest, dataset, cache_dir, width, features)
    else:  # the chief alone writes the run directory: other workers keep their (identical) features in memory
        where, note = "memory", "computed"
        train_features = features(dataset.train.images)
        val_features = features(dataset.splits["val"].images)
    echo(
        f"  backbone features by ONNX Runtime, cached in {where} ({note}): {width} per image, "
        f"{len(train_features)} train + {len(val_features)} val images"
    )
    head = head_on_features(width, dataset.num_classes, dropout, seed)
    outcome = fit_head_on_features(head, train_features, val_features, dataset, train_config, seed, echo) | {
        "feature_cache": {"location": where, "note": note}
    }
    return head, outcome, np.asarray(val_features)
