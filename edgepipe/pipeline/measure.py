"""Measuring artifacts: plans (an artifact in one setting) turned into records, in three phases.

1. Load every plan's runner and score it on the images (accuracy, agreement with the reference).
2. Time all of them in interleaved rounds in this one process, so machine drift cancels in their ratios.
3. Measure each one's memory in a fresh process.

A plan whose engine is missing becomes a 'skipped' record, one whose engine raises a 'failed'
record, each with its reason; the other plans are still measured.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from edgepipe.backends import Artifact, Engine, create_runner, devices_for, engines_for
from edgepipe.errors import EdgepipeError
from edgepipe.harness import BenchSettings, accuracy, agreement, measure_interleaved, predict
from edgepipe.harness.memory import measure_memory
from edgepipe.progress import step
from edgepipe.results import Record, Status

Echo = Callable[[str], None]

#: alternating rounds per measurement (A B C, C B A, ...): enough to see the spread, few enough to warm each
ROUNDS = 5


@dataclass(frozen=True)
class Setting:
    """One way of running an artifact: engine, device, threads, batch size and engine settings."""

    engine: Engine
    device: str
    threads: int
    batch_size: int
    engine_settings: Any = None


@dataclass
class Plan:
    """An artifact to measure in one setting, and what has been learned about it so far."""

    artifact: Artifact
    record: Record
    setting: Setting
    #: the images it is scored and timed on (uint8 NHWC at its input size) and their labels, if known
    images: np.ndarray = field(repr=False)
    labels: Optional[np.ndarray] = field(default=None, repr=False)
    probabilities: Optional[np.ndarray] = field(default=None, repr=False)
    runner: Any = field(default=None, repr=False)

    @property
    def label(self) -> str:
        s = self.setting
        return f"{self.record.format or self.record.artifact} [{s.engine.name}, {s.device}, {s.threads} thread(s), " \
               f"batch {s.batch_size}]"


def settings_for(artifact: Artifact, extra_engines: tuple[str, ...], devices: tuple[str, ...], threads: tuple[int, ...],
                 batches: tuple[int, ...], engine_settings: Callable[[Engine], Any] = lambda engine: None) -> list[Setting]:
    """Every (engine, device, threads, batch) an artifact is measured in: its default engine and each extra
    engine that reads it, on each requested device that engine runs on."""
    out = []
    for engine in engines_for(artifact, extra_engines):
        for device, t, b in itertools.product(devices_for(engine, devices), threads, batches):
            out.append(Setting(engine, device, t, b, engine_settings(engine)))
    return out


def plan(artifact: Artifact, base: Record, setting: Setting, images: np.ndarray,
         labels: Optional[np.ndarray] = None) -> Plan:
    record = dataclasses.replace(base, engine=setting.engine.name, device=setting.device, threads=setting.threads,
                                 batch_size=setting.batch_size)
    return Plan(artifact, record, setting, images, labels)


def error_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {(text.splitlines() or [''])[0][:240]}"


def _open(p: Plan, stack: contextlib.ExitStack, reference: Optional[np.ndarray]) -> None:
    """Phase 1 for one plan: activate its runner (kept open in ``stack``) and score it."""
    s, labels = p.setting, p.labels
    try:
        runner = create_runner(p.artifact, threads=s.threads, engine=s.engine.name, device=s.device,
                               settings=s.engine_settings)
        stack.enter_context(runner)
        p.probabilities = predict(runner, p.images)
    except EdgepipeError as exc:  # an engine, package or device missing here
        p.record = dataclasses.replace(p.record, status=Status.SKIPPED, reason=str(exc))
        return
    except Exception as exc:  # an engine that cannot load or run this artifact
        p.record = dataclasses.replace(p.record, status=Status.FAILED, reason=error_line(exc))
        return
    p.runner = runner
    r = p.record
    r.settings, r.engine_versions = runner.settings_record(), runner.versions()
    r.input, r.load_ms = dataclasses.asdict(runner.input_spec()), runner.load_ms
    if labels is not None:
        r.top1 = accuracy(p.probabilities, labels, 1)
        if p.probabilities.shape[1] > 5:
            r.top5 = accuracy(p.probabilities, labels, 5)
    if reference is not None and reference.shape == p.probabilities.shape:
        r.agreement_with_reference = agreement(p.probabilities, reference)


def _time(plans: list[Plan], settings: BenchSettings, rounds: int) -> None:
    """Phase 2: interleaved rounds among the open runners that share a batch size and an input size."""
    groups: dict[tuple, list[Plan]] = {}
    for p in plans:
        if p.runner is not None:
            groups.setdefault((p.setting.batch_size, p.images.shape[1:]), []).append(p)
    for (batch, _), group in groups.items():
        measured = measure_interleaved({id(p): p.runner for p in group}, group[0].images,
                                       dataclasses.replace(settings, batch_size=batch), rounds)
        for p in group:
            timing = measured[id(p)]
            if "error" in timing:
                p.record = dataclasses.replace(p.record, status=Status.FAILED, reason=timing["error"])
                continue
            p.record.first_inference_ms, p.record.warmup_calls = timing["first_inference_ms"], timing["warmup_calls"]
            p.record.latency_ms, p.record.rounds = timing["latency_ms"], timing["rounds"]
            p.record.compute_ms, p.record.copy_ms = timing.get("compute_ms"), timing.get("copy_ms")


def measure_plans(plans: list[Plan], settings: BenchSettings, echo: Echo, reference: Optional[np.ndarray] = None,
                  memory: bool = True, rounds: int = ROUNDS) -> list[Record]:
    """Every plan measured (see the module docstring); returns their records, in plan order.

    ``reference`` (the FP32 model's probabilities on the plans' images) gives each record its
    agreement; when None, the first plan that runs becomes the reference.
    """
    with contextlib.ExitStack() as stack:
        for p in plans:
            with step(echo, f"  loading and scoring {p.label}"):
                _open(p, stack, reference)
            if reference is None and p.probabilities is not None:
                reference = p.probabilities
        with step(echo, f"  timing {sum(1 for p in plans if p.runner)} artifact setting(s) in {rounds} interleaved rounds"):
            _time(plans, settings, rounds)
    if memory:
        for p in (p for p in plans if p.record.latency_ms is not None):
            with step(echo, f"  memory of {p.label} in a fresh process"):
                p.record.memory = measure_memory(p.artifact, p.setting.engine.name, p.setting.device, p.setting.threads,
                                                 p.setting.engine_settings, p.setting.batch_size, p.images.shape)
    return [p.record for p in plans]


def line(record: Record) -> str:
    """One line per record for the console."""
    name = record.format or record.artifact
    if record.latency_ms is None:
        return f"{name:<14} {record.status}: {record.reason}"
    lat = record.latency_ms
    top1 = f"top-1 {record.top1:.2%}  " if record.top1 is not None else ""
    spread = f", spread {record.rounds['spread']:.1%} over {record.rounds['count']} rounds" if record.rounds else ""
    memory = ""
    if record.memory and record.memory.get("peak_rss_mb") is not None:
        memory = f"  peak {record.memory['peak_rss_mb']:.0f} MB"
    return (f"[{record.engine}, {record.device}, {record.threads} thr, batch {record.batch_size}] {name:<14} {top1}"
            f"p50 {lat['p50']:.3f} ms{spread}  p90 {lat['p90']:.3f} ms  {lat['images_per_s']:.1f} images/s{memory}")
