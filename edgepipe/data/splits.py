"""Seeded, stratified splitting shared by every data source."""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

import numpy as np

from edgepipe.errors import DataError

SPLITS = ("train", "val", "test")


def select_classes(names: list[str], wanted: Optional[list[str]], source: str) -> list[str]:
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


def split_items(items_by_class: dict[str, list[Any]], config, seed: int, want_val: bool = True,
                want_test: bool = True) -> dict[str, list[tuple[Any, str]]]:
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


def complete_given_splits(splits: dict[str, list[tuple[Any, str]]], class_names: list[str], config, seed: int) -> None:
    """Splits the source defined itself: without a val split, hold part of train out (stratified,
    as for a single folder, and a test split too if there is none); else shuffle train (seeded)."""
    if not splits["val"]:
        by_class = {c: [item for item, name in splits["train"] if name == c] for c in class_names}
        held = split_items(by_class, config, seed, want_test=not splits["test"])
        splits["train"], splits["val"] = held["train"], held["val"]
        if not splits["test"]:
            splits["test"] = held["test"]
    else:
        rng = np.random.default_rng(seed)
        splits["train"] = [splits["train"][i] for i in rng.permutation(len(splits["train"]))]


def cap_train(split: list[tuple[Any, str]], max_per_class: Optional[int]) -> list[tuple[Any, str]]:
    if max_per_class is None:
        return split
    kept: Counter = Counter()
    out = []
    for item, name in split:  # already in seeded random order
        if kept[name] < max_per_class:
            out.append((item, name))
            kept[name] += 1
    return out
