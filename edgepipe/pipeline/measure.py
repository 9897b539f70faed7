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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgepipe.backends import Artifact, Engine, create_runner, devices_for, engines_for
from edgepipe.errors import EdgepipeError, error_line  # noqa: F401  (error_line: read from here by bench)
from edgepipe.harness import BenchSettings, Timing, accuracy, agreement, measure_interleaved, predict
from edgepipe.harness.memory import measure_memory
from edgepipe.progress import Echo, step
from edgepipe.results import Record, Status, verification_skipped

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
    labels: np.ndarray | None = field(default=None, repr=False)
    probabilities: np.ndarray | None = field(default=None, repr=False)
    runner: Any = field(default=None, repr=False)

    @property
    def label(self) -> str:
        s = self.setting
        return (
            f"{self.record.format or self.record.artifact} [{s.engine.name}, {s.device}, {s.threads} thread(s), "
            f"batch {s.batch_size}]"
        )


def settings_for(
    artifact: Artifact,
    extra_engines: tuple[str, ...],
    devices: tuple[str, ...],
    threads: tuple[int, ...],
    batches: tuple[int, ...],
    engine_settings: Callable[[Engine], Any] = lambda engine: None,
) -> list[Setting]:
    """Every (engine, device, threads, batch) an artifact is measured in: its default engine and each extra
    engine that reads it, on each requested device that engine runs on."""
    out = []
    for engine in engines_for(artifact, extra_engines):
        for device, t, b in itertools.product(devices_for(engine, devices), threads, batches):
            out.append(Setting(engine, device, t, b, engine_settings(engine)))
    return out


def plan(
    artifact: Artifact, base: Record, setting: Setting, images: np.ndarray, labels: np.ndarray | None = None
) -> Plan:
    record = dataclasses.replace(
        base, engine=setting.engine.name, device=setting.device, threads=setting.threads, batch_size=setting.batch_size
    )
    return Plan(artifact, record, setting, images, labels)


def _open(p: Plan, stack: contextlib.ExitStack, reference: np.ndarray | None) -> None:
    """Phase 1 for one plan: activate its runner (kept open in ``stack``) and score it."""
    s, labels = p.setting, p.labels
    try:
        runner = create_runner(
            p.artifact, threads=s.threads, engine=s.engine.name, device=s.device, settings=s.engine_settings
        )
        stack.enter_context(runner)
        # without labels (seeded random pixels, a few images) run at the batch size it is timed at: an engine
        # that prepares each batch size anew (OpenVINO compiles it) then prepares one, not two
        p.probabilities = predict(runner, p.images, s.batch_size) if labels is None else predict(runner, p.images)
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
        measured = measure_interleaved(
            {id(p): p.runner for p in group}, group[0].images, dataclasses.replace(settings, batch_size=batch), rounds
        )
        for p in group:
            timing = measured[id(p)]
            if timing.failed:
                p.record = dataclasses.replace(p.record, status=Status.FAILED, reason=timing.error)
                continue
            p.record.first_inference_ms, p.record.warmup_calls = timing.first_inference_ms, timing.warmup_calls
            p.record.latency_ms, p.record.rounds = timing.latency_ms, timing.rounds
            p.record.compute_ms, p.record.copy_ms = timing.compute_ms, timing.copy_ms


def _profile(p: Plan, context: Callable[[Plan], dict] | None):
    from edgepipe.harness.profile import profile_runner
    from edgepipe.profiles import Profile

    r = p.record
    base = Profile(r.artifact, r.format, r.precision, r.engine, r.device, r.threads, r.batch_size)
    return profile_runner(p.runner, p.images, base, **(context(p) if context else {}))


def thread_candidates(most: int) -> list[int]:
    """1, 2, 4, ... up to ``most`` (always including it): the thread counts --tune tries."""
    counts = {most}
    n = 1
    while n < most:
        counts.add(n)
        n *= 2
    return sorted(counts)


