"""The ``classifier`` strategy's network: a pretrained model with its original head, no new layers.

Its class names come from ``model.labels`` (a text file, one name per line, in
the network's output order) or, for Keras Applications with ImageNet weights,
from Keras' ImageNet class index (downloaded once into the Keras cache, as
``decode_predictions`` does). The user's folders are named after classes the
network already knows; their images are scored against all of its outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import ConfigError, DataError, EdgepipeError, first_line

IMAGENET_CLASS_INDEX_URL = "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"
IMAGENET_CLASS_INDEX_MD5 = "c2c37ea517e94d9795004a39431a14cb"


def imagenet_class_index() -> list[tuple[str, str]]:
    """(WordNet id, name) for the 1000 ImageNet classes, through Keras' cache."""
    import keras

    try:
        path = keras.utils.get_file(
            "imagenet_class_index.json",
            IMAGENET_CLASS_INDEX_URL,
            cache_subdir="models",
            file_hash=IMAGENET_CLASS_INDEX_MD5,
        )
    except Exception as exc:  # Keras raises plain Exceptions for download failures
        raise EdgepipeError(
            f"the ImageNet class index is not in the Keras cache and could not be downloaded ({first_line(exc, 100)})",
            "Connect once, copy imagenet_class_index.json into $KERAS_HOME/models, or pass model.labels.",
        ) from None
    index = json.loads(Path(path).read_text(encoding="utf-8"))
    return [tuple(index[str(i)]) for i in range(len(index))]


def read_labels_file(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"labels file '{path}' does not exist (model.labels)",
            "Pass a text file with one class name per line, in the network's output order.",
        )
    names = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) < 2:
        raise ConfigError(f"labels file '{path}' lists {len(names)} class name(s)", "List one class name per line.")
    return names


def network_labels(model_config, arch) -> tuple[list[str], dict[str, int]]:
    """(names in output order, extra spellings -> index) of the network's classes."""
    if model_config.labels:
        names = read_labels_file(model_config.labels)
        return names, {}
    if model_config.path or model_config.weights != "imagenet":
        raise ConfigError(
            "the classifier strategy needs the names of the network's classes",
            "Pass model.labels (a text file, one class name per line in output order), or use weights: imagenet.",
        )
    pairs = imagenet_class_index()
    return [name for _, name in pairs], {wnid: i for i, (wnid, _) in enumerate(pairs)}


def remap_index(index: dict[str, Any], names: list[str], aliases: dict[str, int]) -> dict[str, Any]:
    """The dataset index with class indices of the network's outputs (folders named after its classes)."""
    lookup = {**{n: i for i, n in reversed(list(enumerate(names)))}, **aliases}
    missing = [c for c in index["class_names"] if c not in lookup]
    if missing:
        shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
        raise DataError(
            f"class folder(s) {', '.join(missing[:5])} are not among the network's {len(names)} classes",
            f"Name folders after the network's classes (e.g. {shown}), or train a new head with another strategy.",
        )
    target = [lookup[c] for c in index["class_names"]]
    remapped = dict(index)
    remapped["dataset_class_names"] = index["class_names"]
    remapped["class_names"] = list(names)
    remapped["splits"] = {
        s: [[item, target[label]] for item, label in entries] for s, entries in index["splits"].items()
    }
    return remapped


def build_original(
    arch, input_size: int, channels: int, alpha: float | None, weights: str, num_classes: int, seed: int = 0
):
    """``image -> preprocess -> network (with its own classifier)``; a Softmax is appended
    when the network's outputs are not probabilities."""
    import keras

    from edgepipe.architectures.classifier import (
        _keras_weights_arg,
        check_weights_request,
        preprocessing_layer,
        resolve_alpha,
    )

    alpha = resolve_alpha(arch, alpha)
    user = arch.family == "user model"
    if not user:
        check_weights_request(arch, weights, input_size, channels, alpha)
        if weights == "imagenet" and input_size != arch.default_input_size:
            raise ConfigError(
                f"'{arch.name}' with its ImageNet classifier takes {arch.default_input_size}x{arch.default_input_size} input",
                f"Set model.input_size / --input-size to {arch.default_input_size}.",
            )
    keras.utils.set_random_seed(seed)
    network = arch.build(
        (input_size, input_size, channels),
        alpha=alpha,
        weights=None if user else _keras_weights_arg(weights),
        include_top=True,
        classes=num_classes,
    )
    inputs = keras.Input((input_size, input_size, channels), name="image")
    x = preprocessing_layer(arch.preprocessing, channels)(inputs)
    outputs = network(x)
    if isinstance(outputs, dict):
        outputs = next(iter(outputs.values()))
    if int(outputs.shape[-1]) != num_classes:
        raise DataError(
            f"the network has {int(outputs.shape[-1])} outputs but its labels list {num_classes} classes",
            "Pass the labels file that belongs to this model (model.labels).",
        )
    model = keras.Model(inputs, outputs, name=f"{_safe(arch.name)}_original")
    probe = np.asarray(model.predict(np.full((2, input_size, input_size, channels), 127, np.float32), verbose=0))
    softmax_added = not (np.all(probe >= -1e-6) and np.allclose(probe.sum(axis=1), 1.0, atol=1e-3))
    if softmax_added:
        model = keras.Model(inputs, keras.layers.Softmax(name="probabilities")(outputs), name=model.name)
    return model, softmax_added


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)
