"""The typed export record and the one versioned reader and writer of the export index (artifacts.json).

The export stage (and ``edgepipe export``) makes one :class:`ExportRecord` per format; bench turns each into
a :class:`~edgepipe.results.Record`; the API returns them. :func:`write_export_index` writes the index with
a ``schema`` key; :func:`read_export_index` reads it, and files written before the key existed (the same
shape, no ``schema``) as version 1. A file of a later version is refused with a one-line error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepipe.errors import EdgepipeError
from edgepipe.results import Int8Budget, Status, parse_status

SCHEMA_NAME = "edgepipe.artifacts"
VERSION = 1
SCHEMA = f"{SCHEMA_NAME}/{VERSION}"
INDEX_NAME = "artifacts.json"

#: the keys every record carries on disk, even when None; the other fields are written only when set
_ALWAYS = ("format", "precision", "container", "file", "description", "status")


@dataclass
class ExportRecord:
    """One format exported (or not) from one model: the artifact's file, and what became of it."""

    format: str
    precision: str | None
    container: str | None
    #: the artifact's file name, relative to the index's folder
    file: str
    status: Status
    description: str | None = None
    #: why the format was skipped, failed, or failed verification
    reason: str | None = None
    size_mb: float | None = None
    sha256: str | None = None
    export_seconds: float | None = None
    #: what the exporter reports (layers kept in float, converter settings, ...), without the INT8 budget
    details: dict[str, Any] | None = None
    int8_budget: Int8Budget | None = None
    #: the artifact's outputs against its source model's (see edgepipe.verification.verify)
    verification: dict[str, Any] | None = None
    #: where the conversion ran ("this process" or "a child process") and that process's peak resident memory
    export_process: str | None = None
    peak_rss_mb: float | None = None
    #: keys a later edgepipe added, kept as read
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_format(cls, fmt: Any, file: str, status: Status, description: str | None = None) -> ExportRecord:
        """A record of ``fmt`` (a backends.Format: its name, precision, container and, unless ``description``
        says otherwise, its description) for the artifact ``file``."""
        return cls(
            format=fmt.name,
            precision=fmt.precision,
            container=fmt.container,
            file=file,
            status=status,
            description=fmt.description if description is None else description,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as artifacts.json holds it (the INT8 budget under ``details.int8_budget``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("extra", "int8_budget") or (value is None and f.name not in _ALWAYS):
                continue
            out[f.name] = value.value if isinstance(value, Status) else value
        if self.int8_budget is not None:
            out["details"] = {**(self.details or {}), "int8_budget": self.int8_budget.to_dict()}
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportRecord:
        """A record from its artifacts.json entry; EdgepipeError for an unknown status."""
        data = dict(data)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "int8_budget"}
        kwargs = {k: data.pop(k) for k in list(data) if k in names}
        kwargs["status"] = parse_status(kwargs.get("status"))
        details = dict(kwargs.get("details") or {})
        budget = details.pop("int8_budget", None)
        if "details" in kwargs:
            kwargs["details"] = details
        for name in ("format", "precision", "container", "file"):
            kwargs.setdefault(name, None)
        return cls(**kwargs, int8_budget=Int8Budget.from_dict(budget) if budget else None, extra=data)


@dataclass
class ExportIndex:
    """What one export wrote: the source model, the calibration set, and one record per format."""

    source_model: str
    artifacts: list[ExportRecord]
    source_sha256: str | None = None
    calibration: dict[str, Any] | None = None
    #: a foreign source (ONNX, PyTorch) as its reader describes it; None for a Keras model
    source: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, format_name: str) -> ExportRecord | None:
        """The record of ``format_name``, or None when it was not exported."""
        return next((a for a in self.artifacts if a.format == format_name), None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "source_model": self.source_model,
            "source_sha256": self.source_sha256,
            **({"source": self.source} if self.source is not None else {}),
            "calibration": self.calibration,
            "artifacts": [a.to_dict() for a in self.artifacts],
        }
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "the export index") -> ExportIndex:
        """An index from artifacts.json's content: this schema, or none (files written before it had one);
        a one-line EdgepipeError for a later or foreign schema, or entries that are not records."""
        data = dict(data)
        _check_schema(data.pop("schema", None), source)
        entries = data.pop("artifacts", None)
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise EdgepipeError(f"{source} has no list of artifact records", _HINT)
        names = {f.name for f in dataclasses.fields(cls)} - {"artifacts", "extra"}
        kwargs = {k: data.pop(k) for k in list(data) if k in names}
        kwargs.setdefault("source_model", "")
        try:
            records = [ExportRecord.from_dict(e) for e in entries]
        except (TypeError, AttributeError):  # e.g. details or int8_budget that are not mappings
            raise EdgepipeError(f"{source} has malformed artifact records", _HINT) from None
        return cls(artifacts=records, **kwargs, extra=data)


_HINT = "Export again with 'edgepipe export' (or 'edgepipe export CONFIG' for a run directory)."


def _check_schema(schema: Any, source: str) -> None:
    """Accept this schema or none; refuse a later version (with what to do) or anything else."""
    if schema is None or schema == SCHEMA:
        return
    name, _, version = str(schema).partition("/")
    if name == SCHEMA_NAME and version.isdigit() and int(version) > VERSION:
        raise EdgepipeError(
            f"{source} is of schema {schema}, newer than this edgepipe reads ({SCHEMA})",
            "Upgrade edgepipe, or export again with this one.",
        )
    raise EdgepipeError(f"{source} is not an edgepipe export index (schema {schema!r})", _HINT)


def read_export_index(path: str | Path) -> ExportIndex:
    """The export index at ``path`` (an artifacts.json); a one-line EdgepipeError for a missing, empty, invalid,
    foreign or newer file."""
    from edgepipe.fileio import read_json_object

    data = read_json_object(path, "export index", "an edgepipe export index", _HINT)
    return ExportIndex.from_dict(data, source=f"'{path}'")


def write_export_index(path: str | Path, index: ExportIndex) -> Path:
    """Write ``index`` to ``path`` as JSON with its schema (atomically: a crash leaves the old file or none)."""
    from edgepipe.fileio import write_json

    return write_json(path, index.to_dict())