def tune_candidates(setting: Setting, most_threads: int) -> list[Setting]:
    """The settings --tune tries for one engine: its thread counts times its settings' candidates."""
    engine = setting.engine
    base = (
        setting.engine_settings
        if setting.engine_settings is not None
        else (engine.settings() if engine.settings else None)
    )
    overrides = base.tune_candidates() if base is not None and hasattr(base, "tune_candidates") else [{}]
    threads = thread_candidates(most_threads) if engine.tunable_threads else [setting.threads]
    return [
        dataclasses.replace(setting, threads=t, engine_settings=dataclasses.replace(base, **o) if base else None)
        for t in threads
        for o in overrides
    ]


#: batch sizes --tune measures for throughput (images per second), with the best latency setting
THROUGHPUT_BATCHES = (1, 2, 4, 8)


def _tune_one(p: Plan, settings: BenchSettings, most_threads: int, echo: Echo) -> None:
    """Sweep a plan's settings in interleaved rounds, keep the fastest (p50) as its setting, and record the
    default, the best and every candidate; then the batch size that gives the most images per second."""
    candidates = tune_candidates(p.setting, most_threads)
    short = dataclasses.replace(
        settings, min_iterations=max(5, settings.min_iterations // 2), min_duration_s=settings.min_duration_s / 2
    )
    figures = _time_settings(p, candidates, short)
    usable = [(c, f) for c, f in zip(candidates, figures) if not f.failed]
    if not usable:
        return
    default = next(((c, f) for c, f in usable if c == candidates_default(p.setting, candidates)), usable[0])
    best = min(usable, key=lambda cf: cf[1].latency_ms["p50"])
    throughput = _throughput(p, best[0], short)
    p.setting = best[0]
    p.record.threads = best[0].threads
    p.record.tuning = {
        "default": _candidate_record(*default),
        "best": _candidate_record(*best),
        "candidates": [_candidate_record(c, f) for c, f in zip(candidates, figures)],
        "throughput": throughput,
        "best_throughput": max(throughput, key=lambda t: t.get("images_per_s") or 0) if throughput else None,
    }
    echo(f"  tuned {p.label}: p50 {best[1].latency_ms['p50']:.3f} ms (default {default[1].latency_ms['p50']:.3f} ms)")


def candidates_default(setting: Setting, candidates: list[Setting]) -> Setting:
    """The candidate equal to the untuned setting, if it is one of them."""
    return next(
        (
            c
            for c in candidates
            if c.threads == setting.threads
            and (c.engine_settings == setting.engine_settings or setting.engine_settings is None)
        ),
        candidates[0],
    )


def _candidate_record(setting: Setting, figures: Timing) -> dict:
    """One setting --tune tried, as the record's ``tuning`` holds it: its p50, throughput and spread, or its error."""
    settings = dataclasses.asdict(setting.engine_settings) if setting.engine_settings is not None else {}
    if figures.failed:
        return {"threads": setting.threads, **settings, "error": figures.error}
    return {
        "threads": setting.threads,
        **settings,
        "p50_ms": figures.latency_ms["p50"],
        "images_per_s": figures.latency_ms["images_per_s"],
        "spread": figures.rounds["spread"],
    }


def _time_settings(p: Plan, candidates: list[Setting], settings: BenchSettings) -> list[Timing]:
    """Latency of one artifact under each candidate setting, in interleaved rounds."""
    with contextlib.ExitStack() as stack:
        runners, figures = {}, {}
        for i, c in enumerate(candidates):
            try:
                runners[i] = stack.enter_context(
                    create_runner(
                        p.artifact, threads=c.threads, engine=c.engine.name, device=c.device, settings=c.engine_settings
                    )
                )
            except Exception as exc:  # a setting this engine refuses is reported with the others
                figures[i] = Timing(error=error_line(exc))
        figures.update(measure_interleaved(runners, p.images, settings, rounds=3) if runners else {})
    return [figures[i] for i in range(len(candidates))]


def _throughput(p: Plan, best: Setting, settings: BenchSettings) -> list[dict]:
    out = []
    for batch in THROUGHPUT_BATCHES:
        if batch > max(len(p.images), 1):
            break
        (timing,) = _time_settings(p, [best], dataclasses.replace(settings, batch_size=batch))
        out.append(
            {
                "batch_size": batch,
                **(
                    {"error": timing.error}
                    if timing.failed
                    else {"images_per_s": timing.latency_ms["images_per_s"], "p50_ms": timing.latency_ms["p50"]}
                ),
            }
        )
    return out


def measure_plans(
    plans: list[Plan],
    settings: BenchSettings,
    echo: Echo,
    reference: np.ndarray | None = None,
    memory: bool = True,
    rounds: int = ROUNDS,
    tune_threads: int | None = None,
    profiles: list | None = None,
    profile_context: Callable[[Plan], dict] | None = None,
) -> list[Record]:
    """Every plan measured (see the module docstring); returns their records, in plan order.

    With ``profiles`` (a list), each timed plan is also profiled after every plan was timed, in a session
    of its own (see edgepipe.harness.profile), and its Profile appended there; ``profile_context(plan)``
    gives the keyword arguments of the join (layers, kept_float, peak).

    ``reference`` (the FP32 model's probabilities on the plans' images) gives each record its
    agreement; when None, the first plan that runs becomes the reference. With ``tune_threads``
    (the most threads to try), each plan's settings are swept first and it is measured with the best.
    """
    if tune_threads:
        for p in plans:
            with step(echo, f"  tuning {p.label}"):
                _tune_one(p, settings, tune_threads, echo)
    with contextlib.ExitStack() as stack:
        for p in plans:
            with step(echo, f"  loading and scoring {p.label}"):
                _open(p, stack, reference)
            if reference is None and p.probabilities is not None:
                reference = p.probabilities
        with step(
            echo, f"  timing {sum(1 for p in plans if p.runner)} artifact setting(s) in {rounds} interleaved rounds"
        ):
            _time(plans, settings, rounds)
        if profiles is not None:  # after timing, never inside it
            for p in (p for p in plans if p.runner is not None and p.record.latency_ms is not None):
                with step(echo, f"  profiling {p.label}"):
                    profiles.append(_profile(p, profile_context))
    if memory:
        for p in (p for p in plans if p.record.latency_ms is not None):
            with step(echo, f"  memory of {p.label} in a fresh process"):
                p.record.memory = measure_memory(
                    p.artifact,
                    p.setting.engine.name,
                    p.setting.device,
                    p.setting.threads,
                    p.setting.engine_settings,
                    p.setting.batch_size,
                    p.images.shape,
                ).as_record()  # results.json keeps {"error": ...} for a memory that could not be measured
    return [p.record for p in plans]


def line(record: Record) -> str:
    """One line per record for the console (with why it was not verified, when its export could not verify it)."""
    unverified = verification_skipped(record.verification)
    return _measured_line(record) + (f"  (verification skipped: {unverified})" if unverified else "")


def _measured_line(record: Record) -> str:
    name = record.format or record.artifact
    if record.latency_ms is None:
        return f"{name:<14} {record.status}: {record.reason}"
    lat = record.latency_ms
    top1 = f"top-1 {record.top1:.2%}  " if record.top1 is not None else ""
    spread = f", spread {record.rounds['spread']:.1%} over {record.rounds['count']} rounds" if record.rounds else ""
    memory = ""
    if record.memory and record.memory.get("peak_rss_mb") is not None:
        memory = f"  peak {record.memory['peak_rss_mb']:.0f} MB"
    return (
        f"[{record.engine}, {record.device}, {record.threads} thr, batch {record.batch_size}] {name:<14} {top1}"
        f"p50 {lat['p50']:.3f} ms{spread}  p90 {lat['p90']:.3f} ms  {lat['images_per_s']:.1f} images/s{memory}"
    )
