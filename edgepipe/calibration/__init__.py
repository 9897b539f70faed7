"""One representative set for every INT8 calibrator.

The set is drawn from the training split (stratified by class, seeded) and
is a plain sequence of ``{input_name: batch}`` mappings; each backend's
calibrator is a thin adapter over it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass
class CalibrationSet:
    images: np.ndarray  # uint8 raw pixels (N, H, W, C)
    labels: np.ndarray
    seed: int

    @property
    def digest(self) -> str:
        """SHA-256 of the pixels and labels: identifies the set across backends and runs."""
        h = hashlib.sha256()
        h.update(str(self.images.shape).encode())
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, input_name: str, batch_size: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """The set as ``{input_name: float32 batch}`` mappings, in a fixed order."""
        for start in range(0, len(self.images), batch_size):
            yield {input_name: self.images[start : start + batch_size].astype(np.float32)}

    def describe(self) -> dict:
        return {
            "images": len(self),
            "seed": self.seed,
            "sha256": self.digest,
            "per_class": np.bincount(self.labels).tolist(),
        }


def draw(images: np.ndarray, labels: np.ndarray, size: int, seed: int) -> CalibrationSet:
    """At most ``size`` images, stratified by class (round-robin over shuffled classes), seeded."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)).tolist() for c in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < min(size, len(labels)):
        for queue in per_class:
            if queue and len(chosen) < size:
                chosen.append(queue.pop())
    order = np.asarray(sorted(chosen), dtype=np.int64)
    return CalibrationSet(images[order], labels[order], seed)


def tflite_representative_dataset(calibration: CalibrationSet):
    """TFLite converter adapter: a generator function yielding ``[batch]`` lists of one image."""

    def generator():
        for feed in calibration.batches("image", batch_size=1):
            yield [feed["image"]]

    return generator
