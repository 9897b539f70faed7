"""Judging artifacts against the Keras model they came from, kept apart from export.

The export stage hands exporters an :class:`ArtifactScorer` (their INT8 recipes are
judged by validation accuracy through it) and verifies every artifact it wrote
with :func:`verify`, on the same real images, by the tolerance of its format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.backends import FORMATS, Artifact, Format, ValidationScore, create_runner
from edgepipe.harness import accuracy, agreement, predict


def run_artifact(path: Path, format_name: str, images: np.ndarray, threads: int) -> np.ndarray:
    """Probabilities of the artifact at ``path`` (of the given format) for ``images``, through its default engine."""
    fmt = FORMATS.get(format_name)
    artifact = Artifact(Path(path), fmt.container, fmt.name, fmt.precision)
    with create_runner(artifact, threads=threads) as runner:
        return predict(runner, images)


class ArtifactScorer:
    """Runs candidate artifacts on the validation split: ``scorer(path, format_name) -> ValidationScore``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, threads: int):
        self.images, self.labels, self.threads = images, labels, threads

    def __call__(self, path: Path, format_name: str) -> ValidationScore:
        probabilities = run_artifact(path, format_name, self.images, self.threads)
        return ValidationScore(probabilities, accuracy(probabilities, self.labels))


def verify(fmt: Format, probabilities: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Agreement and probability differences of an artifact's outputs against ``reference`` (the Keras
    model's outputs on the same images), judged by the tolerance of the format."""
    figures = agreement(probabilities, reference)
    problems = fmt.tolerance.check(figures)
    return {
        "images": len(probabilities),
        **figures,
        "tolerance": fmt.tolerance.as_dict(),
        "passed": not problems,
        "problems": problems,
    }
