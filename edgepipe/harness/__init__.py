"""Measurement above the backends: latency, accuracy and agreement through the Runner interface only."""

from edgepipe.harness.latency import (
    BenchSettings,
    accuracy,
    agreement,
    batches_of,
    efficiency,
    latency_stats,
    predict,
)
from edgepipe.harness.rounds import Timing, measure_interleaved

__all__ = [
    "BenchSettings",
    "Timing",
    "accuracy",
    "agreement",
    "batches_of",
    "efficiency",
    "latency_stats",
    "measure_interleaved",
    "predict",
]
