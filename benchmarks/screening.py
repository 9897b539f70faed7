"""How short can the search's screening timing be? Screening figures against full-floor figures, side by side.

`edgepipe search` times every candidate's artifacts with short floors (the screening), then times again, with the
bench section's floors, the artifacts whose screening figure lies within 25% of the latency budget: a figure
further from the line decides alone. So a screening setting is good enough while its figures stay well within
that margin of the full-floor figures; the time it saves is per artifact, in the serial part of the search.

This script converts the networks of the search benchmark (random weights: latency does not depend on them) to
the formats the search times, then, for each network, times its artifacts under every screening setting and under
the full floors (one interleaved session per setting, as the search does), in rotating order, ``--repeats`` times.
Each screening figure is divided by the full-floor figure of the same repeat (measured within seconds of it), so
the machine's drift between repeats does not enter. Prints, per setting: the time per artifact, and the median,
90th percentile and largest |screening / full - 1| over artifacts and repeats; and whether any ratio leaves the
+-20% band inside which a figure cannot be put on the wrong side of a budget without being timed again (a figure
within 25% of the line is retimed: one more than 25% away from it, off by less than 20%, stays on its side).

    python benchmarks/screening.py [--archs A,B] [--alphas 0.35,0.5] [--input-sizes 112,144,176]
                                   [--formats tflite-fp32,tflite-int8,openvino-int8] [--durations 0.3,0.15]
                                   [--iterations 30,20] [--repeats 3] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: a figure off by less than this stays on its side of a budget it is more than 25% from (1 - 1/1.25)
BAND = 0.2
#: the networks of the search benchmark's genuine-weights run, with random weights: every width that exists (15)
NETWORKS = {"archs": "mobilenet_v2,mobilenet_v1,efficientnet_lite0", "alphas": "0.25,0.35,0.5", "sizes": "112,144,176"}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=NETWORKS["archs"])
    parser.add_argument("--alphas", default=NETWORKS["alphas"], help="width multipliers ('' : each family's default)")
    parser.add_argument("--input-sizes", default=NETWORKS["sizes"])
    parser.add_argument("--formats", default="tflite-fp32,tflite-int8,openvino-int8")
    parser.add_argument("--durations", default="0.3,0.15", help="screening seconds per artifact, one per setting")
    parser.add_argument("--iterations", default="30,20", help="screening calls per artifact, one per setting")
    parser.add_argument("--full-duration", type=float, default=1.0, help="the full floors: seconds per artifact...")
    parser.add_argument("--full-iterations", type=int, default=50, help="...and calls")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one LeNet-5 at 32 px, one format, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.archs, args.alphas, args.input_sizes, args.formats = "lenet5", "", "32", "tflite-fp32"
        args.durations, args.iterations, args.full_duration, args.full_iterations = "0.02", "5", 0.05, 10
        args.repeats = 1
    return args


def _networks(args: argparse.Namespace) -> list:
    """The networks that exist at the asked widths and sizes (the others are said and left out)."""
    from edgepipe.choose.candidates import enumerate_candidates
    from edgepipe.choose.measure import Network

    alphas = [float(a) for a in args.alphas.split(",")] if args.alphas else None
    sizes = [int(s) for s in args.input_sizes.split(",")]
    found = enumerate_candidates(args.archs.split(","), alphas, sizes, "none", 3, True, print)
    return [Network(c.arch, c.alpha, c.input_size, 3, 4) for c in found if not c.reason]


def _time(paths: list[Path], conditions, target) -> tuple[dict[str, float], float]:
    """({artifact name: p50 ms}, seconds per artifact) of one interleaved session."""
    start = time.perf_counter()
    results = target.bench(paths, conditions, lambda line: None)
    spent = (time.perf_counter() - start) / len(paths)
    return {Path(r.artifact).name: r.latency_ms["p50"] for r in results.records if r.latency_ms}, spent


def main() -> None:
    args = _arguments()
    import dataclasses

    from edgepipe.api import _measure_target
    from edgepipe.choose.measure import Conditions, buildable_formats, prepare

    durations = [float(d) for d in args.durations.split(",")]
    iterations = [int(i) for i in args.iterations.split(",")]
    if len(durations) != len(iterations):
        raise SystemExit("--durations and --iterations take one value per screening setting")
    base = Conditions(threads=args.threads, warmup_s=0.05, calibration_images=8, memory=False)
    settings = {
        f"screening {n} calls, {d:g} s": dataclasses.replace(base, min_iterations=n, min_duration_s=d)
        for d, n in zip(durations, iterations)
    }
    full_name = f"full floors {args.full_iterations} calls, {args.full_duration:g} s"
    settings[full_name] = dataclasses.replace(
        base, warmup_s=0.2, min_iterations=args.full_iterations, min_duration_s=args.full_duration
    )
    target = _measure_target(None, None, "edgepipe", "")
    formats = buildable_formats(args.formats.split(","))
    ratios: dict[str, list[float]] = {name: [] for name in settings if name != full_name}
    spent: dict[str, list[float]] = {name: [] for name in settings}
    networks = _networks(args)
    print(f"{len(networks)} network(s) x {len(formats)} format(s), {args.repeats} repeat(s), {args.threads} thread(s)")
    with tempfile.TemporaryDirectory(prefix="edgepipe-screening-") as work:
        for i, network in enumerate(networks):
            made = prepare(network, formats, base, Path(work) / f"{i:03d}", lambda line: None)
            paths = [made.folder / r["file"] for r in made.exported if r["status"] == "ok"]
            if not paths:
                print(f"  {network.label}: nothing to time ({made.reason or 'no format was exported'})")
                continue
            names = list(settings)
            for repeat in range(args.repeats):
                order = names[(i + repeat) % len(names) :] + names[: (i + repeat) % len(names)]  # rotating order
                figures = {}
                for name in order:
                    figures[name], seconds = _time(paths, settings[name], target)
                    spent[name].append(seconds)
                for name in ratios:
                    for artifact, p50 in figures[name].items():
                        if artifact in figures[full_name]:
                            ratios[name].append(p50 / figures[full_name][artifact])
            print(f"  {network.label}: {len(paths)} artifact(s) timed")
    print(f"{sum(len(r) for r in ratios.values()) // max(len(ratios), 1)} screening figures per setting")
    print(f"  {full_name:34s} {statistics.mean(spent[full_name]):.2f} s per artifact")
    for name, values in ratios.items():
        errors = sorted(abs(r - 1) for r in values)
        p90 = errors[min(len(errors) - 1, int(0.9 * len(errors)))]
        outside = sum(e >= BAND for e in errors)
        print(
            f"  {name:34s} {statistics.mean(spent[name]):.2f} s per artifact; |screening / full - 1|: median "
            f"{statistics.median(errors):.1%}, p90 {p90:.1%}, largest {errors[-1]:.1%}; "
            f"{outside} of {len(errors)} outside the +-{BAND:.0%} band"
        )


if __name__ == "__main__":
    main()
