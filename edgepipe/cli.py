"""The edgepipe command line: parse options, call one library function, print the outcome."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import click

from edgepipe import __version__
from edgepipe.errors import EdgepipeError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# CLI flag -> dotted config key. The flags' choices and checks come from the config and registries.
FLAG_KEYS = {
    "data": "data.path",
    "arch": "model.arch",
    "alpha": "model.alpha",
    "weights": "model.weights",
    "input_size": "model.input_size",
    "strategy": "train.strategy",
    "epochs": "train.epochs",
    "formats": "export.formats",
    "output": "output",
    "seed": "seed",
    "threads": "bench.threads",
    "name": "name",
    "model": "model.path",
    "unsafe_load": "model.unsafe_load",
}


class EdgepipeGroup(click.Group):
    """Turns EdgepipeError into one 'error:' line and exit code 2 (a traceback only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgepipeError as exc:
            if ctx.meta.get("edgepipe.debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def _split_formats(ctx, param, value):
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def run_options(fn: Callable) -> Callable:
    """Options shared by 'run' and the stage commands; each overrides one config key."""
    options = [
        click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path)),
        click.option("--data", metavar="DIR", help="Image folder (one subfolder per class) or builtin:digits / builtin:synthetic."),
        click.option("--arch", metavar="NAME", help="Architecture (see 'edgepipe models')."),
        click.option("--alpha", type=float, help="Width multiplier, for families that have one."),
        click.option("--weights", metavar="imagenet|none|PATH", help="Initial backbone weights."),
        click.option("--model", metavar="PATH", help="Start from your own saved model (.keras, .h5, SavedModel dir)."),
        click.option("--unsafe-load", is_flag=True, default=None,
                     help="Allow --model files whose loading runs arbitrary code (trusted files only)."),
        click.option("--input-size", type=int, metavar="N", help="Square input size in pixels."),
        click.option("--strategy", metavar="NAME", help="Transfer-learning strategy (e.g. feature-extraction)."),
        click.option("--epochs", type=int, metavar="N", help="Training epochs."),
        click.option("--formats", callback=_split_formats, metavar="A,B,C", help="Export formats (see 'edgepipe formats')."),
        click.option("--output", metavar="DIR", help="Run directory (default runs/<name>)."),
        click.option("--name", metavar="NAME", help="Run name (run directory runs/<name>)."),
        click.option("--seed", type=int, metavar="N", help="Seed for splits, sampling and training."),
        click.option("--threads", type=int, metavar="N", help="Threads per inference engine when benchmarking."),
        click.option("--force", is_flag=True, help="Rerun stages even when their inputs are unchanged."),
    ]

    @functools.wraps(fn)
    def wrapper(**kwargs):
        return fn(**kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def load_run_config(config_path: Optional[Path], flags: dict[str, Any]):
    """CONFIG if given, else the run directory's saved config.yaml, else the built-in quickstart; flags override."""
    from edgepipe import config as cfg

    overrides = {FLAG_KEYS[k]: v for k, v in flags.items() if k in FLAG_KEYS and v is not None}
    if config_path is not None:
        return cfg.load(config_path, overrides)
    if flags.get("output") and (Path(flags["output"]) / "config.yaml").is_file():
        return cfg.load(Path(flags["output"]) / "config.yaml", overrides)
    base = cfg.load(cfg.quickstart_path())
    saved = base.run_dir / "config.yaml"
    if not flags.get("output") and not flags.get("name") and saved.is_file():
        return cfg.load(saved, overrides)
    return cfg.load(cfg.quickstart_path(), overrides)


def _run_stages(stages: list[str], kwargs: dict[str, Any]) -> None:
    from edgepipe.pipeline.export import expand_formats
    from edgepipe.pipeline.runner import run_stages

    if kwargs.get("formats"):
        kwargs["formats"] = expand_formats(kwargs["formats"])
    if not kwargs.get("unsafe_load"):
        kwargs["unsafe_load"] = None  # an absent flag must not override the config's value
    config_path = kwargs.pop("config")
    force = kwargs.pop("force")
    config = load_run_config(config_path, kwargs)
    run = run_stages(config, stages, echo=click.echo, force=force)
    click.echo(f"run directory: {run.path}")


@click.group(cls=EdgepipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgepipe")
@click.option("--debug", is_flag=True, help="Show tracebacks and engine logs.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Turn a CNN architecture and labelled images into deployable, measured edge models."""
    ctx.meta["edgepipe.debug"] = debug
    if debug:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        os.environ["EDGEPIPE_DEBUG"] = "1"


@main.command()
@run_options
def run(**kwargs: Any) -> None:
    """Run every stage: build, train, export, bench, report.

    With no CONFIG, runs the built-in quickstart (scikit-learn's digits, offline).
    """
    from edgepipe.pipeline.runner import STAGES

    _run_stages(list(STAGES), kwargs)


def _stage_command(name: str, help_text: str) -> None:
    @run_options
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
@click.option("--output", metavar="PATH", help="Run directory; with --merge, the Markdown file to write (default: print).")
@click.option("--name", metavar="NAME", help="Run name (run directory runs/<name>).")
@click.option("--merge", "merge_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Merge these results files (from several devices) into one table; repeatable, or list them after CONFIG.")
@click.option("--force", is_flag=True, help="Rerun even when inputs are unchanged.")
def report_command(config, output, name, merge_files, force):
    """Stage 5: write report.md, report.html and pareto.png from results.json.

    With --merge, merges results files from several devices into one table:
    edgepipe report --merge pc.json --merge jetson.json  (or: edgepipe report --merge results/*.json)
    """
    if merge_files:
        from edgepipe.fileio import read_json, write_text
        from edgepipe.report.merge import merge

        files = list(merge_files) + ([config] if config else [])
        from edgepipe.report.table import analyse_many

        loaded = [read_json(f) for f in files]
        analysed = analyse_many(loaded)
        text = merge(loaded, analysed)
        if output:
            from edgepipe.report.merge import merged_pareto_plot

            png = Path(output).with_suffix(".png")
            if merged_pareto_plot(loaded, png, analysed):
                text += f"\n![accuracy against latency per device]({png.name})\n"
            write_text(output, text)
            click.echo(f"merged report: {output}" + (f", plot: {png}" if png.exists() else ""))
        else:
            click.echo(text)
        return
    _run_stages(["report"], {"config": config, "force": force, "output": output, "name": name})


def _int_list(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


ARTIFACT_SUFFIXES = (".tflite", ".onnx", ".keras", ".engine")


@main.command("bench")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), metavar="DIR",
              help="Image folder (one subfolder per class) for accuracy; with a CONFIG, the run's data.")
@click.option("--labels", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="With artifacts: labels.txt giving the model's class order (default: the folder's sorted names).")
@click.option("--threads", callback=_int_list, metavar="N[,N]", help="Threads per engine, e.g. 1,2 (one value with a CONFIG).")
@click.option("--batch", callback=_int_list, metavar="N[,N]", help="With artifacts: batch sizes to measure, e.g. 1,8.")
@click.option("--output", metavar="PATH", help="Run directory (with a CONFIG), or the results JSON to write (with artifacts).")
@click.option("--name", metavar="NAME", help="Run name (run directory runs/<name>).")
@click.option("--seed", type=int, metavar="N", help="Seed for sampling.")
@click.option("--warmup", type=int, default=10, show_default=True, help="With artifacts: at least this many warm-up calls...")
@click.option("--warmup-time", type=float, default=0.2, show_default=True, help="...and this many seconds of warm-up.")
@click.option("--min-iterations", type=int, default=50, show_default=True, help="With artifacts: at least this many timed calls...")
@click.option("--min-duration", type=float, default=1.0, show_default=True, help="...lasting at least this many seconds.")
@click.option("--force", is_flag=True, help="With a CONFIG: rerun even when inputs are unchanged.")
@click.option("--device", "devices", default="cpu", show_default=True, metavar="D[,D]",
              help="With artifacts: devices / execution providers, e.g. cpu,cuda,tensorrt (ONNX Runtime providers; "
                   "engines run on cuda).")
@click.option("--remote", metavar="[USER@]HOST", help="With artifacts: run the benchmark on that machine over SSH "
              "(OpenSSH, batch mode: keys and known hosts from your SSH configuration) and bring the results back.")
@click.option("--remote-edgepipe", default="edgepipe", show_default=True, metavar="CMD",
              help="With --remote: the edgepipe command on the remote machine.")
@click.option("--remote-dir", default="edgepipe-bench", show_default=True, metavar="DIR",
              help="With --remote: remote folder for the job (a fresh subfolder, removed afterwards).")
@click.option("--ssh-config", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="With --remote: use this SSH configuration file instead of ~/.ssh/config.")
@click.option("--data-sample", type=click.IntRange(min=1), default=20, show_default=True, metavar="N",
              help="With --remote: copy at most N images per class of --data.")
@click.option("--keep-remote", is_flag=True, help="With --remote: leave the remote job folder in place.")
def bench_command(paths, data, labels, threads, batch, output, name, seed, warmup, warmup_time, min_iterations,
                  min_duration, force, devices, remote, remote_edgepipe, remote_dir, ssh_config, data_sample, keep_remote):
    """Stage 4: measure accuracy and latency of every artifact on this machine.

    With a CONFIG (or none), benchmarks the run directory's artifacts. Given
    artifact files instead, benchmarks them alone, with no run directory:
    edgepipe bench model-tflite-int8.tflite model-onnx-fp32.onnx --data DIR --threads 1,2 --batch 1,8

    With --remote, the same runs on another machine over SSH:
    edgepipe bench model-tflite-int8.tflite --data DIR --labels labels.txt --remote me@jetson --output jetson.json
    """
    artifacts = [p for p in paths if p.suffix.lower() in ARTIFACT_SUFFIXES]
    if remote and not artifacts:
        raise EdgepipeError("--remote benchmarks artifact files", "Pass .tflite, .onnx, .keras or .engine files.")
    if not artifacts:
        if len(paths) > 1:
            raise EdgepipeError("give one CONFIG, or artifact files (.tflite, .onnx, .keras, .engine)")
        if threads and len(threads) > 1:
            raise EdgepipeError("a run directory is benchmarked with one thread count", "Pass --threads N.")
        _run_stages(["bench"], {"config": paths[0] if paths else None, "force": force, "data": str(data) if data else None,
                                "threads": threads[0] if threads else None, "output": output, "name": name, "seed": seed})
        return
    from edgepipe.benchmark import BenchSettings
    from edgepipe.pipeline.bench import bench_files, write_results
    from edgepipe.quiet import import_tensorflow_quietly

    if data is not None and not Path(data).is_dir():
        raise EdgepipeError(f"data folder '{data}' does not exist", "Pass an image folder with one subfolder per class.")
    if remote:
        from edgepipe.remote import bench_remote

        args = ["--threads", ",".join(map(str, threads or (1,))), "--batch", ",".join(map(str, batch or (1,))),
                "--warmup", str(warmup), "--warmup-time", str(warmup_time), "--min-iterations", str(min_iterations),
                "--min-duration", str(min_duration), "--seed", str(seed or 0), "--device", devices]
        results = bench_remote(remote, artifacts, echo=click.echo, data_dir=data, labels_file=labels,
                               per_class=data_sample, bench_args=args, remote_edgepipe=remote_edgepipe,
                               remote_dir=remote_dir, ssh_config=ssh_config, keep=keep_remote)
        out = Path(output or "bench-results.json")
        csv_path = write_results(out, results)
        click.echo(f"results from {remote}: {out}, {csv_path}")
        return
    if any(p.suffix.lower() == ".keras" for p in artifacts):
        import_tensorflow_quietly()
    settings = BenchSettings(1, warmup, min_iterations, min_duration, warmup_time)
    wanted = tuple(d.strip() for d in devices.split(",") if d.strip())
    unknown = [d for d in wanted if d not in ("cpu", "cuda", "tensorrt")]
    if unknown:
        raise EdgepipeError(f"unknown device '{unknown[0]}'", "Use cpu, cuda or tensorrt (comma-separated).")
    results = bench_files(artifacts, click.echo, data, labels, threads or (1,), batch or (1,), settings, seed or 0,
                          wanted)
    out = Path(output or "bench-results.json")
    csv_path = write_results(out, results)
    click.echo(f"results: {out}, {csv_path}")


MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


@main.command("export")
@run_options
@click.option("--format", "format_", multiple=True, metavar="NAME",
              help="With a MODEL file: a format to export (repeatable; 'all' for every format this machine can build).")
@click.option("--calibration-data", type=click.Path(path_type=Path), metavar="DIR",
              help="With a MODEL file: image folder (one subfolder per class) to calibrate INT8 and verify artifacts.")
def export_command(**kwargs: Any) -> None:
    """Stage 3: export the trained model to the configured formats.

    Reads and writes the run directory (--output), so one stage can be rerun.
    Given a Keras model file instead of a CONFIG, exports that model alone:
    edgepipe export model.keras --format tflite-int8 --format onnx-fp32 --calibration-data DIR
    """
    source = kwargs.get("config")
    formats = list(kwargs.pop("format_") or ())
    calibration_dir = kwargs.pop("calibration_data")
    if source is not None and (source.suffix.lower() in MODEL_SUFFIXES or source.is_dir()):
        from edgepipe.pipeline.bench import resolve_threads
        from edgepipe.pipeline.export import export_model_file
        from edgepipe.quiet import import_tensorflow_quietly

        if not source.exists():
            raise EdgepipeError(f"model file '{source}' does not exist", "Check the path.")
        if calibration_dir is not None and not Path(calibration_dir).is_dir():
            raise EdgepipeError(f"calibration data '{calibration_dir}' is not a folder",
                                "Pass an image folder with one subfolder per class.")
        import_tensorflow_quietly()
        out = Path(kwargs.get("output") or Path("exports") / source.stem)
        index = export_model_file(source, formats or kwargs.get("formats") or ["all"], out, click.echo,
                                  calibration_dir=calibration_dir, seed=kwargs.get("seed") or 0,
                                  threads=resolve_threads(kwargs.get("threads")), unsafe=bool(kwargs.get("unsafe_load")))
        click.echo(f"artifacts: {index}")
        return
    if formats:
        kwargs["formats"] = formats
    _run_stages(["export"], kwargs)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--measure/--no-measure", default=True, show_default=True,
              help="Build each network (random weights) to count parameters and MACs; cached after the first run.")
def models(as_json: bool, measure: bool) -> None:
    """List the architectures the registry knows, with measured size and compute and published accuracy."""
    from edgepipe.architectures import ARCHITECTURES

    facts: dict = {}
    if measure:
        from edgepipe.architectures.facts import all_facts
        from edgepipe.quiet import import_tensorflow_quietly

        import_tensorflow_quietly()
        facts = all_facts(echo=lambda line: click.echo(line, err=True))
    rows = []
    for name, arch in ARCHITECTURES:
        rows.append({
            "name": name, "keras_name": arch.keras_name, "family": arch.family, "paper": arch.paper,
            "default_input_size": arch.default_input_size, "default_channels": arch.default_channels,
            "alphas": list(arch.alphas), "imagenet_weights": arch.has_imagenet_weights,
            "measured": facts.get(name), "reference": arch.reference.as_dict(),
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(render_models_table(rows))


def render_models_table(rows: list[dict]) -> str:
    def num(value, scale=1.0, spec=".1f"):
        return "–" if value is None else f"{value / scale:{spec}}"

    header = (f"{'name':<21} {'family':<31} {'params M':>8} {'MACs M':>8} {'input':>5} {'depth':>5} "
              f"{'ImageNet':>8} {'size MB':>7} {'top-1 %':>7} {'top-5 %':>7}")
    lines = [header, "-" * len(header)]
    for r in rows:
        measured, ref = r["measured"] or {}, r["reference"]
        lines.append(
            f"{r['name']:<21} {r['family']:<31} {num(measured.get('params'), 1e6, '.2f'):>8} "
            f"{num(measured.get('macs'), 1e6, '.1f'):>8} {r['default_input_size']:>5} {num(ref['depth'], 1, '.0f'):>5} "
            f"{'yes' if r['imagenet_weights'] else 'no':>8} {num(ref['size_mb'], 1, '.0f'):>7} "
            f"{num(ref['top1']):>7} {num(ref['top5']):>7}")
    lines.append("params and MACs: measured here with the published classifier top (1000 classes; LeNet-5: 10) at the "
                 "default input, batch 1. Size, depth, top-1/top-5: published ImageNet figures, sources in --json.")
    return "\n".join(lines)


@main.command()
@click.argument("current", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--max-latency-regression", metavar="PCT", help="Fail when a latency percentile is slower by more than this (e.g. 10%).")
@click.option("--max-accuracy-drop", type=float, metavar="PP", help="Fail when top-1 drops by more than this many percentage points.")
@click.option("--percentile", "percentiles", multiple=True, type=click.Choice(["p50", "p90", "p95", "p99"]),
              help="Latency percentiles to compare and gate (repeatable; default p50).")
@click.option("--strict", is_flag=True, help="Refuse to compare results from different devices or engine versions.")
def compare(current: Path, baseline: Path, max_latency_regression, max_accuracy_drop, percentiles, strict) -> None:
    """Compare two results.json files; exit 1 when a threshold is crossed (for CI gates)."""
    from edgepipe.fileio import read_json
    from edgepipe.report.compare import compare as run_compare, parse_fraction

    result = run_compare(read_json(current), read_json(baseline),
                         parse_fraction(max_latency_regression) if max_latency_regression else None,
                         max_accuracy_drop, tuple(percentiles) or ("p50",), strict)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(result.table)
    if result.violations:
        for violation in result.violations:
            click.echo(f"threshold crossed: {violation}", err=True)
        sys.exit(1)
    click.echo("\nno threshold crossed")


@main.command()
def formats() -> None:
    """List the export formats and whether this machine can build them."""
    from edgepipe.exporters import EXPORTERS

    for name, exporter in EXPORTERS:
        reason = exporter.available()
        click.echo(f"{name:<16} {exporter.description}" + (f"  [unavailable: {reason}]" if reason else ""))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
