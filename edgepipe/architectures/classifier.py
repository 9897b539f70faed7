"""Assemble a registry entry into the classifier edgepipe trains and exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from edgepipe.architectures.base import Architecture, get_architecture
from edgepipe.errors import EdgepipeError

# Layer names every classifier built here has; the training stage relies on them.
PREPROCESS, BACKBONE, POOL, DROPOUT, CLASSIFIER = "preprocess", "backbone", "pool", "dropout", "classifier"


def resolve_alpha(arch: Architecture, alpha: Optional[float]) -> Optional[float]:
    if not arch.has_alpha:
        if alpha is not None:
            raise EdgepipeError(
                f"architecture '{arch.name}' has no width multiplier, but alpha={alpha} was given",
                "Remove model.alpha / --alpha.",
            )
        return None
    alpha = arch.default_alpha if alpha is None else alpha
    if alpha not in arch.alphas:
        raise EdgepipeError(
            f"alpha {alpha} is not available for '{arch.name}'",
            "Choose one of " + ", ".join(map(str, arch.alphas)) + ".",
        )
    return alpha


def check_weights_request(arch: Architecture, weights: str, input_size: int, channels: int, alpha: Optional[float]) -> None:
    """Reject impossible weight/shape requests before any work starts."""
    if input_size < arch.min_input_size:
        raise EdgepipeError(
            f"input size {input_size} is too small for '{arch.name}'",
            f"Use model.input_size / --input-size of at least {arch.min_input_size}.",
        )
    if weights == "imagenet":
        if not arch.has_imagenet_weights:
            raise EdgepipeError(
                f"'{arch.name}' has no published ImageNet weights",
                "Use --weights none (train from scratch) or a path to a weights file.",
            )
        if channels != arch.imagenet_channels:
            raise EdgepipeError(
                f"ImageNet weights for '{arch.name}' need {arch.imagenet_channels} input channels, not {channels}",
                f"Set model.channels: {arch.imagenet_channels} (grey images are converted), or use --weights none.",
            )
        if arch.has_alpha and alpha not in arch.imagenet_alphas:
            raise EdgepipeError(
                f"ImageNet weights for '{arch.name}' exist only for alpha " + ", ".join(map(str, arch.imagenet_alphas)),
                "Choose one of those, or use --weights none.",
            )
    elif weights not in ("none", None) and not Path(weights).exists():
        raise EdgepipeError(
            f"weights file '{weights}' does not exist",
            "Pass imagenet, none, or the path of an existing weights file.",
        )


def _keras_weights_arg(weights: str) -> Optional[str]:
    if weights in ("none", None):
        return None
    if weights == "imagenet":
        return "imagenet"
    return str(Path(weights).resolve())


def build_backbone(arch: Architecture, input_size: int, channels: int, alpha: Optional[float], weights: str):
    """The backbone with the requested weights; a clear error if ImageNet weights cannot be had."""
    shape = (input_size, input_size, channels)
    kwargs: dict[str, Any] = {"input_shape": shape, "alpha": alpha, "weights": _keras_weights_arg(weights)}
    try:
        return arch.backbone(**kwargs)
    except Exception as exc:  # Keras raises plain Exceptions for download failures
        if weights != "imagenet":
            raise
        text = str(exc)
        if "URL fetch failure" in text or "urlopen" in text.lower() or "Name or service" in text or "HTTP" in text:
            raise EdgepipeError(
                f"ImageNet weights for '{arch.name}' are not in the Keras cache and could not be downloaded ({text.splitlines()[0][:120]})",
                "Connect to the internet once, copy the .h5 file into $KERAS_HOME/models (default ~/.keras/models), "
                "pass its path with --weights PATH, or use --weights none.",
            ) from None
        raise


def build_classifier(
    arch_name: str,
    num_classes: int,
    input_size: int,
    channels: int = 3,
    alpha: Optional[float] = None,
    weights: str = "imagenet",
    dropout: float = 0.2,
    seed: int = 0,
):
    """Build ``input -> preprocess -> backbone -> pool -> dropout -> classifier`` (softmax).

    The input is raw pixels (float32, 0..255, NHWC) named ``image``.
    """
    import keras

    arch = get_architecture(arch_name)
    alpha = resolve_alpha(arch, alpha)
    check_weights_request(arch, weights, input_size, channels, alpha)
    keras.utils.set_random_seed(seed)
    backbone = build_backbone(arch, input_size, channels, alpha, weights)
    backbone.name = BACKBONE
    pre = arch.preprocessing
    inputs = keras.Input((input_size, input_size, channels), name="image")
    scale = pre.scale[0] if len(pre.scale) == 1 else list(pre.scale)
    offset = pre.offset[0] if len(pre.offset) == 1 else list(pre.offset)
    x = keras.layers.Rescaling(scale=scale, offset=offset, name=PREPROCESS)(inputs)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name=POOL)(x)
    x = keras.layers.Dropout(dropout, name=DROPOUT)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=CLASSIFIER)(x)
    return keras.Model(inputs, outputs, name=f"{arch.name}_classifier")


def set_batchnorm_momentum(model, momentum: float) -> int:
    """Set the moving-statistics momentum of every BatchNormalization layer; returns how many.

    Keras Applications build batch normalization with momentum 0.999, which
    suits long ImageNet runs but leaves the moving statistics near their
    initial values after a few hundred steps of from-scratch training, so the
    network scores near chance in inference mode. Momentum is read at call
    time, so setting it before ``compile`` takes effect.
    """
    import keras

    count = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            count += 1
    return count


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
