"""Datasets: an index of which image goes to which split, and the decoded arrays.

``make_index`` scans a source (an image folder, a built-in set or a TFDS dataset,
see ``sources``), holds the splits the source lacks out of its training images
(stratified by class, seeded), rejects unreadable files, and returns a
JSON-serialisable index. The build stage writes that index to the run directory;
every later stage calls ``materialize`` on it, so all stages see exactly the same
images in the same splits.

The splits have fixed roles. ``val`` is the selection split: every choice is made
on it (early stopping and the learning-rate schedule, the INT8 recipe and its
accuracy budget, export verification). ``test`` is the reporting split: accuracy is
reported on it, and it takes part in no choice; when the data has none, it is held
out of train (``data.test_fraction``). Only when there is no test split at all
(``data.test_fraction: 0``, or classes too small to spare an image) is accuracy
reported on ``val``, and the results say so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepipe.data.sources import source_for
from edgepipe.data.splits import SPLITS, cap_train, complete_given_splits
from edgepipe.errors import DataError

if TYPE_CHECKING:  # the data layer sits below the configuration, which validates its section
    from edgepipe.config import DataConfig

#: what the selection split (val) decides; the reporting split (test) decides nothing
SELECTION_USES = (
    "early stopping and the learning-rate schedule (val_loss)",
    "the INT8 recipe and its accuracy budget",
    "export verification",
)


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

    def roles(self) -> dict[str, dict[str, Any]]:
        """Which split chose and which reported: ``selection`` (val: its images and what it decides) and
        ``reported`` (the held-out split: its images, whether it was held out of train here, and
        whether it took part in the choices, with the reason when it did)."""
        carved = self.summary.get("carved", {})

        def describe(name: str) -> dict[str, Any]:
            out: dict[str, Any] = {"split": name, "images": len(self.splits[name]), "carved": name in carved}
            if name in carved:
                out.update(carved_from=carved[name]["from"], fraction=carved[name]["fraction"])
            return out

        reported = {**describe(self.heldout_name), "took_part_in_choices": self.heldout_name == "val"}
        if reported["took_part_in_choices"]:
            reported["note"] = self.summary.get("no_test_split") or "the data has no test split"
        return {"selection": {**describe("val"), "used_for": list(SELECTION_USES)}, "reported": reported}


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
    carved = complete_given_splits(splits, class_names, config, seed)
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
    index["summary"]["carved"] = carved
    if not splits["test"]:
        index["summary"]["no_test_split"] = (
            "data.test_fraction is 0 and the data has no test split"
            if config.test_fraction == 0
            else "no class has an image to spare for a test split (each keeps one training image, and one validation "
            "image when val is held out of train too)"
        )
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
    lines.append("  " + held_out_line(summary))
    for bad in summary["rejected"]:
        lines.append(f"  rejected {bad['file']}: {bad['reason']}")
    return "\n".join(lines)


def held_out_line(summary: dict[str, Any]) -> str:
    """Which split accuracy will be reported on, and where it came from (one line)."""
    counts, carved = summary["images_per_split"], summary.get("carved", {})
    if not counts["test"]:
        return (
            f"no test split ({summary.get('no_test_split', 'none given')}): accuracy will be reported on val, "
            "the split that also makes the choices"
        )
    test = carved.get("test")
    origin = (
        f"held out of train ({test['fraction']:g} of each class, seed {test['seed']})"
        if test
        else "as the data gives it"
    )
    missing = [name for name, per in summary["images_per_class"].items() if not per["test"]]
    return (
        f"test split: {counts['test']} images, {origin}; accuracy is reported on it, choices are made on val "
        f"({counts['val']} images)" + (f"; classes without a test image: {', '.join(missing)}" if missing else "")
    )


def materialize(index: dict[str, Any], size: int, channels: int) -> Dataset:
    """Decode every indexed image to uint8 (N, size, size, channels)."""
    decoded = source_for(index["source"]).materialize(index, size, channels)
    splits = {name: Split(images, labels(index["splits"][name])) for name, images in decoded.items()}
    return Dataset(list(index["class_names"]), splits, index.get("summary", {}))


def labels(entries: list[list[Any]]) -> np.ndarray:
    return np.asarray([label for _, label in entries], dtype=np.int64)
