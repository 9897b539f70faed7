"""Run stages in order against one run directory, skipping those whose inputs have not changed."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Optional

from edgepipe.architectures import check_weights_request, get_architecture
from edgepipe.architectures.classifier import resolve_alpha
from edgepipe.config import RunConfig, to_yaml
from edgepipe.data import check_path
from edgepipe.errors import EdgepipeError
from edgepipe.fileio import sha256_value, write_text
from edgepipe.pipeline import bench, build, export, report, train
from edgepipe.pipeline.rundir import RunDir
from edgepipe.pipeline.stage import Stage

STAGES: dict[str, Stage] = {s.name: s for s in (build.STAGE, train.STAGE, export.STAGE, bench.STAGE, report.STAGE)}


def preflight(config: RunConfig) -> None:
    """Cheap checks of everything knowable before work starts (no directory is created)."""
    m = config.model
    if m.path:
        from edgepipe.architectures.loading import check_model_path

        check_model_path(m.path)
    else:
        arch = get_architecture(m.arch)
        alpha = resolve_alpha(arch, m.alpha)
        if not config.pretrain:
            check_weights_request(arch, m.weights, m.input_size, m.channels, alpha)
    check_path(config.data.path, "data.path")
    if config.pretrain:
        check_path(config.pretrain.data.path, "pretrain.data.path")


def run_stages(config: RunConfig, names: list[str], echo: Callable[[str], None], force: bool = False,
               run_dir: Optional[Path] = None) -> RunDir:
    """Run the named stages in pipeline order; returns the run directory."""
    preflight(config)
    from edgepipe.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    run = RunDir(run_dir or config.run_dir)
    created = not run.path.exists()
    completed = 0
    try:
        for name in [n for n in STAGES if n in names]:
            stage = STAGES[name]
            for needed in stage.requires:
                if needed not in names and not run.outputs_intact(needed):
                    raise EdgepipeError(
                        f"stage '{name}' needs the outputs of '{needed}', which {run.path} does not have",
                        f"Run 'edgepipe {needed}' (or 'edgepipe run') with --output {run.path} first.",
                    )
            run.path.mkdir(parents=True, exist_ok=True)
            write_text(run.config, to_yaml(config))
            digest = sha256_value(stage.inputs(config, run))
            record = run.stage_record(name)
            if not force and record and record["inputs_sha256"] == digest and run.outputs_intact(name):
                echo(f"[{name}] inputs unchanged since {record['finished']}; skipped (use --force to rerun)")
                completed += 1
                continue
            echo(f"[{name}] {stage.help}")
            start = time.perf_counter()
            stage.run(config, run, echo)
            run.record_stage(name, digest, time.perf_counter() - start, stage.outputs(run))
            run.write_manifest(config.to_dict())
            completed += 1
    except BaseException:
        if created and completed == 0 and run.path.exists():
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    return run
