"""The run directory: where every stage reads and writes, plus stage records, the manifest and the lock.

A run directory is marked as one (``.edgepipe-run``) when edgepipe creates it, and
only that marker makes a folder one, so edgepipe never writes a run into a folder
that holds anything else. Every file edgepipe reads, writes, hashes or locks in it
is named through :meth:`RunDir.file`, which refuses a name that leads outside the
folder or through a symbolic link. One command at a time may work in it
(``.edgepipe-lock``); temporary work goes to ``.edgepipe-tmp`` and is swept, with
any temporary file a killed command left, by the next command.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import platform
import re
import shutil
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepipe.device import library_versions
from edgepipe.errors import EdgepipeError
from edgepipe.fileio import escapes, inside, make_folder, read_json, sha256_file, write_error, write_json
from edgepipe.versions import __version__

MARKER = ".edgepipe-run"
LOCK = ".edgepipe-lock"
SCRATCH = ".edgepipe-tmp"
#: temporary names atomic_path gives: ".<final name>.<8 random characters>.tmp[suffix]"
LEFTOVER = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


def is_run_directory(path: Path) -> bool:
    """Whether edgepipe made ``path``: it holds edgepipe's marker as a file of its own (not a symbolic link).
    Nothing else counts: a folder that merely holds a stages.json or a config.yaml is the user's."""
    try:
        return stat.S_ISREG(os.lstat(Path(path) / MARKER).st_mode)
    except OSError:
        return False


