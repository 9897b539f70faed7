"""What a stage is: a named step with declared inputs (digested) and outputs in the run directory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.config import RunConfig
from edgepipe.pipeline.rundir import RunDir
from edgepipe.progress import Echo


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    #: JSON-able description of everything the stage's result depends on
    inputs: Callable[[RunConfig, RunDir], dict[str, Any]]
    #: files the stage writes (recorded with their digests)
    outputs: Callable[[RunDir], list[Path]]
    run: Callable[[RunConfig, RunDir, Echo], None]
    #: stage whose outputs this one reads
    requires: tuple[str, ...] = ()
    #: every worker of a multi-worker cluster runs it (training); the others run on the chief alone
    distributed: bool = False


def file_digest(path: Path) -> str | None:
    from edgepipe.fileio import sha256_file

    return sha256_file(path) if path.exists() else None
