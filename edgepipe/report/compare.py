"""Compare two results files: a Markdown table of changes and threshold gates for CI.

Records are matched by (format, engine, device, threads, batch size). Latency
regressions are relative (``p50`` 10% slower); accuracy drops are in top-1
percentage points. The gate fails closed: an artifact the baseline measured that
is missing, failed or skipped now counts as a crossed threshold, and so does a
current file with nothing measured. Results from different devices or engine
versions are flagged, and refused under ``strict``; so are results of different
models (architecture, input size, class list).

With ``accuracy_test="mcnemar"`` a top-1 drop beyond the threshold crosses it only
when it is distinguishable from chance: both files predicted the same held-out
images (same image digest and labels), and McNemar's one-sided exact test on the
images one got right and the other wrong (more lost than gained) gives p below 0.05.
Where the two files cannot be paired (no per-image predictions, other images), the
plain threshold applies and a warning says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgepipe.errors import EdgepipeError
from edgepipe.results import Record, Results, check_measured
from edgepipe.significance import ALPHA, mcnemar_one_sided

PERCENTILES = ("p50", "p90", "p95", "p99")
ACCURACY_TESTS = ("none", "mcnemar")


@dataclass
class Comparison:
    table: str
    violations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _key(record: Record) -> tuple:
    return record.format or record.artifact, record.engine, record.device or "cpu", record.threads, record.batch_size


def _name(key: tuple) -> str:
    return f"{key[0]} ({key[1]}, {key[2]}, threads {key[3]}, batch {key[4]})"


def _environment_differences(current: Results, baseline: Results) -> list[str]:
    notes = []
    for key in ("cpu_model", "machine", "usable_cores", "board_model"):
        a, b = current.device.get(key), baseline.device.get(key)
        if a != b:
            notes.append(f"device {key} differs: {a!r} now, {b!r} in the baseline")
    engines_now, engines_base = {}, {}
    for results, target in ((current, engines_now), (baseline, engines_base)):
        for record in results.records:
            target.update(record.engine_versions or {})
    for engine in sorted(set(engines_now) & set(engines_base)):
        if engines_now[engine] != engines_base[engine]:
            notes.append(f"{engine} {engines_now[engine]} now, {engines_base[engine]} in the baseline")
    return notes


def _model_differences(current: Results, baseline: Results) -> list[str]:
    notes = []
    for key, label in (
        ("architecture", "architecture"),
        ("input_size", "input size"),
        ("channels", "input channels"),
        ("num_classes", "number of classes"),
    ):
        a, b = (current.architecture or {}).get(key), (baseline.architecture or {}).get(key)
        if a is not None and b is not None and a != b:
            notes.append(f"{label} differs: {a!r} now, {b!r} in the baseline")
    if current.classes and baseline.classes and list(current.classes) != list(baseline.classes):
        notes.append(
            "class lists differ: "
            + ", ".join(current.classes[:5])
            + " now, "
            + ", ".join(baseline.classes[:5])
            + " in the baseline"
        )
    return notes


def check_thresholds(max_latency_regression: float | None, max_accuracy_drop_pp: float | None) -> None:
    """Refuse thresholds that could never fail (NaN), mean nothing (negative) or are not numbers at all."""
    for value, flag in (
        (max_latency_regression, "--max-latency-regression"),
        (max_accuracy_drop_pp, "--max-accuracy-drop"),
    ):
        if value is not None:
            _check_threshold(value, flag)


def _check_threshold(value: object, flag: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or math.isinf(value)
        or value < 0
    ):
        raise EdgepipeError(
            f"{flag} must be a finite number of at least 0, got {value!r}",
            "Give e.g. --max-latency-regression 10% or --max-accuracy-drop 0.5.",
        )


def compare(
    current: Results,
    baseline: Results,
    max_latency_regression: float | None = None,
    max_accuracy_drop_pp: float | None = None,
    percentiles: tuple[str, ...] = ("p50",),
    strict: bool = False,
    accuracy_test: str = "none",
) -> Comparison:
    """Changes from ``baseline`` to ``current``; violations name each threshold crossed (see the module docstring).

    ``max_latency_regression`` is a fraction (0.10 = 10% slower allowed). Results whose measured numbers a gate
    cannot judge (NaN, negative, ...) are an EdgepipeError, as when they are read from a file.
    """
    check_thresholds(max_latency_regression, max_accuracy_drop_pp)
    for results, which in ((current, "the current results"), (baseline, "the baseline")):
        for index, record in enumerate(results.records):
            check_measured(record, f"{which} record {index + 1}")
    if accuracy_test not in ACCURACY_TESTS:
        raise EdgepipeError(f"unknown accuracy test '{accuracy_test}'", "Use " + " or ".join(ACCURACY_TESTS) + ".")
    base = {_key(r): r for r in baseline.records if r.latency_ms}
    if not base:
        raise EdgepipeError(
            "the baseline has no measured records, so nothing can be gated",
            "Pass a baseline results.json in which artifacts were measured.",
        )
    mismatch = _model_differences(current, baseline)
    environment = _environment_differences(current, baseline)
    if strict and (mismatch or environment):
        what = "different models" if mismatch else "different devices or engine versions"
        raise EdgepipeError(
            f"results come from {what}: " + "; ".join(mismatch + environment),
            "Compare results of the same model on the same device and engines, or drop --strict "
            "to compare with a warning.",
        )
    warnings = mismatch + environment
    labels = None
    if accuracy_test == "mcnemar":
        labels, why = _paired_labels(current, baseline)
        if labels is None:
            warnings.append(f"--accuracy-test mcnemar: {why}; top-1 drops are gated by the threshold alone")
    rows = [
        "| artifact | engine | device | threads | batch | top-1 now (%) | top-1 baseline (%) | Δ top-1 (pp) | "
        + " | ".join(f"{p} now (ms) | {p} baseline (ms) | Δ {p}" for p in percentiles)
        + " |",
        "|---|---|---|--:|--:|--:|--:|--:|" + "--:|--:|--:|" * len(percentiles),
    ]
    violations: list[str] = []
    if not current.records:
        violations.append("the current results hold no records at all")
    now = {_key(r): r for r in current.records}
    for key, old in base.items():
        record = now.get(key)
        if record is None:
            violations.append(f"{_name(key)}: in the baseline but missing from the current results")
            continue
        if not record.usable:
            violations.append(
                f"{_name(key)}: {record.status}"
                + (f" ({record.reason})" if record.reason else "")
                + " now, measured in the baseline"
            )
            continue
        rows.append(
            _row(
                key,
                record,
                old,
                percentiles,
                max_latency_regression,
                max_accuracy_drop_pp,
                violations,
                labels,
                warnings,
            )
        )
    for key in now.keys() - base.keys():
        if now[key].latency_ms:
            warnings.append(f"{_name(key)} has no baseline")
    return Comparison("\n".join(rows), violations, warnings)


def _paired_labels(current: Results, baseline: Results) -> tuple[list[int] | None, str]:
    """The held-out labels both files were measured on, or None and why they cannot be paired."""
    held_now, held_then = current.heldout or {}, baseline.heldout or {}
    now, then = held_now.get("labels"), held_then.get("labels")
    if now is None or then is None or not held_now.get("images_sha256") or not held_then.get("images_sha256"):
        return None, "a results file records no held-out labels and image digest (results of a run's bench stage do)"
    if list(now) != list(then) or held_now["images_sha256"] != held_then["images_sha256"]:
        return None, "the two files were measured on different held-out images"
    return list(now), ""


def _paired_test(record: Record, old: Record, labels: list[int]) -> tuple[int, int, float] | None:
    """(images lost, gained, McNemar's one-sided exact p) of ``record`` against ``old`` on the same images, or None."""
    if (
        not record.predictions
        or not old.predictions
        or not len(record.predictions) == len(old.predictions) == len(labels)
    ):
        return None
    lost = sum(1 for a, b, y in zip(record.predictions, old.predictions, labels) if b == y and a != y)
    gained = sum(1 for a, b, y in zip(record.predictions, old.predictions, labels) if a == y and b != y)
    return lost, gained, mcnemar_one_sided(lost, gained)


def _row(
    key: tuple,
    record: Record,
    old: Record,
    percentiles: tuple[str, ...],
    max_latency_regression: float | None,
    max_accuracy_drop_pp: float | None,
    violations: list[str],
    labels: list[int] | None = None,
    warnings: list[str] | None = None,
) -> str:
    cells = [f"`{key[0]}`", str(key[1]), key[2], str(key[3]), str(key[4])]
    drop = None if record.top1 is None or old.top1 is None else (old.top1 - record.top1) * 100
    cells += [_pct(record.top1), _pct(old.top1), "–" if drop is None else f"{-drop:+.2f}"]
    if max_accuracy_drop_pp is not None:
        if drop is None and old.top1 is not None:
            violations.append(f"{key[0]}: top-1 was measured in the baseline but not now")
        elif drop is not None and drop > max_accuracy_drop_pp:
            paired = _paired_test(record, old, labels) if labels is not None else None
            if labels is not None and paired is None and warnings is not None:
                warnings.append(f"{_name(key)}: no per-image predictions in both files; gated by the threshold alone")
            if paired is not None and paired[2] >= ALPHA:
                warnings.append(
                    f"{key[0]}: top-1 dropped {drop:.2f} pp (limit {max_accuracy_drop_pp} pp), but "
                    f"{paired[0]} image(s) lost and {paired[1]} gained is not distinguishable from chance "
                    f"(one-sided McNemar exact p = {paired[2]:.3g} >= {ALPHA:g})"
                )
            else:
                test = (
                    f"; {paired[0]} lost, {paired[1]} gained, one-sided McNemar exact p = {paired[2]:.3g}"
                    if paired
                    else ""
                )
                violations.append(f"{key[0]}: top-1 dropped {drop:.2f} pp (limit {max_accuracy_drop_pp} pp){test}")
    for p in percentiles:
        now, then = record.latency_ms[p], old.latency_ms[p]
        change = now / then - 1
        cells += [f"{now:.3f}", f"{then:.3f}", f"{change:+.1%}"]
        if max_latency_regression is not None and change > max_latency_regression:
            violations.append(
                f"{key[0]}: {p} latency {change:+.1%} ({then:.3f} -> {now:.3f} ms; limit +{max_latency_regression:.0%})"
            )
    return "| " + " | ".join(cells) + " |"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.2f}"


