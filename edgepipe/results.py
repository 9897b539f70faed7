"""The typed results model and its one versioned JSON reader and writer.

``results.json`` holds one :class:`Record` per artifact, engine and setting measured,
plus the conditions of the measurement. Bench writes it; report, compare and merge
read it through :func:`read_results`, which refuses files of any other schema and
upgrades the previous version (``edgepipe.results/1``) on the fly.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepipe.errors import EdgepipeError
from edgepipe.profiles import Profile

SCHEMA = "edgepipe.results/2"
PREVIOUS_SCHEMA = "edgepipe.results/1"


class Status(str, enum.Enum):
    """What became of one artifact in one setting."""

    OK = "ok"
    #: measured, but its outputs are outside its format's tolerance against the FP32 model
    FAILED_VERIFICATION = "failed-verification"
    #: the exporter or the engine raised
    FAILED = "failed"
    #: could not be attempted here (a missing package, device or execution provider)
    SKIPPED = "skipped"

    @property
    def measured(self) -> bool:
        return self in (Status.OK, Status.FAILED_VERIFICATION)

    def __str__(self) -> str:
        return self.value


def skipped_verification(reason: str) -> dict[str, Any]:
    """The verification of an artifact that was not verified (no images to verify it on), with why: neither
    passed nor failed, and shown as skipped in the record, the report and the bench's lines."""
    return {"status": Status.SKIPPED.value, "passed": None, "reason": reason}


def verification_skipped(verification: dict[str, Any] | None) -> str | None:
    """Why ``verification`` was skipped, or None when it ran (or none is recorded)."""
    if verification and verification.get("status") == Status.SKIPPED.value:
        return verification.get("reason") or "not verified"
    return None


@dataclass
class Int8Budget:
    """The INT8 accuracy budget of one artifact: every recipe tried, the one kept, and whether it met the budget.

    ``met`` is None when there were no validation images to judge by (the first recipe is kept).
    """

    budget_pp: float
    met: bool | None
    chosen_attempt: int
    attempts: list[dict[str, Any]]
    reference_top1: float | None = None
    validation_images: int | None = None
    note: str | None = None
    kept_higher_precision: list[str] = field(default_factory=list)
    #: paired comparison with the FP32 model on the validation images (see edgepipe.quantization.significance)
    significance: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Int8Budget:
        if "accuracy_budget_pp" in data:  # results/1 spelling
            data = {
                "budget_pp": data["accuracy_budget_pp"],
                "met": data.get("budget_met"),
                "chosen_attempt": data.get("chosen_attempt", 1),
                "attempts": data.get("attempts", []),
                "note": data.get("budget_note"),
                "kept_higher_precision": data.get("kept_float") or [],
                "reference_top1": data.get("reference_top1"),
                "validation_images": data.get("validation_images"),
            }
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Record:
    """One artifact measured (or not) with one engine on one device in one setting."""

    artifact: str
    format: str | None
    precision: str | None
    status: Status
    reason: str | None = None
    description: str | None = None
    engine: str | None = None
    device: str | None = None
    threads: int | None = None
    #: more threads than the device's usable cores (affinity and cgroup quota): latency includes waiting for a
    #: core; None when not known (files written before edgepipe recorded it)
    oversubscribed: bool | None = None
    batch_size: int | None = None
    #: engine settings in force (threads, spinning, performance hints, ...)
    settings: dict[str, Any] = field(default_factory=dict)
    engine_versions: dict[str, str] = field(default_factory=dict)
    input: dict[str, Any] | None = None
    size_mb: float | None = None
    load_ms: float | None = None
    first_inference_ms: float | None = None
    warmup_calls: int | None = None
    #: per-call latency statistics (min, mean, std, p50, p90, p95, p99, max, iterations, images_per_s)
    latency_ms: dict[str, float] | None = None
    compute_ms: dict[str, float] | None = None
    copy_ms: dict[str, float] | None = None
    #: latency p50 per interleaved round, and their spread
    rounds: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None
    top1: float | None = None
    top5: float | None = None
    top1_change_pp: float | None = None
    agreement_with_reference: dict[str, float] | None = None
    verification: dict[str, Any] | None = None
    int8_budget: Int8Budget | None = None
    #: paired comparison with the FP32 reference on the held-out images
    significance: dict[str, Any] | None = None
    #: top-1 class index per held-out image (in the order of the results' held-out labels), for paired tests
    predictions: list[int] | None = None
    efficiency: dict[str, Any] | None = None
    tuning: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def verified(self) -> bool | None:
        """Whether the artifact passed its verification; None when none was recorded or it was skipped."""
        if not self.verification or verification_skipped(self.verification):
            return None
        return bool(self.verification.get("passed"))

    @property
    def usable(self) -> bool:
        """Measured, and not failed: may appear on the frontier and be recommended."""
        return self.status == Status.OK and self.latency_ms is not None and self.verified is not False

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                out.update(value)
            elif isinstance(value, Int8Budget):
                out[f.name] = value.to_dict()
            elif isinstance(value, Status):
                out[f.name] = value.value
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        data = dict(data)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: data.pop(k) for k in list(data) if k in names}
        kwargs["status"] = parse_status(kwargs.get("status"))
        if kwargs.get("int8_budget"):
            kwargs["int8_budget"] = Int8Budget.from_dict(kwargs["int8_budget"])
        kwargs.setdefault("artifact", "")
        kwargs.setdefault("format", None)
        kwargs.setdefault("precision", None)
        return cls(**kwargs, extra=data)


