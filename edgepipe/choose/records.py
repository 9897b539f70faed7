"""search.json: a search's record of every step, written as each one ends, so a killed search resumes there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepipe.errors import EdgepipeError


class Records:
    """One record per step (a candidate's latency, its accuracy, an artifact's export), keyed by step and holding
    the sha256 of the step's inputs: a step is reused only when its inputs are unchanged. ``force`` starts
    afresh (the file is replaced at the first record written)."""

    NAME = "search.json"
    SCHEMA = "edgepipe.search/1"

    def __init__(self, path: Path, force: bool = False):
        self.path = Path(path)
        self.data: dict[str, Any] = {"schema": self.SCHEMA, "settings": None, "records": {}, "answer": None}
        if self.path.exists() and not force:
            self.data = self._read()
        self.reused: list[str] = []

    def _read(self) -> dict[str, Any]:
        from edgepipe.fileio import read_json

        try:
            data = read_json(self.path)
            if (
                not isinstance(data, dict)
                or data.get("schema") != self.SCHEMA
                or not isinstance(data.get("records"), dict)
            ):
                raise ValueError("not a search record")
        except (ValueError, EdgepipeError):
            raise EdgepipeError(
                f"{self.path} is damaged (not the search record edgepipe wrote)",
                "Rerun with --force to redo the search and rewrite it.",
            ) from None
        return data

    def get(self, key: str, digest: str) -> dict[str, Any] | None:
        """The step's record when it was made from the same inputs; None otherwise."""
        record = self.data["records"].get(key)
        if record is None or record.get("inputs_sha256") != digest:
            return None
        self.reused.append(key)
        return record

    def put(self, key: str, digest: str, payload: dict[str, Any]) -> None:
        from edgepipe.pipeline.rundir import now_iso

        self.data["records"][key] = {"inputs_sha256": digest, "finished": now_iso(), **payload}
        self._write()

    def describe(self, settings: dict[str, Any]) -> None:
        self.data["settings"] = settings

    def answer(self, answer: dict[str, Any]) -> None:
        self.data["answer"] = answer
        self._write()

    def _write(self) -> None:
        from edgepipe.fileio import write_json

        write_json(self.path, self.data)
