"""Shared fixtures: tiny configurations, a finished tiny run, and image folders made on disk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights"


def tiny_overrides(tmp: Path, pretrain: bool = False, **extra) -> dict:
    """A run small enough for tests: MobileNetV2 alpha 0.35 at 32x32, random weights, a head on cached features."""
    overrides = {
        "output": str(tmp),
        "data.path": "builtin:digits",
        "data.classes": ["0", "1", "2"],
        "data.max_per_class": 30,
        "data.val_fraction": 0.2,
        "model.arch": "mobilenet_v2",
        "model.alpha": 0.35,
        "model.weights": "none",
        "model.input_size": 32,
        "train.epochs": 15,  # head epochs on cached features: seconds, and confident enough for INT8 to agree
        "train.learning_rate": 0.01,
        "export.calibration_size": 16,
        "bench.warmup": 2,
        "bench.min_iterations": 5,
        "bench.min_duration_s": 0.0,
        "bench.warmup_s": 0.0,
        "bench.memory": False,  # fresh-process memory figures cost seconds per artifact; the shared run measures them
    }
    if pretrain:  # a backbone trained on these digits, so the head learns a confident, stable classifier
        overrides.update(
            {
                "pretrain.data.path": "builtin:digits",
                "pretrain.data.classes": ["0", "1", "2", "3"],
                "pretrain.data.val_fraction": 0.1,
                "pretrain.epochs": 4,
            }
        )
    overrides.update(extra)
    return overrides


@pytest.fixture(autouse=True)
def _own_working_folder(tmp_path_factory, monkeypatch):
    """Every test starts in an empty folder of its own: what the folder pytest was started from holds (a runs/
    left by the quickstart, say) never changes an outcome, and nothing a test writes lands there."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished pipeline run (every stage) shared by the tests that only read it."""
    from edgepipe import config as cfg
    from edgepipe.pipeline.sequence import STAGES, run_stages

    out = tmp_path_factory.mktemp("tiny-run")
    config = cfg.from_dict({}, tiny_overrides(out, pretrain=True, **{"bench.memory": True}))
    lines: list[str] = []
    run = run_stages(config, list(STAGES), echo=lines.append)
    run.log = lines  # type: ignore[attr-defined]
    return run


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A copy of the finished tiny run that a test may damage."""
    path = tmp_path / "run"
    shutil.copytree(tiny_run.path, path, ignore=shutil.ignore_patterns(".edgepipe-lock"))
    return path


def _save(image, path: Path, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)


def read_image_folder(folder: Path, classes, size: int):
    """(uint8 RGB pixels resized to ``size`` x ``size``, class indices in ``classes`` order) of an image folder."""
    from PIL import Image

    pictures, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            pictures.append(np.asarray(Image.open(path).convert("RGB").resize((size, size)), np.uint8))
            labels.append(label)
    return np.stack(pictures), np.asarray(labels)


def make_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 6, size: int = 20, seed: int = 0) -> Path:
    """Class subfolders of small coloured images in mixed formats and modes.

    Each class has its own dominant colour so a classifier can learn it.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    formats = [("png", "RGB"), ("jpg", "RGB"), ("bmp", "RGB"), ("gif", "P"), ("png", "L"), ("png", "RGBA")]
    for c, name in enumerate(classes):
        for i in range(per_class):
            base = np.zeros((size, size, 3), np.uint8)
            base[..., c % 3] = 200
            pixels = np.clip(base + rng.integers(0, 50, base.shape), 0, 255).astype(np.uint8)
            suffix, mode = formats[i % len(formats)]
            image = Image.fromarray(pixels, "RGB").convert(mode)
            _save(image, root / name / f"img {i} é.{suffix}")
    return root


def write_onnx_classifier(path: Path, size: int, seed: int | None = None, width: int | None = None) -> Path:
    """A real ONNX image classifier (NHWC raw pixels -> 2 class probabilities) for ``size`` x ``size`` inputs (or
    ``size`` x ``width``), its weights evenly spaced in [-1, 1] (or, with ``seed``, random): ONNX Runtime runs it as
    any artifact."""
    import onnx
    from onnx import TensorProto, helper

    width = width or size
    count = size * width * 6
    values = np.linspace(-1, 1, count) if seed is None else np.random.default_rng(seed).uniform(-1, 1, count)
    weights = helper.make_tensor("w", TensorProto.FLOAT, [size * width * 3, 2], values)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["y"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, size, width, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow (minutes each)")


def pytest_collection_modifyitems(config, items):
    from edgepipe.gpu import cuda_unavailable

    no_cuda = cuda_unavailable() if any("gpu" in item.keywords for item in items) else None
    run_slow = config.getoption("--run-slow") or os.environ.get("EDGEPIPE_RUN_SLOW")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --run-slow (or EDGEPIPE_RUN_SLOW=1)"))
        if "gpu" in item.keywords and no_cuda:
            item.add_marker(pytest.mark.skip(reason=f"needs an NVIDIA GPU: {no_cuda}"))
