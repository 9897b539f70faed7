"""Seeded, stratified splitting shared by every data source."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from edgepipe.errors import DataError

SPLITS = ("train", "val", "test")


def select_classes(names: list[str], wanted: list[str] | None, source: str) -> list[str]:
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


def _share(n: int, fraction: float, wanted: bool) -> int:
    """Images of a class of ``n`` that a held-out split of ``fraction`` takes: at least one whenever the
    fraction is above zero and the class has two images or more."""
    if not wanted or fraction <= 0:
        return 0
    return max(int(round(n * fraction)), 1) if n >= 2 else 0


def split_items(
    items_by_class: dict[str, list[Any]], config, seed: int, want_val: bool = True, want_test: bool = True
) -> dict[str, list[tuple[Any, str]]]:
    """Stratified, seeded split of each class's items into train/val/test.

    Each class gives ``data.val_fraction`` of its items to val and ``data.test_fraction`` to test
    (rounded, at least one each when the fraction is above zero), and always keeps one training
    item: a class with too few items gives up its test items first, then its val items (a class
    of two keeps one for training, one for val and none for test; a class of one keeps it for training).
    """
    rng = np.random.default_rng(seed)
    splits: dict[str, list[tuple[Any, str]]] = {s: [] for s in SPLITS}
    for name, items in items_by_class.items():
        order = rng.permutation(len(items))
        n = len(items)
        n_val = min(_share(n, config.val_fraction, want_val), max(n - 1, 0))
        n_test = min(_share(n, config.test_fraction, want_test), max(n - 1 - n_val, 0))
        chosen = [items[i] for i in order]
        splits["val"] += [(x, name) for x in chosen[:n_val]]
        splits["test"] += [(x, name) for x in chosen[n_val : n_val + n_test]]
        splits["train"] += [(x, name) for x in chosen[n_val + n_test :]]
    return splits


def complete_given_splits(
    splits: dict[str, list[tuple[Any, str]]], class_names: list[str], config, seed: int
) -> dict[str, dict[str, Any]]:
    """Complete the splits a source gave (everything in train when it gave no split) in place.

    Without a val split, part of train is held out as val (``data.val_fraction`` of each class);
    without a test split, part of train is held out as test (``data.test_fraction`` of each class),
    so accuracy is reported on images that took part in no choice. Both are stratified and
    seeded, as :func:`split_items` describes; a split the source gave is kept as it is. Returns,
    for each split held out here, where from and at what fraction.
    """
    carve = {s: not splits[s] for s in ("val", "test")}
    if not any(carve.values()):
        rng = np.random.default_rng(seed)
        splits["train"] = [splits["train"][i] for i in rng.permutation(len(splits["train"]))]
        return {}
    by_class = {c: [item for item, name in splits["train"] if name == c] for c in class_names}
    held = split_items(by_class, config, seed, want_val=carve["val"], want_test=carve["test"])
    splits["train"] = held["train"]
    fractions = {"val": config.val_fraction, "test": config.test_fraction}
    carved = {}
    for split_name, wanted in carve.items():
        if wanted:
            splits[split_name] = held[split_name]
            if held[split_name]:
                carved[split_name] = {"from": "train", "fraction": fractions[split_name], "seed": seed}
    return carved


def cap_train(split: list[tuple[Any, str]], max_per_class: int | None) -> list[tuple[Any, str]]:
    if max_per_class is None:
        return split
    kept: Counter = Counter()
    out = []
    for item, name in split:  # already in seeded random order
        if kept[name] < max_per_class:
            out.append((item, name))
            kept[name] += 1
    return out
