"""The architecture entry and its registry (no TensorFlow import here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgepipe.registry import Registry


@dataclass(frozen=True)
class Preprocessing:
    """Pixel transform applied inside the model: ``x * scale + offset`` per channel.

    ``scale`` and ``offset`` are tuples of one value (all channels) or one per
    channel; ``reverse_channels`` turns RGB into BGR first (Caffe-style weights).
    """

    scale: tuple[float, ...] = (1.0,)
    offset: tuple[float, ...] = (0.0,)
    description: str = "raw pixels 0..255"
    reverse_channels: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "scale": list(self.scale),
            "offset": list(self.offset),
            "reverse_channels": self.reverse_channels,
            "description": self.description,
        }


TF_MINUS1_1 = Preprocessing((1 / 127.5,), (-1.0,), "x / 127.5 - 1 (range -1..1)")
UNIT_RANGE = Preprocessing((1 / 255.0,), (0.0,), "x / 255 (range 0..1)")
RAW = Preprocessing(description="raw pixels 0..255 (the network normalizes internally)")
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TORCH_IMAGENET = Preprocessing(
    tuple(1 / (255 * s) for s in _IMAGENET_STD),
    tuple(-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD)),
    "(x / 255 - ImageNet mean) / ImageNet std, per RGB channel",
)
CAFFE_BGR = Preprocessing((1.0,), (-103.939, -116.779, -123.68), "RGB to BGR, minus the ImageNet BGR mean", True)
LITE_127_128 = Preprocessing((1 / 128.0,), (-127.0 / 128.0,), "(x - 127) / 128")
#: the named transforms model.preprocessing takes
PREPROCESSING_NAMES = {
    "none": RAW,
    "unit": UNIT_RANGE,
    "tf": TF_MINUS1_1,
    "torch": TORCH_IMAGENET,
    "caffe": CAFFE_BGR,
    "lite": LITE_127_128,
}


@dataclass(frozen=True)
class Reference:
    """Published ImageNet figures for a network, with their source."""

    top1: float | None = None  # percent
    top5: float | None = None  # percent
    size_mb: float | None = None
    params: int | None = None
    depth: int | None = None
    source: str = ""
    #: the unit ``params`` is rounded to in its source (1 = exact; 100_000 for "4.7M")
    params_precision: int = 1
    #: "all" counts every weight as Keras does (batch-norm moving statistics too);
    #: "trainable" counts learnable parameters only, as papers and PyTorch do
    params_counted: str = "all"

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("top1", "top5", "size_mb", "params", "params_counted", "depth", "source")}


KERAS_APPLICATIONS_TABLE = "Keras Applications table, https://keras.io/api/applications/"


@dataclass(frozen=True)
class Architecture:
    """A registered network.

    ``build(input_shape, alpha, weights, include_top, classes)`` returns a Keras
    model that takes *preprocessed* input; ``include_top=False`` gives the
    feature extractor (the backbone), ``include_top=True`` the original
    classifier. ``weights`` is None, "imagenet" or a file path.
    """

    name: str
    family: str
    paper: str
    build: Callable[..., Any]
    preprocessing: Preprocessing
    default_input_size: int
    min_input_size: int
    default_channels: int = 3
    #: ImageNet weights exist only at exactly these sizes (NASNet); otherwise any size >= min works
    imagenet_size_strict: bool = False
    #: the published classifier flattens a feature map into dense layers, so its size depends on the input
    flatten_top: bool = False
    keras_name: str | None = None
    alphas: tuple[float, ...] = ()
    default_alpha: float | None = None
    imagenet_alphas: tuple[float, ...] = ()
    imagenet_sizes: tuple[int, ...] = ()
    imagenet_channels: int = 3
    reference: Reference = field(default_factory=Reference)

    @property
    def has_imagenet_weights(self) -> bool:
        return bool(self.imagenet_sizes)

    @property
    def has_alpha(self) -> bool:
        return bool(self.alphas)

    def backbone(self, input_shape, alpha=None, weights=None):
        return self.build(input_shape=input_shape, alpha=alpha, weights=weights, include_top=False, classes=1000)


ARCHITECTURES: Registry[Architecture] = Registry("architecture", list_command="edgepipe models")


def register_architecture(arch: Architecture, aliases: tuple[str, ...] = ()) -> Architecture:
    names = tuple(a for a in (arch.keras_name, *aliases) if a)
    ARCHITECTURES.add(arch.name, arch, names)
    return arch


def get_architecture(name: str) -> Architecture:
    return ARCHITECTURES.get(name)
