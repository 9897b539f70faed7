"""What `edgepipe search` costs against running `edgepipe run` for every candidate, measured in one run.

A search over architectures x widths x input sizes on edgepipe's generated shapes (builtin:synthetic, about 400
images), with a latency budget. With genuine ImageNet weights (``--weights-dir``, default the project's shared
weights folder when it exists: MobileNetV2 alpha 0.35 and 0.5, MobileNet alpha 0.25 and EfficientNet-Lite0) the
heads learn and INT8 artifacts are exported where they can win; without them, random weights (whose pooled
features vanish: every head stays at chance, and no INT8 artifact is ever exported), and the output says which.
Around the search, with the same data, formats and settings, `edgepipe run` for two of its candidates (the
fewest MACs before the search, the most after it, so both sides see the machine's load drift), timed; the cost of
a run for every candidate is estimated from their mean. Last, the winner's artifact is re-measured in a fresh
`edgepipe bench` process (interleaved rounds) against the budget. Prints: the total wall time, the candidates,
the time per search stage, the estimate and the ratio search / all runs (target: at most 0.2), and the winner's
re-measured latency / budget (target: at most 1). The 1-minute load average before and after each timed part is
printed beside it: on a shared machine the parts may not run under the same load.

    python benchmarks/search.py [--weights-dir DIR | --random-weights] [--archs A,B] [--alphas 0.35,0.5]
                                [--input-sizes 112,144,176] [--formats tflite-fp32,tflite-int8,openvino-int8]
                                [--per-class 52] [--epochs 20] [--threads 2] [--max-latency-ms 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: the search's own stages, as its progress lines name them
STAGES = (
    ("converting ", "latency: conversion"),
    ("[latency ", "latency: timing"),
    ("training ", "accuracy"),
    ("[accuracy ", "accuracy"),
    ("[export ", "export"),
    ("[winner]", "winner run"),
)
#: a search should cost at most this fraction of running every candidate
TARGET = 0.2
#: the genuine ImageNet weights the project keeps beside its checkouts (see tests/conftest.py)
SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights"
#: EfficientNet-Lite0's weights file there (not a Keras Applications download: passed as a file)
EFFICIENTNET_FILE = "efficientnet_lite0_imagenet_notop.weights.h5"
#: candidates with those weights: every width that has a file (MobileNetV2 0.35 and 0.5, MobileNet 0.25; the
#: others are skipped), at sizes where Keras reads its 224-pixel files, EfficientNet-Lite0 from its file: 12
GENUINE = {"archs": "mobilenet_v2,mobilenet_v1,efficientnet_lite0", "alphas": "0.25,0.35,0.5", "sizes": "112,144,176"}
#: candidates with random weights: three families at two widths and two sizes: 12
RANDOM = {"archs": "mobilenet_v1,mobilenet_v2,mobilenet_v3_small", "alphas": "0.75,1.0", "sizes": "96,128"}
#: --quick: two LeNet-5 candidates at 32 and 40 px, one format, a few timed calls (the smoke test's size)
QUICK = {
    "archs": "lenet5",
    "alphas": "",
    "input_sizes": "32,40",
    "formats": "tflite-fp32",
    "per_class": 10,
    "epochs": 1,
    "iterations": 5,
    "duration": 0.0,
    "memory": False,
    "weights_dir": None,
}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=SHARED_WEIGHTS if SHARED_WEIGHTS.is_dir() else None,
        help=f"genuine ImageNet weight files (default: {SHARED_WEIGHTS} when it exists)",
    )
    parser.add_argument("--random-weights", dest="weights_dir", action="store_const", const=None)
    parser.add_argument("--archs", help=f"default: {GENUINE['archs']} with weights, {RANDOM['archs']} without")
    parser.add_argument("--alphas", help="width multipliers ('' : each family's default)")
    parser.add_argument("--input-sizes")
    parser.add_argument("--formats", default="tflite-fp32,tflite-int8,openvino-int8")
    parser.add_argument(
        "--per-class", type=int, default=52, help="training images per class (4 classes; val and test: 96 each)"
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-latency-ms", type=float, default=2.0, help="the search's p50 budget")
    parser.add_argument("--iterations", type=int, default=50, help="timed calls per artifact, at least...")
    parser.add_argument("--duration", type=float, default=1.0, help="...lasting at least this many seconds")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="runs do not measure peak memory")
    parser.add_argument("--quick", action="store_true", help="the smallest search that shows every figure")
    parser.add_argument("--work", type=Path, help="folder for the search and the runs (default: a new one)")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    chosen = GENUINE if args.weights_dir else RANDOM
    args.archs = chosen["archs"] if args.archs is None else args.archs
    args.alphas = chosen["alphas"] if args.alphas is None else args.alphas
    args.input_sizes = chosen["sizes"] if args.input_sizes is None else args.input_sizes
    return args


def _weights(args: argparse.Namespace, work: Path) -> tuple[object, str]:
    """(the search's weights spec, what the output says about them). With a weights folder, its Keras
    Applications files go into a Keras cache of this run's own (KERAS_HOME, set before Keras is imported), so
    ``imagenet`` loads them with nothing downloaded, and EfficientNet-Lite0 takes its file."""
    if not args.weights_dir:
        return "none", "random weights (no weights folder: every head stays at chance)"
    folder = args.weights_dir.resolve()
    models = work / "keras" / "models"
    models.mkdir(parents=True, exist_ok=True)
    for file in folder.glob("*.h5"):
        if not (models / file.name).exists():
            (models / file.name).symlink_to(file)
    os.environ["KERAS_HOME"] = str(models.parent)
    spec = {"efficientnet_lite0": str(folder / EFFICIENTNET_FILE)} if (folder / EFFICIENTNET_FILE).is_file() else {}
    return spec or "imagenet", f"genuine ImageNet weights from {folder} (candidates without a file are skipped)"


def _config(args: argparse.Namespace) -> dict:
    """The settings the search and every timed run share: data, training, export and bench."""
    return {
        "data": {"path": "builtin:synthetic", "max_per_class": args.per_class},
        "train": {"epochs": args.epochs},
        "export": {"calibration_size": 64},
        "bench": {
            "threads": args.threads,
            "min_iterations": args.iterations,
            "min_duration_s": args.duration,
            "memory": args.memory,
        },
    }


class StageClock:
    """Timestamps the search's progress lines: the time from each stage's first line to the next stage's."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.marks: list[tuple[str, float]] = [("setup (data, candidates)", self.start)]

    def __call__(self, line: str) -> None:
        for prefix, name in STAGES:
            if line.startswith(prefix) and name not in (n for n, _ in self.marks):
                self.marks.append((name, time.perf_counter()))

    def durations(self, end: float) -> list[tuple[str, float]]:
        ends = [t for _, t in self.marks[1:]] + [end]
        return [(name, stop - begin) for (name, begin), stop in zip(self.marks, ends)]


def _space(args: argparse.Namespace, weights) -> dict:
    """The search's candidates, as edgepipe.search takes them."""
    return {
        "archs": args.archs.split(","),
        "alphas": [float(a) for a in args.alphas.split(",")] if args.alphas else None,
        "input_sizes": [int(s) for s in args.input_sizes.split(",")],
        "weights": weights,
        "allow_random_weights": weights == "none",
    }


def _by_macs(args: argparse.Namespace, weights) -> list:
    """The candidates that take part (none skipped), fewest MACs first: counted on each network before any clock
    starts, so the two timed runs can go one before the search and one after it."""
    import keras

    from edgepipe.choose.candidates import enumerate_candidates
    from edgepipe.choose.measure import Network, build_network

    space = _space(args, weights)
    found = enumerate_candidates(
        space["archs"], space["alphas"], space["input_sizes"], weights, 3, space["allow_random_weights"], print
    )
    counted = []
    for c in (c for c in found if not c.reason):
        model, counts = build_network(Network(c.arch, c.alpha, c.input_size, 3, 4))
        counted.append((counts["macs"], c))
        del model
        keras.backend.clear_session()
    return [c for _, c in sorted(counted, key=lambda pair: pair[0])]


def _search(args: argparse.Namespace, work: Path, weights):
    import edgepipe

    clock = StageClock()
    result = edgepipe.search(
        config=_config(args),
        **_space(args, weights),
        formats=args.formats.split(","),
        max_latency_ms=args.max_latency_ms,
        threads=args.threads,
        output=work / "search",
        cache=work / "cache" / "measurements.json",  # empty: every candidate is measured, none read from a cache
        echo=clock,
    )
    end = time.perf_counter()
    return result, end - clock.start, clock.durations(end)


def _load() -> str:
    """The 1-minute load average now: the machine is shared, and a busier one makes whatever runs then slower."""
    return f"{os.getloadavg()[0]:.1f}"


def _timed_run(args: argparse.Namespace, candidate, work: Path) -> tuple[float, str]:
    """(seconds of `edgepipe run`, every stage, for one candidate with the search's data, formats and settings;
    the load average before and after it)."""
    import edgepipe

    load = _load()
    start = time.perf_counter()
    edgepipe.run(
        _config(args),
        output=str(work / f"run-{candidate.id}"),
        arch=candidate.arch,
        alpha=candidate.alpha,
        weights=candidate.weights,
        input_size=candidate.input_size,
        formats=args.formats.split(","),
        echo=lambda line: None,
    )
    return time.perf_counter() - start, f"{load} -> {_load()}"


def _fresh_bench(args: argparse.Namespace, result, work: Path) -> float:
    """The winner's artifact (from its run directory) timed by `edgepipe bench` in a process of its own; its
    latency at the budget's percentile in ms."""
    results = json.loads((result.winner_run / "results.json").read_text())
    record = next(r for r in results["records"] if r["format"] == result.winner.format and r.get("latency_ms"))
    artifact = result.winner_run / "artifacts" / Path(record["artifact"]).name
    output = work / "fresh-bench.json"
    command = [sys.executable, "-m", "edgepipe", "bench", str(artifact), "--threads", str(args.threads)]
    command += ["--min-iterations", str(args.iterations), "--min-duration", str(args.duration), "--no-memory"]
    subprocess.run([*command, "--output", str(output)], check=True, capture_output=True, text=True)
    fresh = json.loads(output.read_text())
    assert fresh["conditions"]["rounds"] == "interleaved", fresh["conditions"]
    return fresh["records"][0]["latency_ms"][result.budgets.percentile]


def main() -> None:
    args = _arguments()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgepipe-search-bench-"))
    weights, weights_text = _weights(args, work)
    import keras  # noqa: F401 (loaded before any clock starts: neither side pays the import)

    pair = _by_macs(args, weights)
    pair = [pair[0], pair[-1]]
    first = _timed_run(args, pair[0], work)  # run A, the search, run B: both sides meet the machine's drift
    load = _load()
    result, total, stages = _search(args, work, weights)
    load += " -> " + _load()
    second = _timed_run(args, pair[1], work)
    measured = [r for r in result.rows if r.format]
    candidates = sorted({r.candidate for r in measured})
    skipped = sorted({r.candidate for r in result.rows if not r.format})
    print(
        f"search: {len(candidates)} candidates ({args.archs} x alphas {args.alphas or 'default'} x "
        f"{args.input_sizes} px) x {len(args.formats.split(','))} formats = {len(measured)} artifacts, "
        f"{len(skipped)} skipped; {args.threads} thread(s), {os.cpu_count()} cores"
    )
    print(f"data: builtin:synthetic, {args.per_class} training images per class (+ val and test), {weights_text}")
    print(f"search wall time: {total:.1f} s (load average {load})")
    for name, seconds in stages:
        print(f"  stage {name:<26} {seconds:8.1f} s")
    scored = [r.top1 for r in measured if r.top1 is not None]
    exported = [r for r in measured if r.top1_source == "artifact"]
    print(
        f"accuracy: validation top-1 {min(scored):.1f}-{max(scored):.1f}% over {len(scored)} scored artifact(s); "
        f"{len(exported)} exported and run in the export stage"
    )
    runs = [first, second]
    for c, (seconds, run_load), when in zip(pair, runs, ("before", "after")):
        print(f"edgepipe run {c.id}: {seconds:.1f} s (load average {run_load}; {when} the search)")
    estimate = sum(seconds for seconds, _ in runs) / len(runs) * len(candidates)
    print(f"estimated edgepipe run for all {len(candidates)} candidates: {estimate:.1f} s (mean of the 2 runs)")
    ratio = total / estimate
    print(f"ratio search / all runs: {ratio:.2f} (target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'})")
    winner = result.winner
    print(
        f"winner: {winner.label}: validation top-1 {winner.top1:.1f}%, {result.budgets.percentile} "
        f"{winner.latency_ms:.3f} ms in the search"
    )
    fresh = _fresh_bench(args, result, work)
    budget = result.budgets.max_latency_ms
    print(
        f"winner re-measured in a fresh edgepipe bench: {result.budgets.percentile} {fresh:.3f} ms; budget "
        f"{budget:g} ms; ratio {fresh / budget:.2f} ({'within' if fresh <= budget else 'OVER'} the budget); "
        f"against the search's figure {fresh / winner.latency_ms:.2f}x"
    )
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
