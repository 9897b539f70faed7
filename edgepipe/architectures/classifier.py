"""Assemble a registry entry into the classifier edgepipe trains and exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepipe.architectures.base import (
    PREPROCESSING_NAMES,
    RAW,
    Architecture,
    Preprocessing,
    get_architecture,
)
from edgepipe.errors import EdgepipeError, first_line

# Layer names every classifier built here has; the training stage relies on them.
PREPROCESS, BACKBONE, POOL, DROPOUT, CLASSIFIER = "preprocess", "backbone", "pool", "dropout", "classifier"


def resolve_alpha(arch: Architecture, alpha: float | None) -> float | None:
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


def follow_architecture(arch: Architecture, base: dict[str, Any], given: set[str]) -> tuple[dict[str, Any], list[str]]:
    """Model settings that a base configuration wrote for another network, adapted to ``arch``.

    ``base`` is the base's ``model`` mapping (alpha, weights, input_size as written there) and ``given``
    the ``model.*`` keys the user set beside the architecture. A value the user did not give never makes
    their choice of architecture an error: the base's width multiplier is dropped (the family default
    applies), ImageNet weights become random ones where ``arch`` has none published, and an input size
    ``arch`` cannot take becomes its default. Returns (the changed keys and values, one note per change).
    """
    changes: dict[str, Any] = {}
    notes: list[str] = []
    if "alpha" not in given and base.get("alpha") is not None:
        changes["alpha"] = None
        default = f"its default {arch.default_alpha}" if arch.has_alpha else "none: it has no width multiplier"
        notes.append(f"width multiplier {base['alpha']} of the base not applied to {arch.name} ({default})")
    if "weights" not in given and base.get("weights", "imagenet") == "imagenet" and not arch.has_imagenet_weights:
        changes["weights"] = "none"
        notes.append(f"{arch.name} has no published ImageNet weights: random initial weights (--weights to choose)")
    size = base.get("input_size")
    if (
        "input_size" not in given
        and isinstance(size, int)
        and not _size_fits(arch, size, changes.get("weights", base.get("weights")))
    ):
        changes["input_size"] = arch.default_input_size
        notes.append(f"input size {size} of the base does not suit {arch.name}: its default {arch.default_input_size}")
    return changes, notes


def _size_fits(arch: Architecture, size: int, weights: Any) -> bool:
    if size < arch.min_input_size:
        return False
    return not (weights == "imagenet" and arch.imagenet_size_strict and size not in arch.imagenet_sizes)


def check_weights_request(
    arch: Architecture, weights: str, input_size: int, channels: int, alpha: float | None
) -> None:
    """Reject impossible weight/shape requests before any work starts."""
    if (
        arch.family == "user model"
        and input_size != arch.default_input_size
        and arch.min_input_size == arch.default_input_size
    ):
        raise EdgepipeError(
            f"the saved model takes {arch.default_input_size}x{arch.default_input_size} input, not {input_size}",
            f"Set model.input_size / --input-size to {arch.default_input_size}.",
        )
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
        if arch.imagenet_size_strict and input_size not in arch.imagenet_sizes:
            raise EdgepipeError(
                f"ImageNet weights for '{arch.name}' exist only at input size "
                + ", ".join(map(str, arch.imagenet_sizes)),
                "Set --input-size to that, or use --weights none.",
            )
        if arch.has_alpha and alpha not in arch.imagenet_alphas:
            raise EdgepipeError(
                f"ImageNet weights for '{arch.name}' exist only for alpha " + ", ".join(map(str, arch.imagenet_alphas)),
                "Choose one of those, or use --weights none.",
            )
    elif arch.family != "user model" and weights not in ("none", None) and not Path(weights).exists():
        raise EdgepipeError(
            f"weights file '{weights}' does not exist",
            "Pass imagenet, none, or the path of an existing weights file.",
        )


def _keras_weights_arg(weights: str) -> str | None:
    if weights in ("none", None):
        return None
    if weights == "imagenet":
        return "imagenet"
    return str(Path(weights).resolve())


def build_backbone(arch: Architecture, input_size: int, channels: int, alpha: float | None, weights: str):
    """The backbone with the requested weights; a clear error if ImageNet weights cannot be had."""
    shape = (input_size, input_size, channels)
    try:
        return arch.backbone(shape, alpha=alpha, weights=_keras_weights_arg(weights))
    except Exception as exc:  # Keras raises plain Exceptions for download failures
        if weights != "imagenet":
            raise
        text = str(exc)
        if "URL fetch failure" in text or "urlopen" in text.lower() or "Name or service" in text or "HTTP" in text:
            raise EdgepipeError(
                f"ImageNet weights for '{arch.name}' are not in the Keras cache and could not be downloaded ({first_line(exc, 120)})",
                "Connect to the internet once, copy the .h5 file into $KERAS_HOME/models (default ~/.keras/models), "
                "pass its path with --weights PATH, or use --weights none.",
            ) from None
        raise


def detailed_preprocessing(setting: Any) -> Preprocessing:
    """model.preprocessing given as a mapping (layout, channels, scale, mean, std), as the transform a Keras model
    applies inside: ``x * 1 / (scale * std) - mean / std`` per channel. EdgepipeError when a key is missing or
    the layout is nchw (a Keras model edgepipe builds takes NHWC)."""
    from edgepipe.pixels import from_mapping

    transform = from_mapping(setting)
    if transform.layout == "nchw":
        raise EdgepipeError(
            "model.preprocessing.layout nchw applies to ONNX models; a Keras model takes NHWC",
            "Set model.preprocessing.layout to nhwc, or drop it.",
        )
    missing = [k for k in transform.missing() if k != "layout"]
    if missing:
        raise EdgepipeError(
            "model.preprocessing is missing " + ", ".join(missing),
            "Give channels, scale, mean and std (or a named transform such as torch).",
        )
    multiplier, offset = transform.per_channel(3)
    return Preprocessing(
        tuple(float(v) for v in multiplier),
        tuple(float(v) for v in offset),
        transform.with_defaults(layout="nhwc").describe(),
        transform.channels == "bgr",
    )


def _preprocessing(setting: Any, default: Preprocessing | None) -> Preprocessing | None:
    """The transform model.preprocessing names or details; ``default`` for 'auto'."""
    if not isinstance(setting, str):
        return detailed_preprocessing(setting)
    return default if setting == "auto" else PREPROCESSING_NAMES[setting]


def resolve_architecture(model_config, unsafe: bool = False) -> Architecture:
    """The registry entry (or the user's saved model) a ModelConfig asks for, with its preprocessing;
    ``unsafe`` allows a saved model whose loading runs code (from the command line only)."""
    import dataclasses

    if model_config.path:
        from edgepipe.architectures.loading import user_architecture

        return user_architecture(model_config.path, unsafe, _preprocessing(model_config.preprocessing, RAW))
    arch = get_architecture(model_config.arch)
    pre = _preprocessing(model_config.preprocessing, None)
    return arch if pre is None else dataclasses.replace(arch, preprocessing=pre)


def build_classifier(
    arch_name: str | Architecture,
    num_classes: int,
    input_size: int,
    channels: int = 3,
    alpha: float | None = None,
    weights: str = "imagenet",
    dropout: float = 0.2,
    seed: int = 0,
):
    """Build ``input -> preprocess -> backbone -> pool -> dropout -> classifier`` (softmax).

    The input is raw pixels (float32, 0..255, NHWC) named ``image``.
    """
    import keras

    arch = arch_name if isinstance(arch_name, Architecture) else get_architecture(arch_name)
    alpha = resolve_alpha(arch, alpha)
    check_weights_request(arch, weights, input_size, channels, alpha)
    keras.utils.set_random_seed(seed)
    backbone = build_backbone(arch, input_size, channels, alpha, weights)
    backbone.name = BACKBONE
    inputs = keras.Input((input_size, input_size, channels), name="image")
    x = preprocessing_layer(arch.preprocessing, channels)(inputs)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name=POOL)(x)
    x = keras.layers.Dropout(dropout, name=DROPOUT)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=CLASSIFIER)(x)
    safe_name = "".join(c if c.isalnum() or c in "_.-" else "_" for c in arch.name)
    return keras.Model(inputs, outputs, name=f"{safe_name}_classifier")


def preprocessing_layer(pre, channels: int):
    """The in-model pixel transform: Rescaling where it suffices, ChannelAffine for BGR reversal.

    Per-channel constants meant for RGB are averaged for single-channel input.
    """
    import keras

    def fit(values):
        if len(values) == 1:
            return values[0]
        return sum(values) / len(values) if channels == 1 else list(values)

    if pre.reverse_channels and channels == 3:
        from edgepipe.architectures.layers import ChannelAffine

        scale = list(pre.scale) * 3 if len(pre.scale) == 1 else list(pre.scale)
        return ChannelAffine(scale, list(pre.offset), reverse_channels=True, name=PREPROCESS)
    return keras.layers.Rescaling(scale=fit(pre.scale), offset=fit(pre.offset), name=PREPROCESS)


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
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            count += 1
    return count


def all_layers(model):
    """Every layer of ``model``, descending into nested models (a backbone), parents before their layers."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)
