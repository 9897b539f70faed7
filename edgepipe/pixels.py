"""What a network brought from elsewhere expects of its input pixels, declared once.

A :class:`PixelTransform` says how raw NHWC pixels (0..255, as edgepipe's own artifacts take them) become the
network's input: ``layout`` (nchw or nhwc), ``channels`` (rgb or bgr: the order the network wants; raw pixels
are RGB), ``scale`` (raw pixels are divided by it first, e.g. 255) and per-channel ``mean`` and ``std`` (after
scaling, in the network's channel order). It is the detailed form of ``model.preprocessing``; the named
transforms (torch, tf, caffe...) are spelled out in it by :func:`from_named`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgepipe.errors import EdgepipeError

LAYOUTS = ("nchw", "nhwc")
CHANNEL_ORDERS = ("rgb", "bgr")
#: the keys of the detailed form, with the command-line flag that sets each
KEYS = {"layout": "--layout", "channels": "--channels", "scale": "--scale", "mean": "--mean", "std": "--std"}


@dataclass(frozen=True)
class PixelTransform:
    """A declared (possibly partly unknown: None) transform from raw NHWC pixels to a network's input."""

    layout: str | None = None
    channels: str | None = None
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def missing(self, colour: bool = True) -> list[str]:
        """The keys still unknown (``channels`` matters only for a ``colour`` input)."""
        return [k for k in KEYS if getattr(self, k) is None and (colour or k != "channels")]

    def with_defaults(self, **known: Any) -> PixelTransform:
        """This transform with the keys it leaves unknown taken from ``known``."""
        return PixelTransform(**{k: known.get(k) if getattr(self, k) is None else getattr(self, k) for k in KEYS})

    def per_channel(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(multiplier, offset), float32 arrays of ``count``: the transform after the channel reorder is
        ``x * multiplier + offset`` = (x / scale - mean) / std. EdgepipeError when mean or std has neither one
        value nor ``count``, or std holds a 0."""
        mean, std = (_broadcast(name, getattr(self, name), count) for name in ("mean", "std"))
        if np.any(std == 0) or not self.scale:
            raise EdgepipeError(
                "preprocessing std and scale must not be 0", "Set --std and --scale to non-zero values."
            )
        return (1.0 / (self.scale * std)).astype(np.float32), (-mean / std).astype(np.float32)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """The network's input for raw NHWC ``images``, in float32 (numpy: an independent reference for the graph
        edgepipe folds the same transform into)."""
        x = np.asarray(images, np.float32)
        if self.channels == "bgr" and x.shape[-1] == 3:
            x = x[..., ::-1]
        multiplier, offset = self.per_channel(x.shape[-1])
        x = x * multiplier + offset
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.layout == "nchw" else x)

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(self, k)) for k in KEYS)}

    def describe(self) -> str:
        flip = "RGB to BGR, " if self.channels == "bgr" else ""
        return f"{flip}(x / {self.scale:g} - mean {_short(self.mean)}) / std {_short(self.std)}, {self.layout.upper()}"


def _short(values: tuple[float, ...] | None) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values or ()) + "]"


def _broadcast(name: str, values: Sequence[float] | None, count: int) -> np.ndarray:
    array = np.asarray(values if values is not None else (), np.float64).reshape(-1)
    if array.size == 1:
        return np.repeat(array, count)
    if array.size != count:
        raise EdgepipeError(
            f"preprocessing {name} has {array.size} values but the network takes {count} channels",
            f"Give one value or {count} (--{name} a,b,c).",
        )
    return array


def from_mapping(data: Any) -> PixelTransform:
    """A transform from a mapping of the detailed keys (a dict or an object with those attributes; missing or
    null keys stay unknown), checked: layout and channels among their choices, numbers finite."""
    get = data.get if isinstance(data, dict) else (lambda key: getattr(data, key, None))
    unknown = [k for k in (data if isinstance(data, dict) else ()) if k not in KEYS]
    if unknown:
        raise EdgepipeError(f"unknown preprocessing key '{unknown[0]}'", "Keys: " + ", ".join(KEYS) + ".")
    values: dict[str, Any] = {}
    for key, choices in (("layout", LAYOUTS), ("channels", CHANNEL_ORDERS)):
        value = get(key)
        if value is not None and str(value).lower() not in choices:
            raise EdgepipeError(f"preprocessing {key} must be one of {', '.join(choices)}, got {value!r}")
        values[key] = None if value is None else str(value).lower()
    values["scale"] = None if get("scale") is None else _number("scale", get("scale"))
    for key in ("mean", "std"):
        value = get(key)
        if value is not None:
            items = value if isinstance(value, (list, tuple)) else [value]
            values[key] = tuple(_number(key, v) for v in items)
    return PixelTransform(**values)


def _number(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise EdgepipeError(f"preprocessing {key} must be a number, got {value!r}") from None
    if not np.isfinite(number):
        raise EdgepipeError(f"preprocessing {key} must be a finite number, got {value!r}")
    return number


def from_named(preprocessing: Any) -> PixelTransform:
    """The detailed form of a named transform (an object with ``scale``, ``offset`` and ``reverse_channels``,
    as architectures.base.Preprocessing: ``x * scale + offset``): with one scale for every channel, scale
    1/scale, mean -offset, std 1 (``unit`` reads x / 255); else scale 1, mean -offset/scale, std 1/scale (``torch``
    reads its ImageNet mean and std in pixels). The layout stays unknown."""
    scale = np.asarray(preprocessing.scale, np.float64)
    offset = np.asarray(preprocessing.offset, np.float64)
    size = max(scale.size, offset.size)
    scale, offset = np.broadcast_to(scale, size), np.broadcast_to(offset, size)
    channels = "bgr" if preprocessing.reverse_channels else "rgb"
    if np.all(scale == scale[0]):
        return PixelTransform(
            channels=channels,
            scale=float(1 / scale[0]),
            mean=tuple(float(v) for v in -offset + 0.0),  # + 0.0: no "-0" in its description
            std=(1.0,),
        )
    return PixelTransform(
        channels=channels,
        scale=1.0,
        mean=tuple(float(v) for v in -offset / scale),
        std=tuple(float(v) for v in 1 / scale),
    )


IDENTITY = PixelTransform(layout="nhwc", channels="rgb", scale=1.0, mean=(0.0,), std=(1.0,))


def resolve(value: Any = None, **detailed: Any) -> PixelTransform:
    """A transform from what a user declares: ``value`` None or 'auto' (nothing), a named transform ('torch', 'tf',
    'caffe', 'lite', 'unit', 'none'), a mapping of the detailed keys, or a PixelTransform; ``detailed`` keys
    (the command line's flags; None: not given) override it. EdgepipeError for an unknown name or key."""
    if isinstance(value, PixelTransform):
        base = value
    elif value is None or value == "auto":
        base = PixelTransform()
    elif isinstance(value, str):
        from edgepipe.architectures.base import PREPROCESSING_NAMES

        if value not in PREPROCESSING_NAMES:
            raise EdgepipeError(
                f"unknown preprocessing '{value}'",
                "Name one of " + ", ".join(PREPROCESSING_NAMES) + ", or give layout, channels, scale, mean and std.",
            )
        base = from_named(PREPROCESSING_NAMES[value])
    else:
        base = from_mapping(value)
    given = from_mapping({k: v for k, v in detailed.items() if v is not None})
    return given.with_defaults(**{k: getattr(base, k) for k in KEYS})
