"""The settings of quantization-aware fine-tuning: the run configuration's ``export.qat`` section, read by the
INT8 recipe that fine-tunes (``edgepipe.quantization.qat``) without importing the configuration."""

from __future__ import annotations

from dataclasses import dataclass

from edgepipe.options import option as _opt


@dataclass
class QatConfig:
    epochs: int = _opt(
        3,
        "Epochs of quantization-aware fine-tuning, the last INT8 recipe (TFLite and ONNX), tried only when no post-training recipe is within the accuracy budget (0: never).",
        min=0,
    )
    learning_rate: float = _opt(
        1e-4,
        "Adam learning rate of the fine-tuning (every layer's weights, a frozen backbone's too).",
        min=1e-8,
        max=1.0,
    )
    max_seconds: float = _opt(
        900.0,
        "Stop the fine-tuning after the batch that passes this many seconds (each INT8 format fine-tunes on its own).",
        min=1.0,
    )
    max_images: int = _opt(
        2000, "Most training images it fine-tunes on (drawn stratified and seeded from a larger training split).", min=1
    )
