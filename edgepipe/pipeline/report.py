"""Stage 5: write the report from results.json."""

from __future__ import annotations

from edgepipe.config import RunConfig
from edgepipe.fileio import read_json, write_text
from edgepipe.pipeline.rundir import RunDir
from edgepipe.pipeline.stage import Echo, Stage, file_digest
from edgepipe.report import render_markdown


def _inputs(config: RunConfig, run: RunDir) -> dict:
    return {"results": file_digest(run.results)}


def _outputs(run: RunDir) -> list:
    return [run.report_md]


def _run(config: RunConfig, run: RunDir, echo: Echo) -> None:
    write_text(run.report_md, render_markdown(read_json(run.results)))
    echo(f"report: {run.report_md}")


STAGE = Stage("report", "Write report.md from the measured results.", _inputs, _outputs, _run, requires=("bench",))
