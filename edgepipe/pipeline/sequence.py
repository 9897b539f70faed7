"""Run stages in order against one run directory, skipping those whose inputs have not changed."""

from __future__ import annotations

import contextlib
import gc
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from edgepipe.architectures import check_weights_request, get_architecture
from edgepipe.architectures.classifier import resolve_alpha
from edgepipe.config import RunConfig, to_yaml
from edgepipe.data import check_path
from edgepipe.errors import EdgepipeError
from edgepipe.fileio import sha256_value, write_text
from edgepipe.pipeline import bench, build, export, foreign, report, train
from edgepipe.pipeline.rundir import RunDir
from edgepipe.pipeline.stage import Stage

STAGES: dict[str, Stage] = {s.name: s for s in (build.STAGE, train.STAGE, export.STAGE, bench.STAGE, report.STAGE)}


def preflight(config: RunConfig) -> None:
    """Cheap checks of everything knowable before work starts (no directory is created or changed)."""
    m = config.model
    if foreign.is_foreign(config):
        foreign.read_backbone(config)  # the file, its preprocessing and the run's settings, all checked
    elif m.path:
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


def run_stages(
    config: RunConfig, names: list[str], echo: Callable[[str], None], force: bool = False, run_dir: Path | None = None
) -> RunDir:
    """Run the named stages in pipeline order, holding the run directory's lock; returns the run directory.

    A worker other than the chief of a multi-worker cluster (TF_CONFIG) takes part in training but
    writes nothing to the run directory and takes no lock: worker 0 writes it.
    """
    from edgepipe.training.controls import is_chief

    preflight(config)
    from edgepipe.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    run = RunDir(run_dir or config.run_dir, reset_damaged_records=force)
    if not is_chief():
        return _run_as_worker(config, run, names, echo)
    created = run.prepare()
    completed = 0
    try:
        with run.lock(echo), only_new_objects_collected():
            for line in run.sweep():
                echo(f"removed {line}, left in {run.path} by an interrupted command")
            try:
                for name in [n for n in STAGES if n in names]:
                    completed += _run_stage(config, run, name, names, echo, force)
            finally:
                shutil.rmtree(run.scratch, ignore_errors=True)  # this command's own temporary work
    except BaseException:
        if created and completed == 0 and run.path.exists():
            shutil.rmtree(run.path, ignore_errors=True)  # a folder this command created and filled with nothing
        raise
    return run


def _check_requirements(run: RunDir, name: str, names: list[str]) -> None:
    for needed in STAGES[name].requires:
        if needed in names:
            continue
        changes = run.output_changes(needed)
        if changes is None:
            raise EdgepipeError(
                f"stage '{name}' needs the outputs of '{needed}', which {run.path} does not have",
                f"Run 'edgepipe {needed}' (or 'edgepipe run') with --output {run.path} first.",
            )
        if changes:
            raise EdgepipeError(
                f"stage '{name}' needs the outputs of '{needed}', and in {run.path} "
                + ", ".join(changes[:3])
                + (" ..." if len(changes) > 3 else ""),
                f"Rerun 'edgepipe {needed}' (or 'edgepipe run') with --output {run.path}.",
            )


def _run_stage(
    config: RunConfig, run: RunDir, name: str, names: list[str], echo: Callable[[str], None], force: bool
) -> int:
    """Run one stage, or skip it when its inputs are unchanged and its recorded outputs intact."""
    stage = STAGES[name]
    _check_requirements(run, name, names)
    write_text(run.config, to_yaml(config))
    digest = sha256_value(stage.inputs(config, run))
    record = run.stage_record(name)
    changes = run.output_changes(name)
    if not force and record and record["inputs_sha256"] == digest and changes == []:
        echo(f"[{name}] inputs unchanged since {record['finished']}; skipped (use --force to rerun)")
        return 1
    if record and changes:
        echo(
            f"[{name}] rerunning: "
            + ", ".join(changes[:3])
            + (" ..." if len(changes) > 3 else "")
            + " since it last ran"
        )
    echo(f"[{name}] {stage.help}")
    start = time.perf_counter()
    fresh_random_state(config.seed)
    stage.run(config, run, echo)
    run.record_stage(name, digest, time.perf_counter() - start, stage.outputs(run))
    run.write_manifest(config.to_dict())
    return 1


@contextlib.contextmanager
def only_new_objects_collected() -> Iterator[None]:
    """Within this block, garbage collections (every Keras clear_session between stages and networks runs one)
    look only at objects made inside it: the hundreds of thousands TensorFlow and Keras create when imported
    (and whatever the caller holds) are set aside (``gc.freeze``) after one last collection, and handed back on
    leaving, so nothing stays uncollectable. A collection on a loaded TensorFlow heap then takes milliseconds,
    not 0.2-0.3 s. Inside another such block (a search's winner run), or when the caller froze objects of its
    own, it changes nothing (and hands back nothing it did not set aside)."""
    from edgepipe.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras  # noqa: F401 (its modules' objects are among those set aside)

    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def fresh_random_state(seed: int) -> None:
    """Start each stage from a clean Keras session and the run's seed, so a stage gives the same result
    whether earlier stages ran in this process or in another one (a resumed or split run). Without it,
    layers loaded in a later stage draw their seeds from a global generator that earlier stages advanced."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)


def _run_as_worker(config: RunConfig, run: RunDir, names: list[str], echo: Callable[[str], None]) -> RunDir:
    """A non-chief worker runs the stages that train (reading the run directory) and writes nothing."""
    for name in [n for n in STAGES if n in names]:
        _check_requirements(run, name, names)
        if STAGES[name].distributed:
            fresh_random_state(config.seed)
            STAGES[name].run(config, run, echo)
    return run
