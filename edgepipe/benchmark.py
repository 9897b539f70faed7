"""The latency harness and accuracy evaluation, the same for every runner."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgepipe.runtimes import Runner


@dataclass(frozen=True)
class BenchSettings:
    batch_size: int = 1
    warmup: int = 10
    min_iterations: int = 50
    min_duration_s: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def latency_stats(samples_ms: np.ndarray, batch_size: int) -> dict[str, float]:
    """Summary statistics of per-call latencies in milliseconds."""
    samples_ms = np.asarray(samples_ms, dtype=np.float64)
    return {
        "min": float(samples_ms.min()),
        "mean": float(samples_ms.mean()),
        "std": float(samples_ms.std(ddof=1)) if len(samples_ms) > 1 else 0.0,
        "p50": float(np.percentile(samples_ms, 50)),
        "p90": float(np.percentile(samples_ms, 90)),
        "p95": float(np.percentile(samples_ms, 95)),
        "p99": float(np.percentile(samples_ms, 99)),
        "max": float(samples_ms.max()),
        "iterations": int(len(samples_ms)),
        "images_per_s": float(batch_size * 1e3 / samples_ms.mean()),
    }


def _batches(images: np.ndarray, batch_size: int, count: int = 8) -> list[np.ndarray]:
    """A few distinct real input batches to cycle through (float32, contiguous)."""
    reps = int(np.ceil(batch_size * count / max(len(images), 1)))
    pool = np.concatenate([images] * max(reps, 1))[: batch_size * count]
    return [np.ascontiguousarray(pool[i:i + batch_size], dtype=np.float32) for i in range(0, len(pool), batch_size)]


def measure_latency(runner: Runner, images: np.ndarray, settings: BenchSettings) -> dict[str, Any]:
    """Time ``runner.infer`` on real images: first call, warm-up, then at least
    ``min_iterations`` calls lasting at least ``min_duration_s`` in total.

    Each sample is one end-to-end call (input quantization, engine, output
    dequantization) measured with ``time.perf_counter``, in ms.
    """
    runner.prepare(settings.batch_size)
    batches = _batches(images, settings.batch_size)
    start = time.perf_counter()
    runner.infer(batches[0])
    first_ms = (time.perf_counter() - start) * 1e3
    for i in range(settings.warmup):
        runner.infer(batches[i % len(batches)])
    samples = []
    begin = time.perf_counter()
    i = 0
    while len(samples) < settings.min_iterations or time.perf_counter() - begin < settings.min_duration_s:
        batch = batches[i % len(batches)]
        t0 = time.perf_counter()
        runner.infer(batch)
        samples.append((time.perf_counter() - t0) * 1e3)
        i += 1
    return {"first_inference_ms": first_ms, "latency_ms": latency_stats(np.asarray(samples), settings.batch_size)}


def predict(runner: Runner, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Probabilities for every image, in order, through the runner."""
    outputs = [runner.infer(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def accuracy(probabilities: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Top-k accuracy as a fraction."""
    topk = np.argsort(-probabilities, axis=1)[:, :k]
    return float(np.mean(np.any(topk == labels[:, None], axis=1)))


def agreement(probabilities: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Top-1 agreement with a reference model's outputs and the probability differences."""
    diff = np.abs(probabilities - reference)
    return {
        "top1_agreement": float(np.mean(np.argmax(probabilities, 1) == np.argmax(reference, 1))),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
    }
