"""How much faster is INT8 than FP32 on each CPU engine, and where does the INT8 time go?

One model (random weights: speed does not depend on them) is exported to FP32 and INT8 for LiteRT, ONNX
Runtime and OpenVINO; then, in ONE process, every file runs in alternating rounds (edgepipe's harness,
batch 1), and each engine's FP32 / INT8 p50 ratio is printed side by side. Each file is then profiled per op
with its engine's own profiler (after timing, in a session of its own): time per op family INT8 against
FP32, the ops outside the delegate, the float ops of the INT8 file, and the diagnosis.

    python benchmarks/int8_speedup.py [--model mobilenet_v2:1.0] [--size 224] [--threads 1] [--rounds 7]
                                      [--iterations 100] [--engines litert,onnxruntime,openvino]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: engine -> (FP32 format, INT8 format)
PAIRS = {
    "litert": ("tflite-fp32", "tflite-int8"),
    "onnxruntime": ("onnx-fp32", "onnx-int8"),
    "openvino": ("openvino-fp32", "openvino-int8"),
}
#: LiteRT INT8 should be at least this much faster than its FP32
TARGET = 1.8


#: the same INT8 format exported again with these tflite options: the input stem kept in float, timed beside
#: the default (full-integer) file
FLOAT_STEM = {"tflite": {"float_stem": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2:1.0", help="architecture[:alpha]")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--engines", default=",".join(PAIRS))
    parser.add_argument("--work", type=Path, help="folder for the exported files (default: a new temporary one)")
    args = parser.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    work = args.work or Path(tempfile.mkdtemp(prefix="edgepipe-int8-speedup-"))
    paths, model_file = export(args.model, args.size, [f for e in engines for f in PAIRS[e]], work)
    if "litert" in engines:  # the float-stem file, timed in the same rounds
        stem, _ = export(args.model, args.size, ["tflite-int8"], work / "float-stem", FLOAT_STEM)
        if "tflite-int8" in stem:
            paths["tflite-int8 (float stem)"] = stem["tflite-int8"]
    print(
        f"{args.model} at {args.size}x{args.size}, {args.threads} thread(s), batch 1, {args.rounds} alternating rounds"
    )
    p50 = time_side_by_side(paths, args.size, args.threads, args.rounds, args.iterations)
    for engine in engines:
        fp32, int8 = PAIRS[engine]
        if fp32 in p50 and int8 in p50:
            ratio = p50[fp32] / p50[int8]
            target = f" (target {TARGET}x: {'met' if ratio >= TARGET else 'not met'})" if engine == "litert" else ""
            print(
                f"  {engine:<12} FP32 {p50[fp32]:8.3f} ms   INT8 {p50[int8]:8.3f} ms   INT8 speed-up {ratio:.2f}x{target}"
            )
    stem = p50.get("tflite-int8 (float stem)")
    if stem and "tflite-fp32" in p50:
        print(
            f"  {'litert':<12} FP32 {p50['tflite-fp32']:8.3f} ms   INT8 {stem:8.3f} ms   INT8 speed-up "
            f"{p50['tflite-fp32'] / stem:.2f}x (input stem in float: export.tflite.float_stem true)"
        )
    profile_all(paths, model_file, args.threads)


def export(
    spec: str, size: int, formats: list[str], work: Path, options: dict | None = None
) -> tuple[dict[str, Path], Path]:
    """{format: file} of the model exported to ``formats`` (random weights and calibration pixels, export
    ``options`` by config section), and the Keras model file."""
    import numpy as np

    import edgepipe
    from edgepipe.architectures import build_classifier

    arch, _, alpha = spec.partition(":")
    model = build_classifier(arch, 10, size, 3, float(alpha) if alpha else None, "none")
    model_file = work / "model.keras"
    work.mkdir(parents=True, exist_ok=True)
    model.save(model_file)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (48, size, size, 3)).astype(np.uint8), rng.integers(0, 10, 48)
    exported = edgepipe.export(
        model_file,
        formats,
        calibration=(images, labels),
        calibration_size=32,
        output=work / "artifacts",
        accuracy_budget_pp=100.0,
        qat={"epochs": 0},
        options=options,
        echo=lambda line: None,
    )
    # random weights: an INT8 file may fail verification against them; its speed is what is studied here
    return {f: exported.path(f) for f in formats if exported[f].status.measured}, model_file


def time_side_by_side(
    paths: dict[str, Path], size: int, threads: int, rounds: int, iterations: int
) -> dict[str, float]:
    """p50 (ms) of every file, all timed in one process in alternating rounds."""
    import contextlib

    import numpy as np

    from edgepipe.backends import create_runner
    from edgepipe.harness import BenchSettings, measure_interleaved

    images = np.random.default_rng(1).integers(0, 256, (8, size, size, 3)).astype(np.uint8)
    settings = BenchSettings(batch_size=1, min_iterations=iterations, min_duration_s=0.0)
    with contextlib.ExitStack() as stack:
        runners = {f: stack.enter_context(create_runner(p, threads=threads)) for f, p in paths.items()}
        measured = measure_interleaved(runners, images, settings, rounds)
    return {f: m.latency_ms["p50"] for f, m in measured.items() if not m.failed}


def profile_all(paths: dict[str, Path], model_file: Path, threads: int) -> None:
    """Each file profiled per op, then INT8 against FP32 per op family, with what the INT8 profiles show."""
    import edgepipe
    from edgepipe.profiles import float_ops, share
    from edgepipe.report.profile import console_lines, sections

    profiles = [edgepipe.profile(p, threads=threads, model=model_file, echo=lambda line: None) for p in paths.values()]
    for profile in profiles:
        print()
        for line in console_lines(profile):
            print(line)
        if profile.integer and profile.status == "ok":
            outside = [op for op in profile.ops if op.delegated is False]
            floats = float_ops(profile)
            print(
                f"  outside the delegate: {share(sum(o.time_ms for o in outside), profile):.1%} in {len(outside)} op(s); "
                f"float ops of this INT8 file: {share(sum(o.time_ms for o in floats), profile):.1%} in {len(floats)}"
            )
    for section in sections(profiles):
        if section.title.startswith("INT8 against FP32"):
            print("\nINT8 against FP32 per op family (per-op time, ms):")
            for table in section.tables:
                print("  " + " | ".join(table.header))
                for row in table.rows:
                    print("  " + " | ".join(row))


if __name__ == "__main__":
    main()
