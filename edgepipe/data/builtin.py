"""Built-in datasets that need no network: scikit-learn's digits and a generated set."""

from __future__ import annotations

import numpy as np

from edgepipe.errors import DataError

BUILTIN_PREFIX = "builtin:"


def digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's bundled handwritten digits: 1,797 real 8x8 grey scans, 10 classes.

    Returns uint8 images (N, 8, 8, 1) scaled from 0..16 to 0..255, labels, class names.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, bunch.target.astype(np.int64), [str(c) for c in bunch.target_names]


SYNTHETIC_CLASSES = ("disc", "square", "triangle", "stripes")


def synthetic(per_class: int = 120, size: int = 32, seed: int = 1234) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A seeded set of coloured shapes on noisy backgrounds: disc, square, triangle, stripes.

    Position, scale, colours and noise vary per image; the same seed gives the same set.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images, labels = [], []
    for label, shape in enumerate(SYNTHETIC_CLASSES):
        for _ in range(per_class):
            cx, cy = rng.uniform(0.3, 0.7, 2)
            r = rng.uniform(0.15, 0.3)
            if shape == "disc":
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
            elif shape == "square":
                mask = (np.abs(xx - cx) < r * 0.85) & (np.abs(yy - cy) < r * 0.85)
            elif shape == "triangle":
                mask = (yy - cy > -r) & (yy - cy < r) & (np.abs(xx - cx) < (yy - cy + r) / 2)
            else:
                period = rng.uniform(0.12, 0.25)
                mask = (np.sin((xx * np.cos(r * 9) + yy * np.sin(r * 9)) * 2 * np.pi / period) > 0)
            background = rng.uniform(0, 120, 3)
            foreground = rng.uniform(130, 255, 3)
            image = np.where(mask[..., None], foreground, background)
            image += rng.normal(0, 12, image.shape)
            images.append(np.clip(image, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64), list(SYNTHETIC_CLASSES)


BUILTIN_SETS = {"digits": digits, "synthetic": synthetic}


def load_builtin(spec: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    name = spec[len(BUILTIN_PREFIX):]
    if name not in BUILTIN_SETS:
        raise DataError(
            f"unknown built-in dataset '{spec}'",
            "Use one of: " + ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_SETS) + ", or an image folder.",
        )
    return BUILTIN_SETS[name]()
