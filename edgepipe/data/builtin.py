"""Built-in datasets that need no network: scikit-learn's digits, a generated set, and crops of
real photos that installed packages ship."""

from __future__ import annotations

import numpy as np

from edgepipe.data.folders import load_upright, resize_batch
from edgepipe.data.sources import Scan, Source, register_source
from edgepipe.data.splits import select_classes
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
                mask = np.sin((xx * np.cos(r * 9) + yy * np.sin(r * 9)) * 2 * np.pi / period) > 0
            background = rng.uniform(0, 120, 3)
            foreground = rng.uniform(130, 255, 3)
            image = np.where(mask[..., None], foreground, background)
            image += rng.normal(0, 12, image.shape)
            images.append(np.clip(image, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64), list(SYNTHETIC_CLASSES)


#: class -> photos shipped inside packages (package, file); crops of them form the photos set
PHOTO_SOURCES = {
    "cat": [("skimage", "chelsea.png")],
    "coffee": [("skimage", "coffee.png")],
    "rocket": [("skimage", "rocket.jpg")],
    "motorcycle": [("skimage", "motorcycle_left.png"), ("skimage", "motorcycle_right.png")],
    "flower": [("sklearn", "flower.jpg")],
    "temple": [("sklearn", "china.jpg")],
    "person": [("skimage", "astronaut.png"), ("matplotlib", "grace_hopper.jpg")],
    "galaxies": [("skimage", "hubble_deep_field.jpg")],
    "brick": [("skimage", "brick.png")],
    "grass": [("skimage", "grass.png")],
    "gravel": [("skimage", "gravel.png")],
}


def _photo_path(package: str, name: str):
    from pathlib import Path

    if package == "skimage":
        try:
            import skimage
        except ImportError:
            raise DataError(
                "builtin:photos needs scikit-image, which ships most of its photos",
                "pip install scikit-image (or edgepipe[photos]).",
            ) from None
        return Path(skimage.__file__).parent / "data" / name
    if package == "sklearn":
        import sklearn

        return Path(sklearn.__file__).parent / "datasets" / "images" / name
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / name


def photos(per_class: int = 30, size: int = 160, seed: int = 7) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Real photographs shipped by scikit-image, scikit-learn and matplotlib: 11 classes (eight
    colour scenes and objects, three grey textures: brick, grass, gravel).

    Each image is a seeded random square crop (15-50% of the photo's shorter side, so a
    crop shows a part of the scene, mirrored half the time) resized to ``size``; a class
    with two photos draws from both.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, sources in enumerate(PHOTO_SOURCES.values()):
        photos_ = []
        for package, file in sources:
            photos_.append(load_upright(_photo_path(package, file)).convert("RGB"))
        for i in range(per_class):
            photo = photos_[i % len(photos_)]
            w, h = photo.size
            side = int(min(w, h) * rng.uniform(0.15, 0.5))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crop = photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR)
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            images.append(np.asarray(crop, dtype=np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64), list(PHOTO_SOURCES)


BUILTIN_SETS = {"digits": digits, "synthetic": synthetic, "photos": photos}


def check(spec: str, key: str = "data.path") -> None:
    if spec[len(BUILTIN_PREFIX) :] not in BUILTIN_SETS:
        raise DataError(
            f"unknown built-in dataset '{spec}' ({key})",
            "Use one of: " + ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_SETS) + ", or an image folder.",
        )


def load_builtin(spec: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    check(spec)
    return BUILTIN_SETS[spec[len(BUILTIN_PREFIX) :]]()


def scan(config, seed: int) -> Scan:
    images, labels, names = load_builtin(config.path)
    class_names = select_classes(names, config.classes, config.path)
    by_class = {c: [int(i) for i in np.flatnonzero(labels == names.index(c))] for c in class_names}
    splits = {"train": [(i, c) for c in class_names for i in by_class[c]], "val": [], "test": []}  # split later
    return Scan(
        class_names, splits, "builtin", config.path, image_sizes={f"{images.shape[2]}x{images.shape[1]}": len(images)}
    )


def materialize(index: dict, size: int, channels: int) -> dict[str, np.ndarray]:
    images, _, _ = load_builtin(index["source"])
    return {
        name: resize_batch(images[[item for item, _ in entries]] if entries else images[:0], size, channels)
        for name, entries in index["splits"].items()
    }


register_source(Source("builtin", "a set shipped with edgepipe or its dependencies", check, scan, materialize))
