"""Which engine runs each model fastest on this machine, and does edgepipe find and measure it fairly?

For each model (random weights: speed does not depend on them), edgepipe exports TFLite, ONNX and
OpenVINO files in FP32 and INT8, then in ONE process, in alternating rounds (A B C, then C B A, ...):
bare loops of each engine's own API over each file and thread count (LiteRT; ONNX Runtime with
spinning on and off; OpenVINO on its IR), edgepipe's harness over the same runners, and the artifact
edgepipe recommends after `bench --tune`. It prints the p50 table and each target with its ratio.

    python benchmarks/engines.py [--models mobilenet_v2:0.35,mobilenet_v2:1.0,resnet50] [--size 224]
                                 [--threads 1,2] [--rounds 7] [--iterations 100] [--formats a,b,...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FORMATS = ["tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"]


# ------------------------------------------------------------------------------- bare engine loops


def _bare_litert(path: Path, threads: int, image):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    detail = it.get_input_details()[0]
    it.set_tensor(detail["index"], image.astype(detail["dtype"]) if detail["dtype"] != np.float32 else image)
    return it.invoke


def _bare_ort(path: Path, threads: int, image, spinning: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: image}
    return lambda: session.run(None, feed)


def _bare_openvino(path: Path, threads: int, image):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.inputs[0]: list(image.shape)})  # a static shape, as OpenVINO recommends for latency
    compiled = core.compile_model(
        model,
        "CPU",
        {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"},
    )
    request = compiled.create_infer_request()
    return lambda: request.infer({0: image}, share_inputs=True)


def bare_contenders(paths: dict, threads: list[int], image) -> dict:
    """(label) -> zero-argument call, for every file, engine, thread count and setting worth trying."""
    out = {}
    for t in threads:
        for fmt, path in paths.items():
            family = fmt.split("-")[0]
            if family == "tflite":
                out[(fmt, "litert", t, "bare")] = _bare_litert(path, t, image)
            elif family == "onnx":
                for spinning in (True, False):
                    out[(fmt, "onnxruntime", t, f"bare, spinning {'on' if spinning else 'off'}")] = _bare_ort(
                        path, t, image, spinning
                    )
            else:
                out[(fmt, "openvino", t, "bare, LATENCY hint")] = _bare_openvino(path, t, image)
    return out


def interleave(calls: dict, rounds: int, iterations: int) -> dict:
    """p50 (ms) per contender over alternating rounds, and each round's p50."""
    import numpy as np

    samples = {key: [] for key in calls}
    per_round = {key: [] for key in calls}
    for call in calls.values():
        for _ in range(10):
            call()
    order = list(calls)
    for r in range(rounds):
        for key in order if r % 2 == 0 else order[::-1]:
            taken = []
            for _ in range(iterations):
                start = time.perf_counter()
                calls[key]()
                taken.append((time.perf_counter() - start) * 1e3)
            samples[key] += taken
            per_round[key].append(float(np.median(taken)))
    return {key: {"p50": float(np.median(samples[key])), "rounds": per_round[key]} for key in calls}


# ------------------------------------------------------------------------------- memory, outside

OUTSIDE = """
import sys, numpy as np
path, engine, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
shape = [int(v) for v in sys.argv[4].split(",")]
image = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
if engine == "litert":
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=path, num_threads=threads); it.allocate_tensors(); d = it.get_input_details()[0]
    it.set_tensor(d["index"], image.astype(d["dtype"]))
    run = it.invoke
elif engine == "onnxruntime":
    import onnxruntime as ort
    o = ort.SessionOptions(); o.intra_op_num_threads = threads
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"]); feed = {s.get_inputs()[0].name: image}
    run = lambda: s.run(None, feed)
else:
    import openvino as ov
    c = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
    r = c.create_infer_request(); run = lambda: r.infer({0: image})
for _ in range(20):
    run()
# VmHWM, not getrusage: a child's ru_maxrss keeps the parent's size at fork across exec
print([int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0])
"""


