"""The architecture entry and its registry (no TensorFlow import here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from edgepipe.registry import Registry


@dataclass(frozen=True)
class Preprocessing:
    """Pixel transform applied inside the model: ``x * scale + offset`` per channel.

    ``scale`` and ``offset`` are tuples of one value (all channels) or one per channel.
    """

    scale: tuple[float, ...] = (1.0,)
    offset: tuple[float, ...] = (0.0,)
    description: str = "raw pixels 0..255"

    def as_dict(self) -> dict[str, Any]:
        return {"scale": list(self.scale), "offset": list(self.offset), "description": self.description}


TF_MINUS1_1 = Preprocessing((1 / 127.5,), (-1.0,), "x / 127.5 - 1 (range -1..1)")
UNIT_RANGE = Preprocessing((1 / 255.0,), (0.0,), "x / 255 (range 0..1)")
RAW = Preprocessing()


@dataclass(frozen=True)
class Reference:
    """Published ImageNet figures for a network, with their source."""

    top1: Optional[float] = None  # percent
    top5: Optional[float] = None  # percent
    size_mb: Optional[float] = None
    params: Optional[int] = None
    depth: Optional[int] = None
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("top1", "top5", "size_mb", "params", "depth", "source")}


KERAS_APPLICATIONS_TABLE = "Keras Applications table, https://keras.io/api/applications/"


@dataclass(frozen=True)
class Architecture:
    """A registered network.

    ``backbone`` builds the feature extractor (no classifier top) as a Keras
    model that takes *preprocessed* input: ``backbone(input_shape, alpha,
    weights)`` where ``weights`` is None, "imagenet" or a file path.
    """

    name: str
    family: str
    paper: str
    backbone: Callable[..., Any]
    preprocessing: Preprocessing
    default_input_size: int
    min_input_size: int
    keras_name: Optional[str] = None
    alphas: tuple[float, ...] = ()
    default_alpha: Optional[float] = None
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


ARCHITECTURES: Registry[Architecture] = Registry("architecture", list_command="edgepipe models")


def register_architecture(arch: Architecture, aliases: tuple[str, ...] = ()) -> Architecture:
    names = tuple(a for a in (arch.keras_name, *aliases) if a)
    ARCHITECTURES.add(arch.name, arch, names)
    return arch


def get_architecture(name: str) -> Architecture:
    return ARCHITECTURES.get(name)
