"""Genuine ImageNet MobileNetV2 features on real photos: edgepipe's feature extraction against a linear
probe on the same frozen features, and the INT8 artifacts against their FP32 model.

Needs the Keras ImageNet weights (in the Keras cache, or ../shared/weights, copied into a
private cache here) and scikit-image. Prints figures measured in this one run:

    python benchmarks/real_photos.py [--input-size 224] [--alpha 0.35] [--epochs 30] [--formats a,b]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--formats", default="tflite-fp32,tflite-int8,onnx-fp32,onnx-int8,openvino-int8")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgepipe-photos-"))
    if SHARED.is_dir() and "KERAS_HOME" not in os.environ:
        (work / "keras" / "models").mkdir(parents=True)
        for file in SHARED.glob("*.h5"):
            shutil.copy(file, work / "keras" / "models" / file.name)
        os.environ["KERAS_HOME"] = str(work / "keras")

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from edgepipe import config as cfg
    from edgepipe.data import materialize
    from edgepipe.fileio import read_json
    from edgepipe.pipeline.sequence import STAGES, run_stages
    from edgepipe.results import read_results
    from edgepipe.significance import describe

    config = cfg.from_dict(
        {
            "output": str(work / "run"),
            "data": {"path": "builtin:photos", "val_fraction": 0.2, "test_fraction": 0.25},
            "model": {
                "arch": "mobilenet_v2",
                "alpha": args.alpha,
                "weights": "imagenet",
                "input_size": args.input_size,
            },
            "train": {"epochs": args.epochs, "learning_rate": 0.003},
            "export": {"formats": args.formats.split(","), "calibration_size": 128},
            "bench": {"threads": 1, "warmup": 5, "min_iterations": 30, "min_duration_s": 1.0},
        }
    )
    run = run_stages(config, list(STAGES), echo=lambda s: None)
    import keras

    dataset = materialize(read_json(run.dataset_index), args.input_size, 3)
    model = keras.models.load_model(run.model, compile=False)
    features = keras.Model(model.inputs[0], model.get_layer("pool").output)
    x_train = features.predict(dataset.train.images.astype(np.float32), verbose=0)
    x_test = features.predict(dataset.heldout.images.astype(np.float32), verbose=0)
    probe = LogisticRegression(max_iter=5000).fit(x_train, dataset.train.labels)
    probe_top1 = float(np.mean(probe.predict(x_test) == dataset.heldout.labels))
    training = read_json(run.training)
    print(
        f"MobileNetV2 alpha {args.alpha} ImageNet weights, {args.input_size}x{args.input_size}, builtin:photos "
        f"({len(dataset.train)} train, {len(dataset.heldout)} {dataset.heldout_name} images, {dataset.num_classes} classes)"
    )
    print(f"  edgepipe feature extraction (head on cached features): top-1 {training['top1']:.2%}")
    print(f"  logistic-regression probe on the same frozen features:  top-1 {probe_top1:.2%}")
    results = read_results(run.results)
    print(f"  artifacts on the {dataset.heldout_name} split (1 thread, batch 1, {results.device['cpu_model']}):")
    for r in results.records:
        if r.top1 is None:
            print(f"    {r.format:<14} [{r.engine}] {r.status}: {r.reason}")
            continue
        b = r.int8_budget
        extra = ""
        if b is not None:
            extra = (
                f"\n      validation budget {b.budget_pp} pp met: {b.met} (attempt {b.chosen_attempt} of "
                f"{len(b.attempts)}; kept in higher precision: {', '.join(b.kept_higher_precision) or 'none'})"
            )
        paired = f"\n      {describe(r.significance)}" if r.significance else ""
        print(
            f"    {r.format:<14} [{r.engine}] top-1 {r.top1:.2%} ({r.top1_change_pp or 0:+.2f} pp)  "
            f"p50 {r.latency_ms['p50']:.2f} ms  {r.size_mb:.2f} MB{extra}{paired}"
        )
    print(f"  run directory: {run.path}")


if __name__ == "__main__":
    main()
