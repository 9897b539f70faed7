"""Stage 5: write the reports (report.md, report.html with its plots, pareto.png) from results.json."""

from __future__ import annotations

from edgepipe.config import RunConfig
from edgepipe.pipeline.rundir import RunDir
from edgepipe.pipeline.stage import Echo, Stage, file_digest
from edgepipe.report import write_reports
from edgepipe.results import read_results


def _inputs(config: RunConfig, run: RunDir) -> dict:
    return {
        "results": file_digest(run.results),
        "history": file_digest(run.history_png),
        "confusion": file_digest(run.confusion_png),
        "budget": config.export.accuracy_budget_pp,
    }


def _outputs(run: RunDir) -> list:
    return [run.report_md, run.report_html, run.pareto_png]


def _run(config: RunConfig, run: RunDir, echo: Echo) -> None:
    results = read_results(run.results)
    for line in write_reports(results, run.path, config.export.accuracy_budget_pp):
        echo(line)


STAGE = Stage(
    "report",
    "Write report.md, report.html and pareto.png from the measured results.",
    _inputs,
    _outputs,
    _run,
    requires=("bench",),
)
