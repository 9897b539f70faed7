"""The latency harness and accuracy figures, the same for every runner."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgepipe import defaults
from edgepipe.backends.runner import Runner


@dataclass(frozen=True)
class BenchSettings:
    """Defaults in the spirit of trtexec (warm-up by time, then a minimum duration) and MLPerf's
    single-stream scenario (one query at a time, a minimum count and a minimum duration), scaled
    down for small models: the bench section's defaults (``edgepipe.defaults``)."""

    batch_size: int = 1
    warmup: int = defaults.WARMUP_CALLS
    min_iterations: int = defaults.MIN_ITERATIONS
    min_duration_s: float = defaults.MIN_DURATION_S
    warmup_s: float = defaults.WARMUP_S

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


def batches_of(images: np.ndarray, batch_size: int, count: int = 8, dtype=np.float32) -> list[np.ndarray]:
    """A few distinct real input batches to cycle through (``dtype``, contiguous)."""
    reps = int(np.ceil(batch_size * count / max(len(images), 1)))
    pool = np.concatenate([images] * max(reps, 1))[: batch_size * count]
    return [np.ascontiguousarray(pool[i : i + batch_size], dtype=dtype) for i in range(0, len(pool), batch_size)]


def runner_batches(runner: Runner, images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches as an application would hand them to this engine: raw uint8 pixels stay uint8 where the model
    takes them as they are (a full-integer TFLite input), else float32."""
    return batches_of(images, batch_size, dtype=runner.input_dtype_for(images.dtype))


def predict(runner: Runner, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Probabilities for every image, in order, through the runner."""
    outputs = [runner.infer(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
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


def efficiency(macs_per_image: int, batch_size: int, p50_ms: float, peak: dict[str, Any] | None) -> dict[str, Any]:
    """Achieved multiply-accumulates per second at the median latency, beside the device's estimated peak."""
    achieved = macs_per_image * batch_size / (p50_ms / 1e3) / 1e9
    out: dict[str, Any] = {"macs_per_image": int(macs_per_image), "gmacs_per_s": achieved}
    if peak:
        out.update(
            peak_gmacs_per_s=peak["gmacs_per_s"],
            fraction_of_peak=achieved / peak["gmacs_per_s"],
            peak_basis=peak["basis"],
        )
    return out