def parse_status(value: Any) -> Status:
    """The Status a file spells ``value``; EdgepipeError for an unknown one."""
    try:
        return Status(value)
    except ValueError:
        raise EdgepipeError(
            f"unknown record status {value!r} in a results file", "Use results written by edgepipe."
        ) from None


@dataclass
class Results:
    """Everything one bench call measured, and under what conditions."""

    device: dict[str, Any]
    conditions: dict[str, Any]
    records: list[Record]
    created: str = ""
    edgepipe: str = ""
    schema: str = SCHEMA
    run: str | None = None
    architecture: dict[str, Any] = field(default_factory=dict)
    #: the model's class names in output order, when known
    classes: list[str] | None = None
    #: the split accuracy is reported on: split, images, whether it was held out of train (carved) and whether
    #: it took part in the choices (only when the data has no test split)
    heldout: dict[str, Any] | None = None
    #: the split the choices were made on (early stopping, the INT8 recipe and its budget): split, images, uses;
    #: None in files written before it was recorded
    selection: dict[str, Any] | None = None
    reference_format: str | None = None
    training: dict[str, Any] | None = None
    baseline_from_scratch: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    accuracy_budget_pp: float | None = None
    remote: dict[str, Any] | None = None
    #: per-op profiles (bench --profile), each taken after timing in a session of its own; none in older files
    profiles: list[Profile] = field(default_factory=list)
    #: where results/1 files were upgraded from, and anything a later version added
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> Record | None:
        """The FP32 reference model's first measured record, if any."""
        return next((r for r in self.records if r.format == self.reference_format and r.top1 is not None), None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": SCHEMA}
        for f in dataclasses.fields(self):
            if f.name in ("schema", "extra"):
                continue
            value = getattr(self, f.name)
            out[f.name] = [r.to_dict() for r in value] if f.name in ("records", "profiles") else value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "results") -> Results:
        data = dict(data)
        schema = data.get("schema")
        if schema == PREVIOUS_SCHEMA:
            data = _upgrade_v1(data)
        elif schema != SCHEMA:
            raise EdgepipeError(
                f"{source} is not edgepipe results (schema {schema!r})"
                if schema
                else f"{source} is not edgepipe results (it has no 'schema' key)",
                f"Pass a results.json written by 'edgepipe bench' (schema {SCHEMA} or {PREVIOUS_SCHEMA}).",
            )
        if not isinstance(data.get("records"), list) or not isinstance(data.get("device"), dict):
            raise EdgepipeError(
                f"{source} says it is edgepipe results but has no records or device",
                "Pass a complete results.json written by 'edgepipe bench'.",
            )
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: data.pop(k) for k in list(data) if k in names and k != "extra"}
        try:
            kwargs["records"] = [Record.from_dict(r) for r in kwargs["records"]]
        except (TypeError, AttributeError):
            raise EdgepipeError(
                f"{source} has malformed records", "Pass a results.json written by 'edgepipe bench'."
            ) from None
        for index, record in enumerate(kwargs["records"]):
            check_measured(record, f"{source} record {index + 1}")
        kwargs.setdefault("conditions", {})
        kwargs["profiles"] = _profiles(kwargs.get("profiles"), source)
        kwargs["schema"] = SCHEMA
        return cls(**kwargs, extra=data)


