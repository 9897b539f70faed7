"""Verify an artifact against the Keras model it came from, on the same real images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.benchmark import agreement, predict
from edgepipe.exporters.base import Exporter
from edgepipe.runtimes import create_runner


def verify(exporter: Exporter, path: Path, images: np.ndarray, reference: np.ndarray, threads: int) -> dict[str, Any]:
    """Agreement and probability differences against ``reference`` (the Keras model's outputs on ``images``),
    judged by the tolerance of the exporter's precision."""
    with create_runner(path, threads=threads) as runner:
        outputs = predict(runner, images)
    figures = agreement(outputs, reference)
    problems = exporter.tolerance.check(figures)
    return {"images": len(images), **figures, "tolerance": exporter.tolerance.as_dict(), "passed": not problems,
            "problems": problems}
