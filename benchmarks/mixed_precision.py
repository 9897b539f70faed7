"""Does keeping layers in higher precision give the speed away? The INT8 artifacts a run kept against the plain
first recipe of the same format, timed side by side.

Takes a run directory. For every INT8 artifact in it, the plain first recipe (TFLite converter min/max, ONNX
Runtime QDQ, NNCF for OpenVINO) is made again from the run's model and calibration set, and both files run
on their engine in one process in alternating rounds (edgepipe's harness, the run's held-out images, batch 1).
Prints each p50, the ratio kept / plain (target: at most 1.15x), and which recipe the run kept and what it
kept in higher precision. When the run kept the plain recipe itself, the ratio compares two builds of it.

    python benchmarks/real_photos.py            # leaves a run directory on real photos
    python benchmarks/mixed_precision.py RUN_DIR [--threads 1] [--rounds 7] [--iterations 100]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

TARGET = 1.15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an edgepipe run directory with INT8 artifacts")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()

    from edgepipe.architectures.loading import load_keras_model
    from edgepipe.backends import ExportContext, create_runner, formats, identify
    from edgepipe.calibration import draw
    from edgepipe.data import materialize
    from edgepipe.fileio import read_json
    from edgepipe.harness import BenchSettings, measure_interleaved
    from edgepipe.pipeline.rundir import RunDir

    run = RunDir(args.run)
    index = read_json(run.artifacts_index)
    kept = [a for a in index["artifacts"] if a.get("precision") == "int8" and a.get("status") == "ok"]
    if not kept:
        raise SystemExit(f"{run.path} holds no INT8 artifact that exported and verified")
    model = load_keras_model(str(run.model), False)
    size, channels = int(model.inputs[0].shape[1]), int(model.inputs[0].shape[-1])
    dataset = materialize(read_json(run.dataset_index), size, channels)
    described = index["calibration"]
    calibration = draw(dataset.train.images, dataset.train.labels, described["images"], described["seed"])
    if calibration.digest != described["sha256"]:
        raise SystemExit("the run's calibration set could not be drawn again (its images changed)")
    built = read_json(run.build_info)
    images = dataset.heldout.images[:16]
    settings = BenchSettings(batch_size=1, min_iterations=args.iterations, min_duration_s=0.0)
    print(
        f"{built['architecture']} at {size}x{size}, {args.threads} thread(s), batch 1, {args.rounds} alternating "
        f"rounds; target: kept / plain p50 <= {TARGET}x"
    )
    work = Path(tempfile.mkdtemp(prefix="edgepipe-mixed-"))
    try:
        for entry in kept:
            name = entry["format"]
            fmt = formats().get(name)
            budget = entry["details"].get("int8_budget") or {}
            ctx = ExportContext(
                model,
                run.read_labels(),
                built["preprocessing"],
                calibration,
                workdir_parent=work,
                accuracy_budget_pp=100.0,
            )  # every recipe is within 100 pp: the first is kept
            plain = work / f"plain-{name}{fmt.suffix}"
            try:
                fmt.build(ctx, plain)
            finally:
                ctx.close()
            runners = {
                "kept": create_runner(identify(run.artifacts_dir / entry["file"], entry), threads=args.threads),
                "plain": create_runner(identify(plain), threads=args.threads),
            }
            for runner in runners.values():
                runner.activate()
            try:
                timing = measure_interleaved(runners, images, settings, rounds=args.rounds)
            finally:
                for runner in runners.values():
                    runner.deactivate()
            failed = {key: t.error for key, t in timing.items() if t.failed}
            if failed:
                print(f"  {name:<14} could not be timed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
                continue
            p50 = {key: t.latency_ms["p50"] for key, t in timing.items()}
            spread = {key: t.rounds["spread"] for key, t in timing.items()}
            ratio = p50["kept"] / p50["plain"]
            chosen = budget.get("chosen_attempt")
            higher = ", ".join(budget.get("kept_higher_precision") or []) or "none"
            print(
                f"  {name:<14} kept (attempt {chosen}; higher precision: {higher}) p50 {p50['kept']:.3f} ms "
                f"(spread {spread['kept']:.1%}), plain first recipe {p50['plain']:.3f} ms (spread "
                f"{spread['plain']:.1%}): {ratio:.3f}x {'meets' if ratio <= TARGET else 'misses'} the {TARGET}x target"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