def parse_fraction(text: str, flag: str = "--max-latency-regression") -> float:
    """'10%' -> 0.1. The percent sign is required: a bare '10' could mean 10% or 1000%, and a gate must not guess.
    EdgepipeError for a bare number, for text that is not a number, and for NaN, infinite or negative values."""
    text = str(text).strip()
    number = text[:-1].strip() if text.endswith("%") else text
    try:
        value = float(number)
    except ValueError:
        raise EdgepipeError(f"{flag} '{text}' is not a percentage", "Write it with a percent sign, like 10%.") from None
    _check_threshold(value, flag)
    if not text.endswith("%"):
        raise EdgepipeError(
            f"{flag} '{text}' has no unit ({value:g}% or {value:.0%})",
            f"Write it with a percent sign, like {value:g}%.",
        )
    return value / 100


def parse_points(text: str, flag: str = "--max-accuracy-drop") -> float:
    """'0.5' or '0.5pp' -> 0.5 percentage points of top-1. A percent sign is refused: '0.5%' could mean points or
    a relative change. EdgepipeError for text that is not a number, and for NaN, infinite or negative values."""
    text = str(text).strip()
    if text.endswith("%"):
        raise EdgepipeError(
            f"{flag} '{text}' is ambiguous (percentage points of top-1, or a relative change)",
            f"Write percentage points, like {text[:-1].strip()} or {text[:-1].strip()}pp.",
        )
    number = text[:-2].strip() if text.lower().endswith("pp") else text
    try:
        value = float(number)
    except ValueError:
        raise EdgepipeError(
            f"{flag} '{text}' is not a number of percentage points", "Write it like 0.5 or 0.5pp."
        ) from None
    _check_threshold(value, flag)
    return value