@dataclass
class Integrity:
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
    def config(self) -> Path:
        return self.file("config.yaml")

    @property
    def dataset_index(self) -> Path:
        return self.file("dataset.json")

    @property
    def labels(self) -> Path:
        return self.file("labels.txt")

    @property
    def model_initial(self) -> Path:
        return self.file("model_initial.keras")

    @property
    def build_info(self) -> Path:
        return self.file("build.json")

    @property
    def model(self) -> Path:
        return self.file("model.keras")

    @property
    def backbone_onnx(self) -> Path:
        """A foreign backbone's feature graph (raw pixels in, pooled features out), written by the build stage."""
        return self.file("backbone.onnx")

    @property
    def model_onnx(self) -> Path:
        """The classifier a run on a foreign backbone trains: its graph joined with the new head."""
        return self.file("model.onnx")

    @property
    def training(self) -> Path:
        return self.file("training.json")

    @property
    def history_csv(self) -> Path:
        return self.file("history.csv")

    @property
    def history_png(self) -> Path:
        return self.file("history.png")

    @property
    def confusion_png(self) -> Path:
        return self.file("confusion_matrix.png")

    @property
    def artifacts_dir(self) -> Path:
        return self.file("artifacts")

    @property
    def artifacts_index(self) -> Path:
        return self.file("artifacts", "artifacts.json")

    @property
    def results(self) -> Path:
        return self.file("results.json")

    @property
    def results_csv(self) -> Path:
        return self.file("results.csv")

    @property
    def report_md(self) -> Path:
        return self.file("report.md")

    @property
    def report_html(self) -> Path:
        return self.file("report.html")

    @property
    def pareto_png(self) -> Path:
        return self.file("pareto.png")

    @property
    def manifest(self) -> Path:
        return self.file("manifest.json")

    @property
    def stages(self) -> Path:
        return self.file("stages.json")

    @property
    def scratch(self) -> Path:
        """Temporary work of the command running now (converter work folders); swept by the next command."""
        return self.file(SCRATCH)

    def file(self, *parts: str | os.PathLike) -> Path:
        """The path of ``parts`` (e.g. "artifacts", a recorded name) in the run directory, refused with
        EdgepipeError when it leads outside it or passes through a symbolic link (see fileio.inside)."""
        return inside(self.path, Path(*parts))

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
            raise EdgepipeError(
                f"'{self.path}' is not empty and is not an edgepipe run directory (it has no "
                f"{MARKER} file), so edgepipe will not write a run into it",
                "Choose a new or empty folder for --output.",
            )
        make_folder(self.path)
        if not is_run_directory(self.path):
            write_json(self.file(MARKER), {"edgepipe": __version__, "created": now_iso()})
        return created

    @contextlib.contextmanager
    def lock(self, echo=lambda line: None) -> Iterator[None]:
        """Hold the run directory's lock for one command: a second command here gets a clear error (exit 2)
        naming the process that holds it; a lock left by a process that died is taken over."""
        import fcntl

        fd = self._open_lock()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise EdgepipeError(
                f"{self.path} is in use by another edgepipe command (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')} since {holder.get('since', '?')}: {holder.get('command', '?')})",
                "Wait for it to finish, or use another --output.",
            ) from None
        stale = _lock_holder(fd)
        if stale.get("pid"):
            echo(
                f"took over the lock of {self.path} left by pid {stale['pid']} on {stale.get('host')} "
                f"(since {stale.get('since')}), which no longer holds it"
            )
        try:
            os.ftruncate(fd, 0)
            os.pwrite(
                fd,
                json.dumps(
                    {"pid": os.getpid(), "host": platform.node(), "since": now_iso(), "command": " ".join(sys.argv[:3])}
                ).encode(),
                0,
            )
        except OSError as exc:
            os.close(fd)
            raise write_error(self.path / LOCK, exc) from None
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _open_lock(self) -> int:
        """The lock file's descriptor, opened without following a link: a symbolic or hard link standing at
        its name (to a user's file) is refused, never truncated or written."""
        path = self.path / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                inside(self.path, LOCK)  # raises: a symbolic link
            raise write_error(path, exc) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            raise EdgepipeError(
                f"'{path}' is not the lock file edgepipe made (it is linked to another file)",
                "Remove it yourself; edgepipe never links its lock file to another.",
            )
        return fd

    def sweep(self) -> list[str]:
        """Remove what an earlier, killed command left: the scratch folder and temporary files; returns them.
        A symbolic link at such a name is removed as a link: what it points at is never touched."""
        removed = []
        for folder, dirs, files in os.walk(self.path):
            for name in sorted(dirs + files):
                path = Path(folder) / name
                if LEFTOVER.match(name) or (name == SCRATCH and path.parent == self.path):
                    _remove(path)
                    removed.append(str(path.relative_to(self.path)) + ("/" if name in dirs else ""))
            dirs[:] = [d for d in dirs if os.path.lexists(Path(folder) / d)]
        return removed

    def _files(self) -> Iterator[tuple[str, Path]]:
        """(name relative to the run directory, path) of every regular file of the run, in sorted order: not
        the feature cache, not edgepipe's hidden marker, lock, scratch and temporary files, and no symbolic
        link (never followed: what it points at is not the run's)."""
        found = []
        for folder, dirs, files in os.walk(self.path):
            top = Path(folder) == self.path
            dirs[:] = [d for d in dirs if not d.startswith(".") and not (top and d == "cache")]
            for name in files:
                path = Path(folder) / name
                if not name.startswith(".") and stat.S_ISREG(os.lstat(path).st_mode):
                    found.append((str(path.relative_to(self.path)), path))
        return iter(sorted(found))

    # stage records ----------------------------------------------------------------
    def stage_records(self) -> dict[str, Any]:
        """The stage records (stages.json); refused as damaged when they are not the JSON edgepipe writes or
        name an output outside the run directory (with --force: started afresh)."""
        if not self.stages.exists():
            return {}
        try:
            records = read_json(self.stages)
            _check_records(records)
            return records
        except ValueError as exc:
            if self.reset_damaged_records:
                return {}
            raise EdgepipeError(
                f"{self.stages} is damaged ({exc})", "Rerun with --force to redo every stage and rewrite it."
            ) from None

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        return self.stage_records().get(stage)

    def record_stage(self, stage: str, inputs_digest: str, seconds: float, outputs: list[Path]) -> None:
        """Record a finished stage: its inputs' digest, and the digest of each output that exists (read only
        inside the run directory, never through a link)."""
        records = self.stage_records()
        paths = {self._name(p): self.file(self._name(p)) for p in outputs}
        records[stage] = {
            "inputs_sha256": inputs_digest,
            "finished": now_iso(),
            "seconds": round(seconds, 3),
            "outputs": {rel: sha256_file(path) for rel, path in paths.items() if path.exists()},
        }
        write_json(self.stages, records)

    def _name(self, path: Path) -> str:
        """``path``'s name relative to the run directory; EdgepipeError when it is elsewhere."""
        try:
            return str(Path(path).relative_to(self.path))
        except ValueError:
            raise EdgepipeError(
                f"'{path}' is outside the run directory {self.path}",
                "edgepipe reads and writes only inside the run directory.",
            ) from None

    def _digest_changes(self, recorded: dict[str, str]) -> tuple[list[str], list[str]]:
        """(missing, changed) names among ``recorded`` (name: sha256), each read through :meth:`file`."""
        missing, changed = [], []
        for rel, digest in recorded.items():
            path = self.file(rel)
            if not path.is_file():
                missing.append(rel)
            elif sha256_file(path) != digest:
                changed.append(rel)
        return missing, changed

    def output_changes(self, stage: str) -> list[str] | None:
        """What happened to a stage's recorded outputs since it wrote them (empty: intact); None when the
        stage has no record."""
        record = self.stage_record(stage)
        if not record:
            return None
        missing, changed = self._digest_changes(record.get("outputs", {}))
        return [f"{rel} is missing" for rel in missing] + [f"{rel} changed" for rel in changed]

    def check_integrity(self, stages: tuple[str, ...]) -> Integrity:
        """Every file against the manifest and the stage records: what changed, went missing, or was never
        recorded. Records or a manifest naming a file outside the run directory, or a link in the way, are
        an EdgepipeError: nothing outside is ever read."""
        result = Integrity()
        recorded = {rel: entry["sha256"] for rel, entry in self._manifest_files().items()}
        for name in stages:
            changes = self.output_changes(name)
            if changes is None:
                continue
            result.stages_intact[name] = not changes
            for rel, digest in self.stage_record(name).get("outputs", {}).items():
                recorded.setdefault(rel, digest)
        result.missing, result.changed = self._digest_changes(dict(sorted(recorded.items())))
        result.unrecorded = [rel for rel, path in self._files() if rel not in recorded and rel != "manifest.json"]
        return result

    def _manifest_files(self) -> dict[str, Any]:
        if not self.manifest.is_file():
            return {}
        files = read_json(self.manifest).get("files", {})
        outside = [rel for rel in files if escapes(rel)]
        if outside:
            raise EdgepipeError(
                f"{self.manifest} is damaged (it names '{outside[0]}', outside the run directory)",
                "Rerun any stage to rewrite it.",
            )
        return files

    # manifest ------------------------------------------------------------------------
    def write_manifest(self, config: dict[str, Any]) -> None:
        """sha256 of every file of the run (not the feature cache, not edgepipe's hidden lock and scratch files,
        no symbolic link)."""
        files = {
            rel: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
            for rel, path in self._files()
            if rel != "manifest.json"
        }
        write_json(
            self.manifest,
            {
                "written": now_iso(),
                "config": config,
                "versions": library_versions(),
                "files": files,
            },
        )


def _check_records(records: Any) -> None:
    """ValueError (saying what is wrong) unless ``records`` are stage records as edgepipe writes them, each
    output named inside the run directory."""
    if not isinstance(records, dict) or not all(isinstance(r, dict) for r in records.values()):
        raise ValueError("not the JSON edgepipe wrote")
    for record in records.values():
        outputs = record.get("outputs", {})
        if not isinstance(outputs, dict):
            raise ValueError("not the JSON edgepipe wrote")
        outside = [rel for rel in outputs if escapes(rel)]
        if outside:
            raise ValueError(f"it names '{outside[0]}', outside the run directory")


def _remove(path: Path) -> None:
    """Remove a file, a folder, or a symbolic link as a link (never what it points at)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _lock_holder(fd: int) -> dict[str, Any]:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}
