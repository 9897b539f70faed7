"""Datasets: an index of which image goes to which split, and the decoded arrays.

``make_index`` scans a source (an image folder or a built-in set), splits it
(stratified by class, seeded), rejects unreadable files, and returns a
JSON-serialisable index. The build stage writes that index to the run
directory; every later stage calls ``materialize`` on it, so all stages see
exactly the same images in the same splits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgepipe.config import DataConfig
from edgepipe.data import builtin, folders, tfds_source
from edgepipe.errors import DataError

SPLITS = ("train", "val", "test")


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


def _select_classes(names: list[str], wanted: Optional[list[str]], source: str) -> list[str]:
    if wanted is None:
        return names
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataError(
            f"class(es) {', '.join(missing)} not found in {source}",
            "Available classes: " + ", ".join(names) + ".",
        )
    if len(set(wanted)) != len(wanted):
        raise DataError("data.classes lists a class twice", "List each class once.")
    return list(wanted)


def _split_items(
    items_by_class: dict[str, list[Any]], config: DataConfig, seed: int, want_val: bool = True, want_test: bool = True
) -> dict[str, list[tuple[Any, str]]]:
    """Stratified, seeded split of each class's items into train/val/test."""
    rng = np.random.default_rng(seed)
    splits: dict[str, list[tuple[Any, str]]] = {s: [] for s in SPLITS}
    for name, items in items_by_class.items():
        order = rng.permutation(len(items))
        n = len(items)
        n_val = int(round(n * config.val_fraction)) if want_val else 0
        n_test = int(round(n * config.test_fraction)) if want_test else 0
        if want_val and config.val_fraction > 0 and n >= 2:
            n_val = max(n_val, 1)
        if n - n_val - n_test < 1:
            raise DataError(
                f"class '{name}' has only {n} image(s), too few to split into train/val/test",
                "Add images or lower data.val_fraction / data.test_fraction.",
            )
        chosen = [items[i] for i in order]
        splits["val"] += [(x, name) for x in chosen[:n_val]]
        splits["test"] += [(x, name) for x in chosen[n_val:n_val + n_test]]
        splits["train"] += [(x, name) for x in chosen[n_val + n_test:]]
    return splits


def _complete_given_splits(splits: dict[str, list[tuple[Any, str]]], class_names: list[str], config: DataConfig,
                           seed: int) -> None:
    """Splits the source defined itself: without a val split, hold part of train out (stratified,
    as for a single folder, and a test split too if there is none); else shuffle train (seeded)."""
    if not splits["val"]:
        by_class = {c: [item for item, name in splits["train"] if name == c] for c in class_names}
        held = _split_items(by_class, config, seed, want_test=not splits["test"])
        splits["train"], splits["val"] = held["train"], held["val"]
        if not splits["test"]:
            splits["test"] = held["test"]
    else:
        rng = np.random.default_rng(seed)
        splits["train"] = [splits["train"][i] for i in rng.permutation(len(splits["train"]))]


def _cap_train(split: list[tuple[Any, str]], max_per_class: Optional[int]) -> list[tuple[Any, str]]:
    if max_per_class is None:
        return split
    kept: Counter = Counter()
    out = []
    for item, name in split:  # already in seeded random order
        if kept[name] < max_per_class:
            out.append((item, name))
            kept[name] += 1
    return out


def make_index(config: DataConfig, seed: int) -> dict[str, Any]:
    """Scan, validate and split the data source; see the module docstring."""
    source = config.path
    rejected: list[dict[str, str]] = []
    image_sizes: Counter = Counter()
    if source.startswith(builtin.BUILTIN_PREFIX):
        images, labels, names = builtin.load_builtin(source)
        image_sizes[f"{images.shape[2]}x{images.shape[1]}"] = len(images)
        class_names = _select_classes(names, config.classes, source)
        by_class = {c: [int(i) for i in np.flatnonzero(labels == names.index(c))] for c in class_names}
        splits = _split_items(by_class, config, seed)
        layout, root = "builtin", source
    elif source.startswith(tfds_source.TFDS_PREFIX):
        described = tfds_source.describe(source)
        names = described["class_names"]
        class_names = _select_classes(names, config.classes, source)
        wanted = {names.index(c): c for c in class_names}
        splits = {s: [] for s in SPLITS}
        for split_name in described["splits"]:
            _, split_labels = tfds_source.load_split(source, split_name)
            splits[split_name] = [([split_name, int(i)], wanted[int(lab)]) for i, lab in enumerate(split_labels)
                                  if int(lab) in wanted]
        _complete_given_splits(splits, class_names, config, seed)
        layout, root = "tfds", source
        image_sizes["varies (TFDS)"] = sum(len(v) for v in splits.values())
    else:
        scan = folders.scan(Path(source), config.on_bad_image)
        rejected, image_sizes, layout = scan.rejected, scan.image_sizes, scan.layout
        root = str(Path(source).resolve())
        if scan.layout == "splits":
            class_names = _select_classes(scan.class_names, config.classes, source)
            splits = {s: [(f, c) for c in class_names for f in scan.files[s].get(c, [])] for s in SPLITS}
            _complete_given_splits(splits, class_names, config, seed)
        else:
            class_names = _select_classes(scan.class_names, config.classes, source)
            splits = _split_items({c: scan.files["all"][c] for c in class_names}, config, seed)
    if len(class_names) < 2:
        raise DataError(
            f"{source} has {len(class_names)} class(es); a classifier needs at least two",
            "Put each class's images in its own subfolder.",
        )
    splits["train"] = _cap_train(splits["train"], config.max_per_class)
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
        "source": root,
        "layout": layout,
        "class_names": class_names,
        "splits": {s: [[item, index_of[name]] for item, name in splits[s]] for s in SPLITS},
        "rejected": rejected,
    }
    index["summary"] = summarize(index, image_sizes)
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
    splits: dict[str, Split] = {}
    if index["layout"] == "builtin":
        images, _, _ = builtin.load_builtin(index["source"])
        for split_name, entries in index["splits"].items():
            chosen = images[[item for item, _ in entries]] if entries else images[:0]
            splits[split_name] = Split(folders.resize_batch(chosen, size, channels), _labels(entries))
    elif index["layout"] == "tfds":
        for split_name, entries in index["splits"].items():
            chosen = [tfds_source.load_split(index["source"], part)[0][i] for (part, i), _ in entries]
            splits[split_name] = (Split(folders.resize_batch(chosen, size, channels), _labels(entries)) if chosen
                                  else Split(np.zeros((0, size, size, channels), np.uint8), _labels(entries)))
    else:
        root = Path(index["source"])
        for split_name, entries in index["splits"].items():
            decoded = [folders.decode(root / item, size, channels) for item, _ in entries]
            array = np.stack(decoded) if decoded else np.zeros((0, size, size, channels), np.uint8)
            splits[split_name] = Split(array, _labels(entries))
    return Dataset(list(index["class_names"]), splits, index.get("summary", {}))


def _labels(entries: list[list[Any]]) -> np.ndarray:
    return np.asarray([label for _, label in entries], dtype=np.int64)