#: a record's measured numbers: finite and at least 0 (scalars, or wherever a number stands in these dicts)
MEASURED = (
    "size_mb",
    "load_ms",
    "first_inference_ms",
    "warmup_calls",
    "top1",
    "top5",
    "latency_ms",
    "compute_ms",
    "copy_ms",
    "rounds",
    "memory",
    "agreement_with_reference",
    "efficiency",
)
#: the measured fields that are single numbers (the others are dicts)
SCALARS = ("size_mb", "load_ms", "first_inference_ms", "warmup_calls", "top1", "top5")
#: measured fields that hold numbers only (elsewhere text such as memory's ``peak_basis`` is passed over)
NUMBERS_ONLY = SCALARS + ("latency_ms", "compute_ms", "copy_ms")
#: accuracies are fractions of the held-out images
FRACTIONS = ("top1", "top5")
#: the latency percentiles compare gates: above 0 wherever present, and p50 in every latency_ms
PERCENTILES = ("p50", "p90", "p95", "p99")


def check_measured(record: Record, where: str) -> None:
    """Refuse a record whose measured numbers a gate could not judge: NaN, infinite or negative values, text where a
    number belongs, accuracies above 1, latency percentiles missing or not above 0. ``where`` names the file and the
    record; the EdgepipeError also names the field (e.g. ``latency_ms.p50``)."""
    label = (
        f"{where} ({record.format or record.artifact or 'no format'}, {record.engine}, "
        f"threads {record.threads}, batch {record.batch_size})"
    )
    for name in MEASURED:
        value = getattr(record, name)
        if value is None:
            continue
        if name not in SCALARS and not isinstance(value, dict):
            _bad(label, name, value, "a mapping of measured values")
        for field_name, number in _leaves(value, name, numbers_only=name in NUMBERS_ONLY):
            if not _is_number(number) or not math.isfinite(number) or number < 0:
                _bad(label, field_name, number, "a finite number of at least 0")
    for name in FRACTIONS:
        if getattr(record, name) is not None and getattr(record, name) > 1:
            _bad(label, name, getattr(record, name), "a fraction between 0 and 1")
    change = record.top1_change_pp
    if change is not None and not (_is_number(change) and math.isfinite(change)):
        _bad(label, "top1_change_pp", change, "a finite number")
    for p in PERCENTILES if record.latency_ms is not None else ():
        if (p == "p50" or p in record.latency_ms) and not (record.latency_ms.get(p) or 0) > 0:
            _bad(label, f"latency_ms.{p}", record.latency_ms.get(p), "a measured latency above 0")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _leaves(value: Any, name: str, numbers_only: bool):
    """(dotted field name, value) for every number in ``value`` (a scalar, or nested dicts and lists), and, when
    ``numbers_only``, for everything else that stands where a number belongs."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{name}.{key}", numbers_only)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{name}[{i}]", numbers_only)
    elif _is_number(value) or numbers_only:
        yield name, value


def _bad(label: str, field_name: str, value: Any, expected: str) -> None:
    raise EdgepipeError(
        f"{label}: {field_name} is {value!r}, not {expected}",
        "The file was damaged or edited; measure again with 'edgepipe bench'.",
    )


def _profiles(data: Any, source: str) -> list[Profile]:
    """The profiles of a results file (none in files written before profiles existed)."""
    try:
        return [Profile.from_dict(p) for p in data or []]
    except (TypeError, AttributeError):
        raise EdgepipeError(
            f"{source} has malformed profiles", "Pass a results.json written by 'edgepipe bench'."
        ) from None


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """results/1 -> results/2: records said 'file' and 'runtime' where they now say 'artifact' and 'engine'."""
    records = []
    for record in data.get("records") or []:
        if not isinstance(record, dict):
            records.append(record)
            continue
        record = dict(record)
        record["artifact"] = record.pop("file", "")
        record["engine"] = record.pop("runtime", None)
        record["engine_versions"] = record.pop("runtime_versions", None) or {}
        if record.get("threads") is not None:
            record.setdefault("settings", {"threads": record["threads"]})
        records.append(record)
    return {**data, "records": records, "upgraded_from": PREVIOUS_SCHEMA}


def read_results(path: str | Path) -> Results:
    """Results from a JSON file; a one-line EdgepipeError for a missing, empty, invalid or foreign file."""
    from edgepipe.fileio import read_json_object

    data = read_json_object(
        path, "results file", "edgepipe results", "Pass a results.json written by 'edgepipe bench'."
    )
    return Results.from_dict(data, source=f"'{path}'")


def write_results_json(path: str | Path, results: Results) -> Path:
    """Write ``results`` as JSON (atomically); the report package adds the CSV beside it."""
    from edgepipe.fileio import write_json

    return write_json(path, results.to_dict())
