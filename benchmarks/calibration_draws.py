"""How far the calibration draw moves INT8 top-1: several seeded draws per calibration size and method.

Takes a run directory (its trained model.keras, its training split as the calibration pool, its validation
split to judge by). Every INT8 format is made with its first recipe only (the one edgepipe keeps when it is
within budget: TFLite converter min/max, ONNX Runtime QDQ with the given calibration method, NNCF for
OpenVINO), once per draw, and run on the validation split through its engine. Prints, per format, size and
method: top-1 over the draws (mean, lowest, highest), the spread in percentage points and in images, and the
mean drop against the Keras FP32 model on the same images; then the most stable setting per format (smallest
spread, then smallest mean drop, then fewest images).

    python benchmarks/real_photos.py                  # leaves a run directory on real photos
    python benchmarks/calibration_draws.py RUN_DIR [--draws 5] [--sizes 64,128,256] \\
        [--methods minmax,entropy,percentile] [--formats tflite-int8,onnx-int8]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def _settings(formats: list[str], sizes: list[int], methods: list[str]) -> list[tuple[str, int, str]]:
    """(format, size, method) to measure: calibration methods only where the backend offers a choice (ONNX)."""
    return [
        (f, size, method)
        for f in formats
        for size in sizes
        for method in (methods if f.startswith("onnx") else ["minmax"])
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an edgepipe run directory (trained model and dataset)")
    parser.add_argument("--draws", type=int, default=5, help="seeded calibration draws per setting")
    parser.add_argument("--sizes", default="64,128,256", help="calibration set sizes (images)")
    parser.add_argument("--methods", default="minmax,entropy,percentile", help="ONNX Runtime calibration methods")
    parser.add_argument("--formats", default="tflite-int8,onnx-int8")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np

    from edgepipe.architectures.loading import load_keras_model
    from edgepipe.backends import ExportContext, formats
    from edgepipe.calibration import draw
    from edgepipe.data import materialize
    from edgepipe.fileio import read_json
    from edgepipe.pipeline.rundir import RunDir
    from edgepipe.training.controls import predict_arrays
    from edgepipe.verification import ArtifactScorer

    run = RunDir(args.run)
    model = load_keras_model(str(run.model), False)
    size = int(model.inputs[0].shape[1])
    dataset = materialize(read_json(run.dataset_index), size, int(model.inputs[0].shape[-1]))
    pool, val = dataset.train, dataset.splits["val"]
    reference = predict_arrays(model, val.images.astype(np.float32))
    reference_top1 = float(np.mean(reference.argmax(1) == val.labels))
    scorer = ArtifactScorer(val.images, val.labels, args.threads)
    built = read_json(run.build_info)
    print(
        f"{built['architecture']} at {size}x{size}: calibration pool {len(pool)} training images, judged on "
        f"{len(val)} validation images (one image = {100 / len(val):.2f} pp); Keras FP32 top-1 "
        f"{reference_top1:.2%}; {args.draws} seeded draws per setting, first recipe only"
    )
    work = Path(tempfile.mkdtemp(prefix="edgepipe-draws-"))
    rows = []
    try:
        contexts: dict[str, ExportContext] = {}
        for name, count, method in _settings(
            args.formats.split(","), [int(s) for s in args.sizes.split(",")], args.methods.split(",")
        ):
            fmt = formats().get(name)
            ctx = contexts.setdefault(
                name,
                ExportContext(
                    model, run.read_labels(), built["preprocessing"], workdir_parent=work, accuracy_budget_pp=100.0
                ),
            )
            ctx.calibration_method = method
            top1s, seconds = [], []
            for seed in range(args.draws):
                ctx.calibration = draw(pool.images, pool.labels, count, seed)
                path = work / f"{name}-{count}-{method}-{seed}{fmt.suffix}"
                start = time.perf_counter()
                fmt.build(ctx, path)
                seconds.append(time.perf_counter() - start)
                top1s.append(scorer(path, name).top1)
            spread = (max(top1s) - min(top1s)) * 100
            rows.append(
                (
                    name,
                    len(ctx.calibration),
                    method,
                    top1s,
                    spread,
                    (reference_top1 - statistics.mean(top1s)) * 100,
                    statistics.median(seconds),
                )
            )
            print(
                f"  {name:<13} {len(ctx.calibration):>4} images {method:<10} top-1 mean "
                f"{statistics.mean(top1s):.2%} (lowest {min(top1s):.2%}, highest {max(top1s):.2%}); spread "
                f"{spread:.2f} pp = {round(spread * len(val) / 100)} image(s); mean drop {rows[-1][5]:+.2f} pp; "
                f"{rows[-1][6]:.1f} s per draw"
            )
        image_pp = 100 / len(val)
        for name in dict.fromkeys(r[0] for r in rows):
            mine = [r for r in rows if r[0] == name]
            best = min(mine, key=lambda r: (round(r[4], 6), round(r[5], 6), r[1]))
            print(
                f"most stable for {name}: {best[1]} images, {best[2]} (spread {best[4]:.2f} pp, mean drop "
                f"{best[5]:+.2f} pp over {args.draws} draws)"
            )
            if max(r[4] for r in mine) <= image_pp + 1e-9:
                print(
                    "  every setting's draws stay within one validation image of each other: on this split no "
                    "setting is measurably more stable than another"
                )
    finally:
        for ctx in contexts.values():
            ctx.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
