"""Fidelity of the latency harness: its p50 against a bare loop of the engine's own invoke, in one run.

The harness times ``runner.infer`` (input staging, quantization, engine, output
dequantization); the bare loop times only the engine's invoke on staged input.
Their ratio says how much the harness adds; repeating both shows run-to-run spread.

    python benchmarks/harness_overhead.py ARTIFACT [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()

    import numpy as np

    from edgepipe.backends import create_runner
    from edgepipe.harness import BenchSettings, measure_latency

    with create_runner(args.artifact, threads=args.threads) as runner:
        shape = tuple(d or 1 for d in runner.input_spec().shape)
        images = np.random.default_rng(0).uniform(0, 255, (8, *shape[1:])).astype(np.float32)
        settings = BenchSettings(batch_size=1, warmup=20, min_iterations=args.iterations, min_duration_s=0.0)
        harness, engine, bare = [], [], []
        for _ in range(args.repeats):
            measured = measure_latency(runner, images, settings)
            harness.append(measured["latency_ms"]["p50"])
            engine.append(measured.get("compute_ms", {}).get("p50", float("nan")))
            runner.infer(images[:1])  # stage a real input for the bare loop
            invoke = runner.invoke_only()
            for _ in range(20):
                invoke()
            samples = []
            for _ in range(args.iterations):
                start = time.perf_counter()
                invoke()
                samples.append((time.perf_counter() - start) * 1e3)
            bare.append(float(np.median(samples)))
    h, e, b = np.asarray(harness), np.asarray(engine), np.asarray(bare)
    print(f"{args.artifact}: {runner.engine}, {args.threads} thread(s), batch 1, {args.iterations} calls x {args.repeats} repeats")
    print(f"harness p50:   median {np.median(h):.4f} ms, spread (max-min)/median {np.ptp(h) / np.median(h):.1%}")
    print(f"bare loop p50: median {np.median(b):.4f} ms, spread (max-min)/median {np.ptp(b) / np.median(b):.1%}")
    print(f"harness engine-only p50 (compute_ms): median {np.median(e):.4f} ms")
    print(f"harness / bare: {np.median(h) / np.median(b):.3f}x end to end ({(np.median(h) / np.median(b) - 1) * 100:+.1f}%: "
          "input staging and output conversion included)")
    print(f"harness engine-only / bare: {np.median(e) / np.median(b):.3f}x ({(np.median(e) / np.median(b) - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
