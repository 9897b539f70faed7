"""The edgepipe command line: parse options, call one function of the Python API (edgepipe.api), print the outcome.

Exit codes: 0 success; 1 a check or threshold failed (compare's gates, an artifact that
could not be measured); 2 bad input (one ``error:`` line), a full disk or a read-only output
included; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM). Interrupted or terminated, a
command prints "interrupted", releases its run directory's lock and leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgepipe.config import BENCH_DEFAULTS
from edgepipe.errors import EdgepipeError
from edgepipe.versions import __version__

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, so it unwinds exactly as Ctrl-C does (locks released,
    temporaries removed) instead of the process dying on the spot."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_unwinds() -> Any:
    """While the command runs, SIGTERM raises Terminated (in the main thread; elsewhere it is left alone)."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (an embedding application): its own handling stays
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class EdgepipeGroup(click.Group):
    """Turns EdgepipeError into one 'error:' line and exit code 2 (a traceback only with --debug); a write
    the output refuses (full disk, quota, read-only) that no write site caught becomes the same; Ctrl-C and
    SIGTERM print "interrupted" and exit 130 and 143."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _sigterm_unwinds():
                return super().invoke(ctx)
        except (EdgepipeError, OSError) as exc:
            error = exc if isinstance(exc, EdgepipeError) else _refused_write(exc)
            if error is None:
                raise  # only a refused write is the user's place to fix; anything else is a bug to show
            if ctx.meta.get("edgepipe.debug"):
                raise
            click.echo(f"error: {error}", err=True)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt as exc:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED)


def _refused_write(exc: OSError) -> EdgepipeError | None:
    from edgepipe import api

    return api.refused_write(exc)


def _split_list(ctx, param, value):
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise click.BadParameter(f"expected a comma-separated list, got {value!r}")
    return items


def _int_list(ctx, param, value):
    items = _split_list(ctx, param, value)
    if items is None:
        return None
    try:
        numbers = tuple(int(v) for v in items)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated whole numbers, got {value!r}") from None
    if any(n < 1 for n in numbers):
        raise click.BadParameter(f"every value must be at least 1, got {value!r}")
    return numbers


POSITIVE = click.IntRange(min=1)


def ssh_options(job: str) -> Callable[[Callable], Callable]:
    """The options every command with --remote shares: the SSH configuration file, the edgepipe command and the
    folder on the remote machine (``job`` says what one folder holds)."""
    options = [
        click.option(
            "--ssh-config",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            metavar="FILE",
            help="With --remote: use this SSH configuration file instead of ~/.ssh/config.",
        ),
        click.option(
            "--remote-edgepipe",
            default="edgepipe",
            show_default=True,
            metavar="CMD",
            help="With --remote: the edgepipe command on the remote machine.",
        ),
        click.option(
            "--remote-dir",
            default="edgepipe-bench",
            show_default=True,
            metavar="DIR",
            help=f"With --remote: remote folder for {job} (a fresh subfolder, removed afterwards).",
        ),
    ]

    def apply(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


PIXEL_FLAGS = ("layout", "channels", "scale", "mean", "std")


def pixel_options(fn: Callable) -> Callable:
    """The flags that declare an ONNX or .pt2 model's preprocessing (model.preprocessing in a config)."""
    options = [
        click.option(
            "--layout",
            type=click.Choice(["nchw", "nhwc"]),
            help="With an ONNX or .pt2 model: its input layout (default: read from the input's shape).",
        ),
        click.option(
            "--channels",
            type=click.Choice(["rgb", "bgr"]),
            help="With an ONNX or .pt2 model: the channel order it was trained on.",
        ),
        click.option(
            "--scale",
            type=float,
            metavar="X",
            help="With an ONNX or .pt2 model: raw pixels are divided by this first (e.g. 255).",
        ),
        click.option(
            "--mean",
            callback=_split_list,
            metavar="A,B,C",
            help="With an ONNX or .pt2 model: subtracted after scaling, per channel.",
        ),
        click.option(
            "--std",
            callback=_split_list,
            metavar="A,B,C",
            help="With an ONNX or .pt2 model: then divided by, per channel.",
        ),
        click.option(
            "--preprocessing",
            "preprocessing_name",
            metavar="NAME",
            help="With an ONNX or .pt2 model: a named transform "
            "(torch, tf, caffe, lite, unit, none); the flags above override its keys.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _declared_pixels(kwargs: dict[str, Any]) -> Any:
    """The preprocessing the pixel flags declare (removed from ``kwargs``), as a PixelTransform; None when none is."""
    flags = {key: kwargs.pop(key, None) for key in PIXEL_FLAGS}
    named = kwargs.pop("preprocessing_name", None)
    if named is None and all(v is None for v in flags.values()):
        return None
    return _pixel_transform(named, flags)


def timing_options(
    when: str, per: str = "", warmup: bool = True, defaults: bool = True, decided: str | None = None
) -> Callable:
    """The options every command that times artifacts shares: at least --min-iterations timed calls lasting at least
    --min-duration seconds, and (``warmup``) --warmup calls and --warmup-time seconds of warm-up before them.
    ``when`` starts the first option's help ("With artifacts: "), ``per`` says what the calls are counted per;
    without ``defaults`` an option left out is None (the configuration's bench section decides, or what
    ``decided`` says, e.g. " (default: ...)")."""

    def default(value: Any) -> dict[str, Any]:
        return {"default": value, "show_default": True} if defaults else {}

    config = "" if defaults else (decided or " (default: the config's bench.{key})")
    options = []
    if warmup:
        options += [
            click.option(
                "--warmup",
                type=click.IntRange(min=0),
                **default(BENCH_DEFAULTS.warmup),
                help=f"{when}at least this many warm-up calls{config.format(key='warmup')}...",
            ),
            click.option(
                "--warmup-time",
                type=click.FloatRange(min=0),
                **default(BENCH_DEFAULTS.warmup_s),
                help="...and this many seconds of warm-up.",
            ),
        ]
    calls = f"{when}at least this many timed calls{per}"
    options += [
        click.option(
            "--min-iterations",
            type=POSITIVE,
            metavar="N",
            **default(BENCH_DEFAULTS.min_iterations),
            help=calls[:1].upper() + calls[1:] + config.format(key="min_iterations") + "...",
        ),
        click.option(
            "--min-duration",
            type=click.FloatRange(min=0),
            metavar="S",
            **default(BENCH_DEFAULTS.min_duration_s),
            help="...lasting at least this many seconds.",
        ),
    ]

    def apply(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def run_options(fn: Callable) -> Callable:
    """Options shared by 'run' and the stage commands; each overrides one config key."""
    options = [
        click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path)),
        click.option(
            "--data", metavar="DIR", help="Image folder (one subfolder per class), builtin:NAME or tfds:NAME."
        ),
        click.option("--arch", metavar="NAME", help="Architecture (see 'edgepipe models')."),
        click.option("--alpha", type=float, help="Width multiplier, for families that have one."),
        click.option("--weights", metavar="imagenet|none|PATH", help="Initial backbone weights."),
        click.option(
            "--model",
            metavar="PATH",
            help="Start from your own saved model (.keras or .h5), or train a new head on a backbone in ONNX "
            "(declare its preprocessing with the flags below).",
        ),
        click.option(
            "--unsafe-load",
            is_flag=True,
            help="Allow --model files whose loading runs arbitrary code (trusted files only; never read from a config file).",
        ),
        click.option("--input-size", type=POSITIVE, metavar="N", help="Square input size in pixels."),
        click.option("--strategy", metavar="NAME", help="Transfer-learning strategy (e.g. feature-extraction)."),
        click.option("--epochs", type=POSITIVE, metavar="N", help="Training epochs."),
        click.option(
            "--formats", callback=_split_list, metavar="A,B,C", help="Export formats (see 'edgepipe formats'), or all."
        ),
        click.option("--output", metavar="DIR", help="Run directory (default runs/<name>)."),
        click.option("--name", metavar="NAME", help="Run name (run directory runs/<name>)."),
        click.option("--seed", type=click.IntRange(min=0), metavar="N", help="Seed for splits, sampling and training."),
        click.option("--threads", type=POSITIVE, metavar="N", help="Threads per inference engine when benchmarking."),
        click.option("--force", is_flag=True, help="Rerun stages even when their inputs are unchanged."),
    ]

    @functools.wraps(fn)
    def wrapper(**kwargs):
        return fn(**kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _run_stages(stages: list[str] | None, kwargs: dict[str, Any]) -> None:
    from edgepipe import api

    config = kwargs.pop("config")
    force = kwargs.pop("force")
    unsafe = kwargs.pop("unsafe_load", False)
    pixels = _declared_pixels(kwargs)
    if pixels is not None:
        kwargs["preprocessing"] = pixels
    run = api.run(config, stages=stages, force=force, unsafe_load=unsafe, echo=click.echo, **kwargs)
    click.echo(
        f"run directory: {run.path}"
        if api.is_chief()
        else "this worker's part is done; worker 0 writes the run directory"
    )


@click.group(cls=EdgepipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgepipe")
@click.option("--debug", is_flag=True, help="Show tracebacks and engine logs.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Turn a CNN architecture and labelled images into deployable, measured edge models.

    Exit codes: 0 ok, 1 a check or threshold failed, 2 bad input (a full disk or read-only output
    included), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """
    ctx.meta["edgepipe.debug"] = debug
    if debug:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        os.environ["EDGEPIPE_DEBUG"] = "1"


@main.command()
@run_options
@pixel_options
def run(**kwargs: Any) -> None:
    """Run every stage: build, train, export, bench, report.

    With no CONFIG: --data or --model start from the defaults for your own images
    (examples/image-folder.yaml); otherwise the built-in quickstart (offline digits).
    A backbone in ONNX trains a new head on its features (its preprocessing declared):
    edgepipe run --model backbone.onnx --data DIR --input-size 224 --preprocessing torch
    """
    _run_stages(None, kwargs)


def _stage_command(name: str, help_text: str) -> None:
    @run_options
    @pixel_options
    def command(**kwargs: Any) -> None:
        _run_stages([name], kwargs)

    command.__doc__ = f"{help_text}\n\nReads and writes the run directory (--output), so one stage can be rerun."
    main.command(name)(command)


for _name, _help in (
    ("build", "Stage 1: index the dataset and build the network with a new head."),
    ("train", "Stage 2: transfer-learn to the target data and evaluate on the held-out split."),
):
    _stage_command(_name, _help)


@main.command("report")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--output", metavar="PATH", help="Run directory; with --merge, the Markdown file to write (default: print)."
)
@click.option("--name", metavar="NAME", help="Run name (run directory runs/<name>).")
@click.option(
    "--merge",
    "merge_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Merge these results files (from several devices) into one table; repeatable, or list them after CONFIG.",
)
@click.option("--force", is_flag=True, help="Rerun even when inputs are unchanged.")
def report_command(config, output, name, merge_files, force):
    """Stage 5: write report.md, report.html and pareto.png from results.json.

    With --merge, merges results files from several devices into one table:
    edgepipe report --merge pc.json --merge jetson.json  (or: edgepipe report --merge results/*.json)
    """
    from edgepipe import api

    if merge_files:
        files = list(merge_files) + ([config] if config else [])
        text = api.merge(files, output)
        click.echo(f"merged report: {output}" if output else text)
        return
    _run_stages(["report"], {"config": config, "force": force, "output": output, "name": name})


@main.command("bench")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Image folder (one subfolder per class) for accuracy; with a CONFIG, the run's data.",
)
@click.option(
    "--labels",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="With artifacts: labels.txt giving the model's class order (default: the labels the artifact records, "
    "else the folder's sorted names).",
)
@click.option(
    "--threads", callback=_int_list, metavar="N[,N]", help="Threads per engine, e.g. 1,2 (one value with a CONFIG)."
)
@click.option("--batch", callback=_int_list, metavar="N[,N]", help="With artifacts: batch sizes to measure, e.g. 1,8.")
@click.option(
    "--output", metavar="PATH", help="Run directory (with a CONFIG), or the results JSON to write (with artifacts)."
)
@click.option("--name", metavar="NAME", help="Run name (run directory runs/<name>).")
@click.option("--seed", type=click.IntRange(min=0), metavar="N", help="Seed for sampling.")
@timing_options("With artifacts: ")
@click.option("--force", is_flag=True, help="With a CONFIG: rerun even when inputs are unchanged.")
@click.option(
    "--device",
    "devices",
    callback=_split_list,
    metavar="D[,D]",
    help="With artifacts: devices / execution providers, e.g. cpu,cuda,tensorrt (see 'edgepipe formats').",
)
@click.option(
    "--engine",
    "engines",
    callback=_split_list,
    metavar="E[,E]",
    help="With artifacts: also measure with these engines where they read the file (e.g. openvino for .onnx "
    "and .tflite files); each artifact's default engine is always measured.",
)
@click.option(
    "--tune",
    is_flag=True,
    help="Sweep each engine's settings that matter (threads up to the most in --threads, "
    "ONNX Runtime spinning and optimization level, OpenVINO hints and streams) and measure every artifact with "
    "its fastest; records the default and the best (with a CONFIG: bench.tune).",
)
@click.option(
    "--profile",
    "profile_ops",
    is_flag=True,
    help="After timing, profile every measured artifact per op with its "
    "engine's own profiler, in a session of its own (never the timed one); profiles go to the results as "
    "separate records (with a CONFIG: bench.profile).",
)
@click.option(
    "--memory/--no-memory",
    default=True,
    show_default=True,
    help="With artifacts: measure each artifact's memory (after load, peak while running) in a fresh process.",
)
@click.option(
    "--remote",
    metavar="[USER@]HOST",
    help="With artifacts: run the benchmark on that machine over SSH "
    "(OpenSSH, batch mode: keys and known hosts from your SSH configuration) and bring the results back.",
)
@ssh_options("the job")
@click.option(
    "--data-sample",
    type=POSITIVE,
    default=20,
    show_default=True,
    metavar="N",
    help="With --remote: copy at most N images per class of --data.",
)
@click.option("--keep-remote", is_flag=True, help="With --remote: leave the remote job folder in place.")
def bench_command(
    paths,
    data,
    labels,
    threads,
    batch,
    output,
    name,
    seed,
    warmup,
    warmup_time,
    min_iterations,
    min_duration,
    force,
    devices,
    engines,
    tune,
    profile_ops,
    memory,
    remote,
    remote_edgepipe,
    remote_dir,
    ssh_config,
    data_sample,
    keep_remote,
):
    """Stage 4: measure accuracy and latency of every artifact on this machine.

    With a CONFIG (or none), benchmarks the run directory's artifacts. Given
    artifact files instead, benchmarks them alone, with no run directory:
    edgepipe bench model-tflite-int8.tflite model-onnx-fp32.onnx --data DIR --threads 1,2 --batch 1,8

    With --remote, the same runs on another machine over SSH:
    edgepipe bench model-tflite-int8.tflite --data DIR --labels labels.txt --remote me@jetson --output jetson.json
    """
    from edgepipe import api

    artifacts = [p for p in paths if p.suffix.lower() in api.artifact_suffixes()]
    if not artifacts:
        if remote:
            raise EdgepipeError(
                "--remote benchmarks artifact files", "Pass files ending in " + ", ".join(api.artifact_suffixes()) + "."
            )
        if len(paths) > 1:
            raise EdgepipeError("give one CONFIG, or artifact files (" + ", ".join(api.artifact_suffixes()) + ")")
        if threads and len(threads) > 1:
            raise EdgepipeError("a run directory is benchmarked with one thread count", "Pass --threads N.")
        _run_stages(
            ["bench"],
            {
                "config": paths[0] if paths else None,
                "force": force,
                "data": str(data) if data else None,
                "threads": threads[0] if threads else None,
                "output": output,
                "name": name,
                "seed": seed,
                "bench.tune": True if tune else None,
                "bench.profile": True if profile_ops else None,
            },
        )
        return
    if len(artifacts) != len(paths):
        odd = next(p for p in paths if p not in artifacts)
        raise EdgepipeError(
            f"'{odd}' is not an artifact file", "Artifacts end in " + ", ".join(api.artifact_suffixes()) + "."
        )
    request = api.BenchRequest(
        list(artifacts),
        data=data,
        labels=labels,
        threads=threads or (1,),
        batches=batch or (1,),
        devices=tuple(devices or ("cpu",)),
        engines=tuple(engines or ()),
        warmup=warmup,
        warmup_s=warmup_time,
        min_iterations=min_iterations,
        min_duration_s=min_duration,
        seed=seed or 0,
        output=Path(output or "bench-results.json"),
        memory=memory,
        tune=tune,
        profile=profile_ops,
    )
    if remote:
        api.bench_remote(
            remote,
            request,
            ssh_config=ssh_config,
            remote_edgepipe=remote_edgepipe,
            remote_dir=remote_dir,
            data_sample=data_sample,
            keep=keep_remote,
            echo=click.echo,
        )
        click.echo(f"results from {remote}: {request.output}, {request.output.with_suffix('.csv')}")
        return
    results = api.bench_request(request, echo=click.echo)
    click.echo(f"results: {request.output}, {request.output.with_suffix('.csv')}")
    failed = [r for r in results.records if not r.status.measured]
    if failed:
        click.echo(
            f"{len(failed)} of {len(results.records)} measurement(s) did not run: see the reasons above", err=True
        )
        sys.exit(EXIT_CHECK_FAILED)


@main.command("profile")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--threads", type=POSITIVE, default=1, show_default=True, help="Threads, as the artifact is benchmarked.")
@click.option(
    "--engine", metavar="E", help="Engine to profile with (default: the artifact's own; see 'edgepipe formats')."
)
@click.option("--device", default="cpu", show_default=True, metavar="D", help="Device / execution provider.")
@click.option("--batch", type=POSITIVE, default=1, show_default=True, help="Batch size.")
@click.option("--calls", type=POSITIVE, default=20, show_default=True, help="Profiled calls averaged per op.")
@click.option(
    "--model",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="MODEL.keras",
    help="The Keras model the artifact was exported from: maps ops to its layers for MACs and GMAC/s per layer.",
)
@click.option("--output", type=click.Path(path_type=Path), metavar="FILE.json", help="Write the profile as JSON.")
def profile_command(artifact, threads, engine, device, batch, calls, model, output):
    """Where the time goes: one artifact profiled per op with its engine's own profiler.

    edgepipe profile model-tflite-int8.tflite --threads 1 --output profile.json
    """
    from edgepipe import api

    result = api.profile(
        artifact,
        threads=threads,
        engine=engine,
        device=device,
        batch=batch,
        calls=calls,
        model=model,
        output=output,
        echo=click.echo,
    )
    for line in api.profile_lines(result):
        click.echo(line)
    if output:
        click.echo(f"profile: {output}")
    if result.status != "ok":
        sys.exit(EXIT_CHECK_FAILED)


@main.command("export")
@run_options
@click.option(
    "--format",
    "format_",
    multiple=True,
    metavar="NAME",
    help="With a MODEL file: a format to export (repeatable; 'all' for every format this machine can build).",
)
@click.option(
    "--calibration-data",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="With a MODEL file: image folder (one subfolder per class) to calibrate INT8 and verify artifacts.",
)
@click.option(
    "--qat-epochs",
    type=int,
    metavar="N",
    help="Epochs of quantization-aware fine-tuning, the last INT8 recipe (export.qat.epochs; 0: never).",
)
@pixel_options
def export_command(**kwargs: Any) -> None:
    """Stage 3: export the trained model to the configured formats.

    Reads and writes the run directory (--output), so one stage can be rerun.
    Given a model file instead of a CONFIG (Keras, or an image classifier in ONNX or saved by torch.export.save
    as .pt2, with its preprocessing), exports that model alone:
    edgepipe export model.keras --format tflite-int8 --format onnx-fp32 --calibration-data DIR
    edgepipe export model.onnx --scale 255 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --calibration-data DIR
    """
    from edgepipe import api

    source = kwargs.get("config")
    formats = list(kwargs.pop("format_") or ())
    calibration_dir = kwargs.pop("calibration_data")
    pixels = _declared_pixels(kwargs)
    if source is not None and api.is_model_file(source):
        if calibration_dir is not None and not Path(calibration_dir).is_dir():
            raise EdgepipeError(
                f"calibration data '{calibration_dir}' is not a folder",
                "Pass an image folder with one subfolder per class.",
            )
        exported = api.export(
            source,
            formats or kwargs.get("formats") or ["all"],
            calibration=calibration_dir,
            output=kwargs.get("output"),
            seed=kwargs.get("seed") or 0,
            threads=kwargs.get("threads"),
            unsafe_load=kwargs.get("unsafe_load", False),
            echo=click.echo,
            qat=None if kwargs.get("qat_epochs") is None else {"epochs": kwargs["qat_epochs"]},
            preprocessing=pixels,
            input_size=kwargs.get("input_size"),
        )
        click.echo(f"artifacts: {exported.index}")
        return
    if pixels is not None:
        raise EdgepipeError(
            "--layout, --channels, --scale, --mean, --std and --preprocessing apply to an ONNX or .pt2 model file",
            "In a run, declare them with 'edgepipe run' (or set model.preprocessing in the config).",
        )
    if formats:
        kwargs["formats"] = formats
    _run_stages(["export"], kwargs)


def _pixel_transform(named: Any, flags: dict[str, Any]) -> Any:
    from edgepipe import api

    return api.pixel_transform(named, **flags)


MEASURE_ONLY = (
    "archs",
    "formats",
    "threads",
    "input_size",
    "force",
    "remote",
    "ssh_config",
    "remote_edgepipe",
    "remote_dir",
    "min_iterations",
    "min_duration",
    "as_csv",
)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--count/--no-count",
    default=True,
    show_default=True,
    help="Build each network (random weights) to count parameters and MACs at its default input; cached "
    "after the first run.",
)
@click.option(
    "--measure",
    is_flag=True,
    help="Measure each architecture on this device (or --remote): p50/p90 ms at "
    "batch 1 per format, artifact size and peak memory, from random weights with drawn batch-norm statistics "
    "and biases (INT8 calibrated on synthetic images); cached per device and engine versions.",
)
@click.option(
    "--archs",
    callback=_split_list,
    metavar="A,B",
    help="With --measure: architectures to measure, or all (default: every one with at most 6 M parameters "
    "by its published count).",
)
@click.option(
    "--formats",
    callback=_split_list,
    metavar="A,B",
    help="With --measure: formats (default: tflite-fp32,tflite-int8,openvino-int8,onnx-int8).",
)
@click.option(
    "--threads",
    type=POSITIVE,
    metavar="N",
    help="With --measure: threads per engine (default: every core usable here; required with --remote).",
)
@click.option(
    "--input-size",
    type=POSITIVE,
    metavar="N",
    help="With --measure: square input in pixels (default: each architecture's own).",
)
@timing_options("With --measure: ", per=" per format", warmup=False)
@click.option("--force", is_flag=True, help="With --measure: measure again instead of reading the cache.")
@click.option("--csv", "as_csv", is_flag=True, help="With --measure: print CSV instead of a table.")
@click.option(
    "--remote",
    metavar="[USER@]HOST",
    help="With --measure: time the artifacts (exported here) on that "
    "machine over SSH, as 'edgepipe bench --remote' does.",
)
@ssh_options("each job")
@click.pass_context
def models(ctx, as_json: bool, count: bool, measure: bool, **options: Any) -> None:
    """List the architectures the registry knows, with counted size and compute and published accuracy.

    With --measure, what each one costs on this device (or --remote), beside its published ImageNet
    figures: p50/p90 ms at batch 1 per format, artifact size and peak memory. Each network is built
    with random weights, its batch-norm statistics and biases drawn as a trained network's (OpenVINO
    folds a fresh network's zero biases away, and its INT8 file timed 13-24% faster than the ImageNet
    network's), and INT8 is calibrated on 32 seeded random-pixel images (no accuracy is measured).
    Cached per device, engine versions, network, format and conditions; --force measures again.

    \b
    edgepipe models --measure --archs mobilenet_v2,efficientnet_lite0 --input-size 224 --threads 2
    """
    if not measure:
        given = [
            name for name in MEASURE_ONLY if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise EdgepipeError(
                f"--{given[0].replace('_', '-').replace('as-', '')} applies to --measure",
                "Add --measure to measure the architectures on this device.",
            )
        from edgepipe import api

        rows = api.models(count, echo=lambda line: click.echo(line, err=True))
        click.echo(json.dumps(rows, indent=2) if as_json else api.models_table(rows))
        return
    if as_json and options["as_csv"]:
        raise EdgepipeError("--json and --csv are exclusive", "Pass one of them.")
    _measure_models(as_json, **options)


def _measure_models(
    as_json: bool,
    archs,
    formats,
    threads,
    input_size,
    min_iterations,
    min_duration,
    force,
    as_csv,
    remote,
    ssh_config,
    remote_edgepipe,
    remote_dir,
) -> None:
    from edgepipe import api

    result = api.measure_models(
        archs,
        formats,
        threads=threads,
        input_size=input_size,
        force=force,
        remote=remote,
        ssh_config=ssh_config,
        remote_edgepipe=remote_edgepipe,
        remote_dir=remote_dir,
        min_iterations=min_iterations,
        min_duration_s=min_duration,
        echo=lambda line: click.echo(line, err=True),
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif as_csv:
        click.echo(api.measured_models_text(result, as_csv=True), nl=False)
    else:
        click.echo(api.measured_models_text(result))


def _float_list(ctx, param, value):
    items = _split_list(ctx, param, value)
    if items is None:
        return None
    try:
        return tuple(float(v) for v in items)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


@main.command("search")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", metavar="DIR", help="Image folder (one subfolder per class), builtin:NAME or tfds:NAME.")
@click.option(
    "--archs",
    callback=_split_list,
    metavar="A,B",
    help="Architectures (default: every one with at most 6 M parameters by its published count).",
)
@click.option(
    "--alphas",
    callback=_float_list,
    metavar="A,B",
    help="Width multipliers, e.g. 0.35,0.5 (default: each family's own; architectures without one ignore them).",
)
@click.option(
    "--input-sizes",
    callback=_int_list,
    metavar="N,N",
    help="Square input sizes in pixels, e.g. 128,224 (default: each architecture's own).",
)
@click.option(
    "--formats",
    callback=_split_list,
    metavar="A,B",
    help="Formats (default: tflite-fp32,tflite-int8,openvino-int8,onnx-int8).",
)
@click.option(
    "--weights",
    metavar="imagenet|none|FILE|ARCH=FILE,...",
    help="Initial backbone weights: imagenet "
    "(files already on this machine; nothing is downloaded), none (random, needs --allow-random-weights), "
    "a file (one architecture), or a file per architecture (the others: imagenet). Default imagenet.",
)
@click.option(
    "--allow-random-weights",
    is_flag=True,
    help="Allow random backbone weights: --weights none, and in place "
    "of ImageNet weights that are not on this machine (each such candidate says so).",
)
@click.option(
    "--max-latency-ms", type=float, metavar="MS", help="Latency budget per image at batch 1 (at --percentile)."
)
@click.option(
    "--percentile",
    type=click.Choice(["p50", "p90", "p95", "p99"]),
    help="The latency percentile the budget applies to (default: the config's search.percentile, p50).",
)
@click.option("--max-size-mb", type=float, metavar="MB", help="Artifact file size budget.")
@click.option(
    "--max-memory-mb",
    type=float,
    metavar="MB",
    help="Peak resident memory budget of a process running the artifact (measured in a fresh process).",
)
@click.option("--min-top1", type=float, metavar="PCT", help="Least validation top-1 in percent.")
@click.option(
    "--threads",
    type=POSITIVE,
    metavar="N",
    help="Threads per engine (default: every core usable here; required with --remote).",
)
@click.option("--remote", metavar="[USER@]HOST", help="Time the artifacts (exported here) on that machine over SSH.")
@ssh_options("each job")
@click.option(
    "--output",
    metavar="DIR",
    help="The search directory (default runs/search); the winner's run directory is DIR/winner.",
)
@click.option("--force", is_flag=True, help="Redo every step instead of resuming from the search's records.")
@click.option(
    "--memory/--no-memory",
    default=None,
    help="Measure each artifact's peak memory in a fresh process (default: only with --max-memory-mb).",
)
@timing_options(
    "Screening: ",
    per=" per artifact",
    warmup=False,
    defaults=False,
    decided=" (default: 20 and 0.15 s, or the config's bench floors when lower; artifacts near --max-latency-ms "
    "are timed again with the bench floors)",
)
@click.option("--seed", type=click.IntRange(min=0), metavar="N", help="Seed for splits, sampling and training.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of the table.")
@click.pass_context
def search_command(ctx, config, data, seed, as_json, **flags):
    """Which network, width, input size and format is the most accurate on your data within your budgets
    on this device (or --remote): latency first, then accuracy for the candidates left, cheapest first.

    Prints one table (every candidate and artifact with its figures, status or reason) and the answer;
    writes search.json, search.txt and search.png in --output, and the winner as a normal run directory
    (DIR/winner) that edgepipe report, verify and compare work on. A killed search resumes; --force redoes.
    The CONFIG's search: section gives any of these options; a flag given here overrides it.

    \b
    edgepipe search --data photos --archs mobilenet_v2,efficientnet_lite0 --alphas 0.35,0.5 --input-sizes 128,224 \\
        --max-latency-ms 3 --threads 2 --output runs/search
    """
    from edgepipe import api
    from edgepipe.choose.candidates import parse_weights
    from edgepipe.choose.options import SearchOptions

    given = {k: v for k, v in flags.items() if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT}
    if "weights" in given:
        given["weights"] = parse_weights(given["weights"])
    if "min_duration" in given:
        given["min_duration_s"] = given.pop("min_duration")
    result = api.search(
        data,
        config,
        options=SearchOptions(**given),
        overrides={"seed": seed} if seed is not None else None,
        echo=lambda line: click.echo(line, err=True),
    )
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.table)


@main.command()
@click.argument("current", type=click.Path(path_type=Path))
@click.argument("baseline", type=click.Path(path_type=Path))
@click.option(
    "--max-latency-regression",
    metavar="PCT%",
    help="Fail when a latency percentile is slower by more than this, with a percent sign (e.g. 10%; "
    "a bare number is refused).",
)
@click.option(
    "--max-accuracy-drop",
    metavar="PP",
    help="Fail when top-1 drops by more than this many percentage points "
    "(e.g. 0.5 or 0.5pp; 0.5% is refused as ambiguous).",
)
@click.option(
    "--percentile",
    "percentiles",
    multiple=True,
    type=click.Choice(["p50", "p90", "p95", "p99"]),
    help="Latency percentiles to compare and gate (repeatable; default p50).",
)
@click.option(
    "--strict", is_flag=True, help="Refuse to compare results from different devices, engine versions or models."
)
@click.option(
    "--accuracy-test",
    type=click.Choice(["none", "mcnemar"]),
    default="none",
    show_default=True,
    help="mcnemar: a top-1 drop beyond --max-accuracy-drop fails only when McNemar's one-sided exact test on the same "
    "held-out images tells it from chance (p < 0.05).",
)
def compare(
    current: Path, baseline: Path, max_latency_regression, max_accuracy_drop, percentiles, strict, accuracy_test
) -> None:
    """Compare two results.json files; exit 1 when a threshold is crossed or a baseline artifact is missing or
    failed now (a CI gate that fails closed), 2 when a file is not edgepipe results."""
    from edgepipe import api

    latency = None if max_latency_regression is None else api.parse_fraction(max_latency_regression)
    accuracy = None if max_accuracy_drop is None else api.parse_points(max_accuracy_drop)
    result = api.compare(
        current,
        baseline,
        max_latency_regression=latency,
        max_accuracy_drop=accuracy,
        percentiles=tuple(percentiles) or ("p50",),
        strict=strict,
        accuracy_test=accuracy_test,
    )
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(result.table)
    if result.violations:
        for violation in result.violations:
            click.echo(f"threshold crossed: {violation}", err=True)
        sys.exit(EXIT_CHECK_FAILED)
    click.echo("\nno threshold crossed")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
def verify(run_dir: Path) -> None:
    """Check every file of a run directory against its manifest and stage records; exit 1 if anything changed."""
    from edgepipe import api

    result = api.verify(run_dir)
    for label, files in (("changed", result.changed), ("missing", result.missing)):
        for name in files:
            click.echo(f"{label}: {name}")
    for name in result.unrecorded:
        click.echo(f"not recorded by any stage: {name}")
    for stage, intact in result.stages_intact.items():
        click.echo(
            f"stage {stage}: {'outputs intact' if intact else 'outputs changed, it reruns with the next command'}"
        )
    if not result.clean:
        sys.exit(EXIT_CHECK_FAILED)
    click.echo(f"{run_dir}: every recorded file is as its stage wrote it")


@main.command()
def formats() -> None:
    """List the export formats, the engine that runs each, and whether this machine can build them."""
    from edgepipe import api

    for row in api.formats_table():
        reason = row["unavailable"]
        click.echo(
            f"{row['format']:<16} [{row['default_engine']}] {row['description']}"
            + (f"  [unavailable: {reason}]" if reason else "")
        )
    click.echo(
        "\nengines: "
        + ", ".join(
            f"{e['engine']} (reads {', '.join(e['reads'])}; devices {', '.join(e['devices'])})"
            for e in api.engines_table()
        )
    )
    click.echo("devices: " + ", ".join(f"{d['device']} ({d['description']})" for d in api.devices_table()))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