def outside_peak_mb(path: Path, engine: str, threads: int, shape: tuple) -> float:
    """Peak resident memory of a process that only loads and runs the file with the engine's own API."""
    out = subprocess.run(
        [sys.executable, "-c", OUTSIDE, str(path), engine, str(threads), ",".join(map(str, shape))],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- one model


def study(
    arch: str, alpha, size: int, threads: list[int], rounds: int, iterations: int, work: Path, formats: list[str]
) -> dict:
    import numpy as np

    import edgepipe
    from edgepipe.architectures import build_classifier
    from edgepipe.backends import create_runner, identify
    from edgepipe.harness.memory import measure_memory
    from edgepipe.report.table import analyse

    quiet = lambda line: None  # noqa: E731
    model = build_classifier(arch, 10, size, 3, alpha, "none")
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (64, size, size, 3)).astype(np.uint8), rng.integers(0, 10, 64)
    out = work / f"{arch}-{alpha}"
    exported = edgepipe.export(
        model,
        formats,
        calibration=(images, labels),
        calibration_size=32,
        output=out,
        accuracy_budget_pp=100.0,
        echo=quiet,
    )
    # random weights: INT8 may fail verification against them, and its speed is what is studied here
    paths = {f: exported.path(f) for f in formats if exported[f].status.measured}
    image = images[:1].astype(np.float32)
    tuned = edgepipe.bench(
        list(paths.values()),
        threads=[max(threads)],
        engines=["openvino"],
        tune=True,
        memory=False,
        min_iterations=max(10, iterations // 2),
        min_duration_s=0.0,
        echo=quiet,
    )
    _, verdicts = analyse(tuned)
    choice = next(iter(verdicts.values()))["recommended"]
    chosen = next(r for r in tuned.records if r.artifact == choice["artifact"] and r.engine == choice["engine"])
    calls = bare_contenders(paths, threads, image)
    runners = {}
    for fmt, path in paths.items():
        for engine in {"tflite": ["litert"], "onnx": ["onnxruntime"], "openvino": ["openvino"]}[fmt.split("-")[0]]:
            for t in threads:
                runners[(fmt, engine, t, "edgepipe harness")] = create_runner(identify(path), threads=t, engine=engine)
    for runner in runners.values():
        runner.activate()
    recommended = create_runner(
        identify(chosen.artifact), threads=chosen.threads, engine=chosen.engine, settings=_settings(chosen)
    ).activate()
    key = (chosen.format, chosen.engine, chosen.threads, "edgepipe's recommendation, tuned")
    for label, runner in {**runners, key: recommended}.items():
        runner.prepare(1)
        calls[label] = (lambda r: lambda: r.infer(image))(runner)
    timing = interleave(calls, rounds, iterations)
    memory = {}
    for fmt, path in paths.items():
        engine = {"tflite": "litert", "onnx": "onnxruntime", "openvino": "openvino"}[fmt.split("-")[0]]
        ours = measure_memory(identify(path), engine, "cpu", 1, None, 1, image.shape)
        memory[fmt] = ((ours.figures or {}).get("peak_rss_with_load_mb"), outside_peak_mb(path, engine, 1, image.shape))
    return {"timing": timing, "memory": memory, "recommended": key}


def _settings(record):
    from edgepipe.backends import engines

    engine = engines().get(record.engine)
    if engine.settings is None:
        return None
    names = {f for f in engine.settings.__dataclass_fields__}
    return engine.settings(**{k: v for k, v in record.settings.items() if k in names})


def report(name: str, result: dict, threads: list[int]) -> None:
    timing = result["timing"]
    print(f"\n{name}: p50 ms, batch 1 (median of alternating rounds; spread = (max-min)/median of round p50s)")
    for key in sorted(timing, key=lambda k: (k[2], timing[k]["p50"])):
        rounds = timing[key]["rounds"]
        spread = (max(rounds) - min(rounds)) / (sorted(rounds)[len(rounds) // 2] or 1)
        print(f"  {key[2]} thr  {key[0]:<14} {key[1]:<11} {key[3]:<34} {timing[key]['p50']:8.3f}  spread {spread:.1%}")
    bare = {k: v["p50"] for k, v in timing.items() if k[3].startswith("bare")}
    fastest = min(bare, key=bare.get)
    rec = result["recommended"]
    print(
        f"  target: recommended ({rec[0]} on {rec[1]}, {rec[2]} thr) within 1.05x of the fastest bare loop "
        f"({fastest[0]} on {fastest[1]}, {fastest[2]} thr, {fastest[3]}): {timing[rec]['p50'] / bare[fastest]:.3f}x"
    )
    for (fmt, engine, t, kind), value in timing.items():
        if kind == "edgepipe harness":
            twin = next(
                (k for k in bare if k[:3] == (fmt, engine, t) and ("spinning on" in k[3] or engine != "onnxruntime")),
                None,
            )
            if twin:
                print(
                    f"  target: harness within 1.05x of the bare loop, {fmt} on {engine} {t} thr: "
                    f"{value['p50'] / bare[twin]:.3f}x"
                )
    if len(threads) > 1 and ("onnx-fp32", "onnxruntime", 1, "bare, spinning on") in bare:
        for spin in ("on", "off"):
            one, two = (bare[("onnx-fp32", "onnxruntime", t, f"bare, spinning {spin}")] for t in (1, max(threads)))
            print(
                f"  ONNX Runtime FP32 {max(threads)} threads vs 1 (spinning {spin}): {one / two:.2f}x "
                f"(target at least 1.7x with spinning on, MobileNetV2 1.0)"
            )
    for t in threads:
        fp32, int8 = (
            bare.get(("onnx-fp32", "onnxruntime", t, "bare, spinning on")),
            bare.get(("onnx-int8", "onnxruntime", t, "bare, spinning on")),
        )
        if fp32 and int8:
            print(f"  target: ONNX Runtime INT8 at least 1.3x faster than FP32 ({t} thr): {fp32 / int8:.2f}x")
    for fmt, (ours, outside) in result["memory"].items():
        if ours and outside:
            print(
                f"  target: peak memory within 10% of an outside measurement, {fmt}: edgepipe {ours:.0f} MB, "
                f"outside {outside:.0f} MB ({ours / outside - 1:+.1%})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2:0.35,mobilenet_v2:1.0,resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for the exported files (default: a temporary one)"
    )
    parser.add_argument("--formats", default=",".join(FORMATS))
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="edgepipe-engines-"))
    print(f"{os.cpu_count()} cores; {args.rounds} alternating rounds x {args.iterations} calls per contender")
    for spec in args.models.split(","):
        arch, _, alpha = spec.partition(":")
        result = study(
            arch,
            float(alpha) if alpha else None,
            args.size,
            threads,
            args.rounds,
            args.iterations,
            work,
            args.formats.split(","),
        )
        report(f"{arch}" + (f" alpha {alpha}" if alpha else "") + f" at {args.size}", result, threads)


if __name__ == "__main__":
    main()
