"""Interleaved rounds: several runners timed in alternating order (A B C, then C B A, ...) in one process.

Timing on a shared machine drifts by tens of percent over minutes; measured one after the
other, the artifact measured during a slow minute looks slow. Alternating rounds expose
every runner to the same drift, so their ratios hold even when the absolute figures move.
Each runner's samples from all rounds make its latency statistics; the p50 of each round
shows the spread.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgepipe.backends.runner import Runner
from edgepipe.errors import error_line
from edgepipe.harness.latency import BenchSettings, latency_stats, runner_batches


@dataclass
class Timing:
    """What timing one runner found: its figures, or ``error`` (one line) when it raised and was not timed."""

    #: the first call's latency (ms) and the warm-up calls made before timing
    first_inference_ms: float | None = None
    warmup_calls: int | None = None
    #: per-call latency statistics over every round's samples (see harness.latency.latency_stats)
    latency_ms: dict[str, float] | None = None
    #: each round's p50 and their spread, (max - min) / median
    rounds: dict[str, Any] | None = None
    #: engine-only and copy time, where the engine reports them for every call
    compute_ms: dict[str, float] | None = None
    copy_ms: dict[str, float] | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class _Samples:
    """What the rounds gather for one runner before its Timing is summarised."""

    samples: list[float] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)
    copy: list[float] = field(default_factory=list)
    round_p50: list[float] = field(default_factory=list)
    first_ms: float = 0.0
    warmup_calls: int = 0


def _warm(runner: Runner, batches: list[np.ndarray], settings: BenchSettings, timing: _Samples) -> None:
    start = time.perf_counter()
    runner.infer(batches[0])
    timing.first_ms = (time.perf_counter() - start) * 1e3
    begin, i = time.perf_counter(), 0
    while i < settings.warmup or time.perf_counter() - begin < settings.warmup_s:
        runner.infer(batches[i % len(batches)])
        i += 1
    timing.warmup_calls = i


def _round(runner: Runner, batches: list[np.ndarray], calls: int, seconds: float, timing: _Samples) -> None:
    samples: list[float] = []
    begin, i = time.perf_counter(), 0
    while len(samples) < calls or time.perf_counter() - begin < seconds:
        t0 = time.perf_counter()
        runner.infer(batches[i % len(batches)])
        samples.append((time.perf_counter() - t0) * 1e3)
        if runner.last_compute_ms is not None:
            timing.compute.append(runner.last_compute_ms)
        if runner.last_copy_ms is not None:
            timing.copy.append(runner.last_copy_ms)
        i += 1
    timing.samples += samples
    timing.round_p50.append(float(np.median(samples)))


def measure_interleaved(
    runners: dict[Hashable, Runner], images: np.ndarray, settings: BenchSettings, rounds: int = 5
) -> dict[Hashable, Timing]:
    """Latency of every runner (already activated, all for the same batch size) in ``rounds`` alternating
    rounds; the warm-up and the minimum calls and duration of ``settings`` are split over the rounds.

    Returns a Timing per key; a runner that raised has only its ``error`` (the others go on).
    """
    rounds = max(1, rounds)
    timings = {key: _Samples() for key in runners}
    batches: dict[Hashable, list[np.ndarray]] = {}
    failed: dict[Hashable, str] = {}
    for key, runner in runners.items():
        try:
            runner.prepare(settings.batch_size)
            batches[key] = runner_batches(runner, images, settings.batch_size)
            _warm(runner, batches[key], settings, timings[key])
        except Exception as exc:  # an engine that fails mid-run is reported; the others are still measured
            failed[key] = _error(exc)
    calls = max(1, -(-settings.min_iterations // rounds))
    seconds = settings.min_duration_s / rounds
    order = [key for key in runners if key not in failed]
    for r in range(rounds):
        for key in order if r % 2 == 0 else order[::-1]:
            if key in failed:
                continue
            try:
                _round(runners[key], batches[key], calls, seconds, timings[key])
            except Exception as exc:
                failed[key] = _error(exc)
    return {
        key: Timing(error=failed[key]) if key in failed else _summary(timings[key], settings.batch_size)
        for key in runners
    }


def _error(exc: Exception) -> str:
    return error_line(exc, 200)


def _summary(t: _Samples, batch_size: int) -> Timing:
    per_round = np.asarray(t.round_p50)
    return Timing(
        first_inference_ms=t.first_ms,
        warmup_calls=t.warmup_calls,
        latency_ms=latency_stats(np.asarray(t.samples), batch_size),
        rounds={
            "count": len(per_round),
            "p50_ms": [round(float(v), 5) for v in per_round],
            "spread": float(np.ptp(per_round) / np.median(per_round)) if len(per_round) > 1 else 0.0,
        },
        compute_ms=latency_stats(np.asarray(t.compute), batch_size) if len(t.compute) == len(t.samples) else None,
        copy_ms=latency_stats(np.asarray(t.copy), batch_size) if len(t.copy) == len(t.samples) else None,
    )
