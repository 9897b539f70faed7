"""Measurement above the backends: latency, accuracy and agreement through the Runner interface only."""

from edgepipe.harness.latency import (
    BenchSettings,
    accuracy,
    agreement,
    efficiency,
    latency_stats,
    measure_latency,
    predict,
)

__all__ = ["BenchSettings", "accuracy", "agreement", "efficiency", "latency_stats", "measure_latency", "predict"]
