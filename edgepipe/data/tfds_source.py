"""TensorFlow Datasets as a data source: ``data.path: tfds:NAME`` (``tfds:NAME/CONFIG`` works too).

The dataset is read from TFDS' data directory (``$TFDS_DATA_DIR``, default
``~/tensorflow_datasets``) and prepared there (downloaded) the first time if it
is missing. Its own splits are used: ``train``, ``validation`` as val, ``test``;
a split the dataset lacks (validation, test) is held out of train, as for a folder.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from edgepipe.data.folders import resize_batch
from edgepipe.data.sources import Scan, Source, register_source
from edgepipe.data.splits import SPLITS, select_classes
from edgepipe.errors import DataError, first_line

TFDS_PREFIX = "tfds:"
SPLIT_NAMES = {"train": "train", "validation": "val", "test": "test"}


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            "data.path 'tfds:...' needs the tensorflow-datasets package",
            "pip install tensorflow-datasets (or edgepipe[tfds]), or use an image folder.",
        ) from None
    return tfds


def builder(spec: str):
    """The prepared TFDS builder for ``tfds:NAME``; prepares (downloads) it once if needed."""
    tfds = _tfds()
    name = spec[len(TFDS_PREFIX) :]
    try:
        b = tfds.builder(name, data_dir=os.environ.get("TFDS_DATA_DIR") or None)
    except Exception as exc:  # DatasetNotFoundError and friends
        if type(exc).__name__ == "DatasetNotFoundError":
            raise DataError(
                f"TensorFlow Datasets has no dataset '{name}'",
                "Check the name in the TFDS catalogue (e.g. tfds:tf_flowers).",
            ) from None
        raise DataError(f"could not open TFDS dataset '{name}': {first_line(exc, 160)}") from None
    if not b.is_prepared():
        try:
            b.download_and_prepare()
        except Exception as exc:
            raise DataError(
                f"TFDS dataset '{name}' is not in {b.data_dir} and could not be downloaded ({first_line(exc, 120)})",
                "Prepare it once on a machine with network access and copy it, or set TFDS_DATA_DIR to where it is.",
            ) from None
    keys = b.info.supervised_keys
    if not keys or "label" not in b.info.features or not hasattr(b.info.features[keys[1]], "names"):
        raise DataError(
            f"TFDS dataset '{name}' is not an (image, class label) dataset",
            "Use an image classification dataset such as tf_flowers or cats_vs_dogs.",
        )
    return b


def describe(spec: str) -> dict[str, Any]:
    """Class names and the number of examples of each of the dataset's splits we use."""
    b = builder(spec)
    splits = {
        ours: b.info.splits[theirs].num_examples for theirs, ours in SPLIT_NAMES.items() if theirs in b.info.splits
    }
    if "train" not in splits:
        raise DataError(f"TFDS dataset '{spec}' has no train split", "Use a dataset with a train split.")
    return {"class_names": list(b.info.features[b.info.supervised_keys[1]].names), "splits": splits}


@functools.lru_cache(maxsize=4)
def load_split(spec: str, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Every (image, label) of one of our splits (train/val/test), in TFDS order."""
    tfds = _tfds()
    b = builder(spec)
    theirs = {v: k for k, v in SPLIT_NAMES.items()}[split]
    images, labels = [], []
    for image, label in tfds.as_numpy(b.as_dataset(split=theirs, as_supervised=True)):
        images.append(image if image.ndim == 3 else image[..., None])
        labels.append(int(label))
    return images, np.asarray(labels, dtype=np.int64)


def check(spec: str, key: str = "data.path") -> None:
    if len(spec) == len(TFDS_PREFIX):
        raise DataError(f"data path '{spec}' names no dataset ({key})", "Write tfds:NAME, e.g. tfds:tf_flowers.")


def scan(config, seed: int) -> Scan:
    source = config.path
    described = describe(source)
    names = described["class_names"]
    class_names = select_classes(names, config.classes, source)
    wanted = {names.index(c): c for c in class_names}
    splits: dict = {s: [] for s in SPLITS}
    for split_name in described["splits"]:
        _, split_labels = load_split(source, split_name)
        splits[split_name] = [
            ([split_name, int(i)], wanted[int(lab)]) for i, lab in enumerate(split_labels) if int(lab) in wanted
        ]
    return Scan(
        class_names, splits, "tfds", source, image_sizes={"varies (TFDS)": sum(len(v) for v in splits.values())}
    )


def materialize(index: dict, size: int, channels: int) -> dict[str, np.ndarray]:
    out = {}
    for split_name, entries in index["splits"].items():
        chosen = [load_split(index["source"], part)[0][i] for (part, i), _ in entries]
        out[split_name] = (
            resize_batch(chosen, size, channels) if chosen else np.zeros((0, size, size, channels), np.uint8)
        )
    return out


register_source(Source("tfds", "a TensorFlow Datasets image-classification set", check, scan, materialize))
