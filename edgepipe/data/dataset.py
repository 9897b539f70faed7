"""Datasets: an index of which image goes to which split, and the decoded arrays.

``make_index`` scans a source (an image folder, a built-in set or a TFDS dataset,
see ``sources``), splits it (stratified by class, seeded), rejects unreadable
files, and returns a JSON-serialisable index. The build stage writes that index to the run
directory; every later stage calls ``materialize`` on it, so all stages see
exactly the same images in the same splits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgepipe.config import DataConfig
from edgepipe.data.sources import source_for
from edgepipe.data.splits import SPLITS, cap_train
from edgepipe.errors import DataError


@dataclass
class Split:
    images: np.ndarray  # uint8, (N, H, W, C), raw pixels
    labels: np.ndarray  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    class_names: list[str]
    splits: dict[str, Split]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def heldout_name(self) -> str:
        """The split accuracy is reported on: test if there is one, else val."""
        return "test" if len(self.splits.get("test", ())) else "val"

    @property
    def heldout(self) -> Split:
        return self.splits[self.heldout_name]


def make_index(config: DataConfig, seed: int) -> dict[str, Any]:
    """Scan, validate and split the data source; see the module docstring."""
    source = config.path
    scan = source_for(source).scan(config, seed)
    class_names, splits = scan.class_names, scan.splits
    if len(class_names) < 2:
        raise DataError(
            f"{source} has {len(class_names)} class(es); a classifier needs at least two",
            "Put each class's images in its own subfolder.",
        )
    splits["train"] = cap_train(splits["train"], config.max_per_class)
    for split_name in ("train", "val"):
        if split_name == "val" and not splits["val"] and config.val_fraction == 0:
            continue  # no validation asked for (e.g. benchmarking on a whole folder)
        present = {name for _, name in splits[split_name]}
        empty = [c for c in class_names if c not in present]
        if empty:
            raise DataError(
                f"class(es) {', '.join(empty)} have no images in the {split_name} split of {source}",
                "Add images for them, or leave them out with data.classes.",
            )
    index_of = {c: i for i, c in enumerate(class_names)}
    index = {
        "source": scan.root,
        "layout": scan.layout,
        "class_names": class_names,
        "splits": {s: [[item, index_of[name]] for item, name in splits[s]] for s in SPLITS},
        "rejected": scan.rejected,
        **scan.extra,
    }
    index["summary"] = summarize(index, Counter(scan.image_sizes))
    return index


def summarize(index: dict[str, Any], image_sizes: Counter) -> dict[str, Any]:
    names = index["class_names"]
    per_class = {name: {s: 0 for s in SPLITS} for name in names}
    for split_name, entries in index["splits"].items():
        for _, label in entries:
            per_class[names[label]][split_name] += 1
    return {
        "source": index["source"],
        "layout": index["layout"],
        "num_classes": len(names),
        "images_per_split": {s: len(index["splits"][s]) for s in SPLITS},
        "images_per_class": per_class,
        "image_sizes_seen": dict(image_sizes.most_common()),
        "rejected": index["rejected"],
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The dataset summary as plain text lines (printed before training)."""
    counts = summary["images_per_split"]
    lines = [
        f"dataset {summary['source']} ({summary['layout']}): {summary['num_classes']} classes, "
        + ", ".join(f"{s} {counts[s]}" for s in SPLITS if counts[s]),
    ]
    width = max(len(c) for c in summary["images_per_class"])
    for name, per in summary["images_per_class"].items():
        lines.append(f"  {name:<{width}}  " + "  ".join(f"{s} {per[s]:>5}" for s in SPLITS if counts[s]))
    sizes = summary["image_sizes_seen"]
    shown = ", ".join(f"{k} ({v})" for k, v in list(sizes.items())[:5])
    lines.append(f"  image sizes seen (w x h): {shown}{' ...' if len(sizes) > 5 else ''}")
    for bad in summary["rejected"]:
        lines.append(f"  rejected {bad['file']}: {bad['reason']}")
    return "\n".join(lines)


def materialize(index: dict[str, Any], size: int, channels: int) -> Dataset:
    """Decode every indexed image to uint8 (N, size, size, channels)."""
    decoded = source_for(index["source"]).materialize(index, size, channels)
    splits = {name: Split(images, labels(index["splits"][name])) for name, images in decoded.items()}
    return Dataset(list(index["class_names"]), splits, index.get("summary", {}))


def labels(entries: list[list[Any]]) -> np.ndarray:
    return np.asarray([label for _, label in entries], dtype=np.int64)
