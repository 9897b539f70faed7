"""The run directory: where every stage reads and writes, plus stage records and the manifest."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from edgepipe.fileio import read_json, sha256_file, write_json
from edgepipe.versions import library_versions


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class RunDir:
    path: Path

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

    # stage records ----------------------------------------------------------------
    def stage_records(self) -> dict[str, Any]:
        return read_json(self.stages) if self.stages.exists() else {}

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

    def outputs_intact(self, stage: str) -> bool:
        """True when every output the stage recorded still exists with the recorded digest."""
        record = self.stage_record(stage)
        if not record:
            return False
        for rel, digest in record.get("outputs", {}).items():
            path = self.path / rel
            if not path.exists() or sha256_file(path) != digest:
                return False
        return True

    # manifest ------------------------------------------------------------------------
    def write_manifest(self, config: dict[str, Any]) -> None:
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
