"""The run directory: where every stage reads and writes, plus stage records, the manifest and the lock.

A run directory is marked as one (``.edgepipe-run``) when edgepipe creates it, so
edgepipe never writes a run into a folder that holds anything else. One command at
a time may work in it (``.edgepipe-lock``); temporary work goes to ``.edgepipe-tmp``
and is swept, with any temporary file a killed command left, by the next command.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from edgepipe.errors import EdgepipeError
from edgepipe.fileio import make_folder, read_json, sha256_file, write_json
from edgepipe.versions import __version__, library_versions

MARKER = ".edgepipe-run"
LOCK = ".edgepipe-lock"
#: temporary names atomic_path gives: ".<final name>.<8 random characters>.tmp[suffix]"
LEFTOVER = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


def is_run_directory(path: Path) -> bool:
    """Whether edgepipe made ``path`` (its marker, or the stage records of a run from an earlier version)."""
    return (path / MARKER).is_file() or (path / "stages.json").is_file()


@dataclass
class Verification:
    """What changed in a run directory since its stages recorded their outputs."""

    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)
    stages_intact: dict[str, bool] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.changed and not self.missing


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class RunDir:
    path: Path
    #: with --force a damaged stages.json is started afresh instead of refused
    reset_damaged_records: bool = False

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    # files every stage agrees on
    @property
    def config(self) -> Path: return self.path / "config.yaml"
    @property
    def dataset_index(self) -> Path: return self.path / "dataset.json"
    @property
    def labels(self) -> Path: return self.path / "labels.txt"
    @property
    def model_initial(self) -> Path: return self.path / "model_initial.keras"
    @property
    def build_info(self) -> Path: return self.path / "build.json"
    @property
    def model(self) -> Path: return self.path / "model.keras"
    @property
    def training(self) -> Path: return self.path / "training.json"
    @property
    def history_csv(self) -> Path: return self.path / "history.csv"
    @property
    def history_png(self) -> Path: return self.path / "history.png"
    @property
    def confusion_png(self) -> Path: return self.path / "confusion_matrix.png"
    @property
    def artifacts_dir(self) -> Path: return self.path / "artifacts"
    @property
    def artifacts_index(self) -> Path: return self.path / "artifacts" / "artifacts.json"
    @property
    def results(self) -> Path: return self.path / "results.json"
    @property
    def results_csv(self) -> Path: return self.path / "results.csv"
    @property
    def report_md(self) -> Path: return self.path / "report.md"
    @property
    def report_html(self) -> Path: return self.path / "report.html"
    @property
    def pareto_png(self) -> Path: return self.path / "pareto.png"
    @property
    def manifest(self) -> Path: return self.path / "manifest.json"
    @property
    def stages(self) -> Path: return self.path / "stages.json"
    @property
    def scratch(self) -> Path:
        """Temporary work of the command running now (converter work folders); swept by the next command."""
        return self.path / ".edgepipe-tmp"

    def read_labels(self) -> list[str]:
        return self.labels.read_text(encoding="utf-8").splitlines()

    # opening, locking, sweeping ----------------------------------------------------
    def prepare(self) -> bool:
        """Make sure the run directory can be used, creating it (with its marker) if needed; True if created.

        A file at the path, or a folder that holds anything and is not an edgepipe run directory, is
        refused: edgepipe never writes a run among a user's own files.
        """
        if self.path.exists() and not self.path.is_dir():
            raise EdgepipeError(f"'{self.path}' is a file, not a run directory", "Choose another --output.")
        created = not self.path.exists()
        if not created and any(self.path.iterdir()) and not is_run_directory(self.path):
            raise EdgepipeError(f"'{self.path}' is not empty and is not an edgepipe run directory, so edgepipe will "
                                "not write a run into it", "Choose a new or empty folder for --output.")
        make_folder(self.path)
        if not (self.path / MARKER).exists():
            write_json(self.path / MARKER, {"edgepipe": __version__, "created": now_iso()})
        return created

    @contextlib.contextmanager
    def lock(self, echo=lambda line: None) -> Iterator[None]:
        """Hold the run directory's lock for one command: a second command here gets a clear error (exit 2)
        naming the process that holds it; a lock left by a process that died is taken over."""
        import fcntl

        path = self.path / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise EdgepipeError(
                f"{self.path} is in use by another edgepipe command (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')} since {holder.get('since', '?')}: {holder.get('command', '?')})",
                "Wait for it to finish, or use another --output.") from None
        stale = _lock_holder(fd)
        if stale.get("pid"):
            echo(f"took over the lock of {self.path} left by pid {stale['pid']} on {stale.get('host')} "
                 f"(since {stale.get('since')}), which no longer holds it")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": platform.node(), "since": now_iso(),
                                  "command": " ".join(sys.argv[:3])}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def sweep(self) -> list[str]:
        """Remove what an earlier, killed command left: the scratch folder and temporary files; returns them."""
        removed = []
        if self.scratch.exists():
            shutil.rmtree(self.scratch, ignore_errors=True)
            removed.append(self.scratch.name + "/")
        for path in sorted(self.path.rglob(".*")):
            if LEFTOVER.match(path.name) and path.exists():
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                removed.append(str(path.relative_to(self.path)))
        return removed

    # stage records ----------------------------------------------------------------
    def stage_records(self) -> dict[str, Any]:
        if not self.stages.exists():
            return {}
        try:
            records = read_json(self.stages)
            if not isinstance(records, dict):
                raise ValueError("not a mapping")
            return records
        except ValueError:
            if self.reset_damaged_records:
                return {}
            raise EdgepipeError(f"{self.stages} is damaged (not the JSON edgepipe wrote)",
                                "Rerun with --force to redo every stage and rewrite it.") from None

    def stage_record(self, stage: str) -> Optional[dict[str, Any]]:
        return self.stage_records().get(stage)

    def record_stage(self, stage: str, inputs_digest: str, seconds: float, outputs: list[Path]) -> None:
        records = self.stage_records()
        records[stage] = {
            "inputs_sha256": inputs_digest,
            "finished": now_iso(),
            "seconds": round(seconds, 3),
            "outputs": {str(p.relative_to(self.path)): sha256_file(p) for p in outputs if p.exists()},
        }
        write_json(self.stages, records)

    def output_changes(self, stage: str) -> Optional[list[str]]:
        """What happened to a stage's recorded outputs since it wrote them (empty: intact); None when the
        stage has no record."""
        record = self.stage_record(stage)
        if not record:
            return None
        changes = []
        for rel, digest in record.get("outputs", {}).items():
            path = self.path / rel
            if not path.is_file():
                changes.append(f"{rel} is missing")
            elif sha256_file(path) != digest:
                changes.append(f"{rel} changed")
        return changes

    def outputs_intact(self, stage: str) -> bool:
        """True when every output the stage recorded still exists with the recorded digest."""
        return self.output_changes(stage) == []

    def verify(self, stages: tuple[str, ...]) -> Verification:
        """Every file against the manifest and the stage records: what changed, went missing, or was never recorded."""
        result = Verification()
        manifest = read_json(self.manifest).get("files", {}) if self.manifest.is_file() else {}
        recorded = dict(manifest)
        for name in stages:
            changes = self.output_changes(name)
            if changes is None:
                continue
            result.stages_intact[name] = not changes
            for rel, digest in self.stage_record(name).get("outputs", {}).items():
                recorded.setdefault(rel, {"sha256": digest})
        for rel, entry in sorted(recorded.items()):
            path = self.path / rel
            if not path.is_file():
                result.missing.append(rel)
            elif sha256_file(path) != entry["sha256"]:
                result.changed.append(rel)
        for path in sorted(self.path.rglob("*")):
            parts = path.relative_to(self.path).parts
            if path.is_file() and parts[0] != "cache" and not any(p.startswith(".") for p in parts) \
                    and str(path.relative_to(self.path)) not in recorded and path != self.manifest:
                result.unrecorded.append(str(path.relative_to(self.path)))
        return result

    # manifest ------------------------------------------------------------------------
    def write_manifest(self, config: dict[str, Any]) -> None:
        """sha256 of every file of the run (not the feature cache, not edgepipe's hidden lock and scratch files)."""
        files = {}
        for path in sorted(self.path.rglob("*")):
            parts = path.relative_to(self.path).parts
            if path.is_file() and path != self.manifest and parts[0] != "cache" and not any(p.startswith(".") for p in parts):
                files[str(path.relative_to(self.path))] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        write_json(self.manifest, {
            "written": now_iso(),
            "config": config,
            "versions": library_versions(),
            "files": files,
        })


def _lock_holder(fd: int) -> dict[str, Any]:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}
