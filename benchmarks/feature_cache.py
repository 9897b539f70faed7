"""Per-epoch time of head training with and without cached backbone features, measured in one run.

Feature extraction trains only the head; with the cache, the frozen backbone runs
once per image and each epoch only touches the head. This script times one head
epoch both ways on the same data and prints the ratio (target: 10x or more at 224x224).

    python benchmarks/feature_cache.py [--size 224] [--images 256] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=0.35)
    args = parser.parse_args()

    import numpy as np

    from edgepipe.architectures import build_classifier
    from edgepipe.architectures.classifier import BACKBONE
    from edgepipe.config import DataConfig
    from edgepipe.data import make_index, materialize
    from edgepipe.training.controls import Controls, compile_model
    from edgepipe.training.strategies import backbone_features, head_model

    index = make_index(
        DataConfig(path="builtin:digits", classes=[str(i) for i in range(10)], max_per_class=args.images // 10), seed=0
    )
    data = materialize(index, args.size, 3).train
    model = build_classifier("mobilenet_v2", 10, args.size, 3, args.alpha, "none")
    model.get_layer(BACKBONE).trainable = False

    def epoch_seconds(fit_one_epoch) -> list[float]:
        times = []
        for _ in range(args.epochs):
            start = time.perf_counter()
            fit_one_epoch()
            times.append(time.perf_counter() - start)
        return times[1:] if len(times) > 1 else times  # the first epoch includes graph tracing

    images = data.images.astype(np.float32)
    compile_model(model, Controls(learning_rate=1e-3))
    uncached = epoch_seconds(lambda: model.fit(images, data.labels, epochs=1, batch_size=32, verbose=0))
    start = time.perf_counter()
    features = backbone_features(model, data.images)
    extract = time.perf_counter() - start
    head = head_model(model)
    compile_model(head, Controls(learning_rate=1e-3))
    cached = epoch_seconds(lambda: head.fit(features, data.labels, epochs=1, batch_size=32, verbose=0))
    u, c = float(np.median(uncached)), float(np.median(cached))
    print(
        f"MobileNetV2 alpha {args.alpha}, {args.size}x{args.size}, {len(images)} images, batch 32, "
        f"{os.cpu_count()} cores, median of {len(uncached)} epochs after the first"
    )
    print(f"head epoch without cache: {u * 1e3:9.1f} ms")
    print(f"head epoch with cache:    {c * 1e3:9.1f} ms  (one-off feature extraction: {extract * 1e3:.1f} ms)")
    print(f"speed-up per epoch: {u / c:.1f}x")
    print(f"break-even after {extract / max(u - c, 1e-9):.2f} epochs")


if __name__ == "__main__":
    main()
