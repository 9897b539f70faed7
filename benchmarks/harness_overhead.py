"""Fidelity of the latency harness: its p50 against a bare loop of each engine's own invoke, in one run.

The harness times ``runner.infer`` (input staging, quantization, engine, output
dequantization) in interleaved rounds; the bare loop times only the engine's invoke on
staged input. Both are repeated in alternating order, so drift cancels in their ratio.
Target: the harness's p50 within 1.05x of the bare loop, for every engine.

    python benchmarks/harness_overhead.py ARTIFACT [ARTIFACT ...] [--engines openvino] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGET = 1.05


def bare_p50(invoke, iterations: int) -> float:
    import numpy as np

    for _ in range(10):
        invoke()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        invoke()
        samples.append((time.perf_counter() - start) * 1e3)
    return float(np.median(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--engines", default="", help="engines to try besides each artifact's default, e.g. openvino")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()

    import numpy as np

    from edgepipe.backends import create_runner, engines_for, identify
    from edgepipe.harness import BenchSettings, measure_interleaved

    extra = tuple(e for e in args.engines.split(",") if e)
    print(
        f"{args.threads} thread(s), batch 1, {args.iterations} calls x {args.repeats} alternating repeats; "
        f"target: harness / bare <= {TARGET}x"
    )
    for path in args.artifacts:
        artifact = identify(path)
        for engine in engines_for(artifact, extra):
            with create_runner(artifact, threads=args.threads, engine=engine.name) as runner:
                shape = tuple(d or 1 for d in runner.input_spec().shape)
                # raw uint8 pixels, as the bench stage passes its images
                images = np.random.default_rng(0).integers(0, 256, (8, *shape[1:]), dtype=np.uint8)
                settings = BenchSettings(batch_size=1, warmup=20, min_iterations=args.iterations, min_duration_s=0.0)
                harness, bare = [], []
                for repeat in range(args.repeats):
                    order = ("harness", "bare") if repeat % 2 == 0 else ("bare", "harness")
                    for kind in order:
                        if kind == "harness":
                            timing = measure_interleaved({0: runner}, images, settings, rounds=1)[0]
                            harness.append(timing.latency_ms["p50"])
                        else:
                            runner.infer(images[:1])  # stage a real input for the bare loop
                            bare.append(bare_p50(runner.invoke_only(), args.iterations))
            h, b = float(np.median(harness)), float(np.median(bare))
            ratio = h / b
            print(
                f"{artifact.label:<16} [{engine.name:<11}] harness p50 {h:.4f} ms (spread {np.ptp(harness) / h:.1%}), "
                f"bare {b:.4f} ms (spread {np.ptp(bare) / b:.1%}): {ratio:.3f}x "
                f"{'meets' if ratio <= TARGET else 'misses'} the {TARGET}x target"
            )


if __name__ == "__main__":
    main()
