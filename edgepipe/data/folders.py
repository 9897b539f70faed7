"""Image folders: scanning, validation and decoding with Pillow."""

from __future__ import annotations

import contextlib
import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.data.sources import Scan as SourceScan
from edgepipe.data.sources import Source, register_source
from edgepipe.data.splits import SPLITS, select_classes
from edgepipe.errors import DataError, error_line

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
VAL_NAMES = ("val", "valid", "validation")


@dataclass
class Scan:
    layout: str  # "splits" (train/ val/ [test/]) or "classes" (one subfolder per class)
    class_names: list[str]
    files: dict[str, dict[str, list[str]]]  # split -> class -> relative paths
    rejected: list[dict[str, str]] = field(default_factory=list)
    image_sizes: Counter = field(default_factory=Counter)


#: images with more pixels than this are skipped (and listed) unless data.max_image_pixels raises it: decoding a
#: huge image can take gigabytes (Pillow's own guard starts at about 89 megapixels)
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


class ImageTooLarge(Exception):
    pass


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except PermissionError:
        raise DataError(f"'{path}' cannot be read (permission denied)", "Make the data folder readable.") from None


#: what a non-regular file is, by its st_mode type (opening a FIFO blocks until something writes to it; a device
#: such as /dev/zero never ends)
_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image file without opening it, or None when it is a regular file (directly
    or through symbolic links). Only stat() is called: nothing is opened, so a FIFO or a device never blocks."""
    try:
        mode = os.stat(path).st_mode  # follows links: what counts is what the path leads to
    except FileNotFoundError:
        return "broken symbolic link (its target does not exist)" if path.is_symlink() else "file vanished"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    through = " behind a symbolic link" if path.is_symlink() else ""
    return f"not a regular file: {kind}{through}; skipped without opening it"


@contextlib.contextmanager
def _open(path: Path, max_pixels: int) -> Iterator[Any]:
    """Pillow's image, opened (header only) with the pixel limit enforced before anything is decoded, for the
    ``with`` block that reads it; closed after.

    Raises DataError, without opening anything, when ``path`` is not a regular file (it may have been replaced
    since the folder was scanned); ImageTooLarge above ``max_pixels``. Pillow's own decompression-bomb guard is
    set to ``max_pixels`` for the block only (it checks again while decoding some formats, TIFF and GIF frames):
    the setting is global, and left in place it refused edgepipe's own plots later in the process."""
    import warnings

    from PIL import Image

    problem = not_a_regular_file(path)
    if problem is not None:
        raise DataError(
            f"'{path}': {problem}", "Restore the image file, or rebuild the dataset index (edgepipe build --force)."
        )
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(path)
            except (Image.DecompressionBombWarning, Image.DecompressionBombError):
                raise ImageTooLarge(f"larger than data.max_image_pixels ({max_pixels:,} pixels)") from None
            with image:
                if image.size[0] * image.size[1] > max_pixels:
                    raise ImageTooLarge(
                        f"{image.size[0]}x{image.size[1]} is larger than data.max_image_pixels ({max_pixels:,} pixels)"
                    )
                yield image
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _check_image(path: Path, max_pixels: int) -> tuple[int, int]:
    """The image's upright (width, height) in pixels, after checking it decodes the way training will read it."""
    with _open(path, max_pixels) as image:
        image.verify()
    return load_upright(path, max_pixels).size  # verify() leaves the file unusable: read it again, whole


def load_upright(path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
    """The image file's first frame as a loaded Pillow image, turned upright by its EXIF Orientation tag (a phone
    photo taken in portrait is stored sideways with a tag saying so). Every image file edgepipe reads goes through
    here. Raises ImageTooLarge above ``max_pixels``, DataError for a path that is not a regular file, and
    Pillow's errors for a corrupt file."""
    from PIL import ImageOps

    with _open(path, max_pixels) as image:
        image.seek(0)
        upright = ImageOps.exif_transpose(image)  # a loaded copy, so closing the file is safe
        upright.load()
        return upright


def _files(class_dir: Path) -> list[Path]:
    """Every visible entry under a class folder except the folders themselves (they are searched): regular files,
    symbolic links (broken ones too, so they can be listed) and special files (FIFOs, sockets, devices)."""
    try:
        return sorted(
            p for p in class_dir.rglob("*") if not p.name.startswith(".") and (p.is_symlink() or not p.is_dir())
        )
    except PermissionError:
        raise DataError(f"'{class_dir}' cannot be read (permission denied)", "Make the data folder readable.") from None


def scan(root: Path, on_bad_image: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Scan:
    """Find classes and images under ``root``; reject unreadable, broken-link and oversized files (or fail)."""
    if not root.exists():
        raise DataError(
            f"data path '{root}' does not exist", "Pass an image folder with one subfolder per class (--data DIR)."
        )
    if not root.is_dir():
        raise DataError(
            f"data path '{root}' is not a folder", "Pass an image folder with one subfolder per class (--data DIR)."
        )
    top = {p.name.lower(): p for p in _subdirs(root)}
    if "train" in top:
        val = next((top[n] for n in VAL_NAMES if n in top), None)
        parts = {"train": top["train"], "val": val, "test": top.get("test")}
        layout = "splits"
    else:
        parts = {"all": root}
        layout = "classes"
    result = Scan(layout, [], {s: {} for s in ("train", "val", "test", "all")})
    for split_name, folder in parts.items():
        if folder is None:
            continue
        for class_dir in _subdirs(folder):
            kept = result.files[split_name].setdefault(class_dir.name, [])
            for file in _files(class_dir):
                rel = str(file.relative_to(root))
                problem = not_a_regular_file(file)  # before the file is opened: a FIFO would block the scan forever
                if problem is not None:
                    result.rejected.append({"file": rel, "reason": problem})
                    continue
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    result.rejected.append(
                        {"file": rel, "reason": f"unsupported file type '{file.suffix}' (use JPEG, PNG, BMP or GIF)"}
                    )
                    continue
                try:
                    w, h = _check_image(file, max_pixels)
                except ImageTooLarge as exc:
                    result.rejected.append(
                        {"file": rel, "reason": f"image too large: {exc}; raise data.max_image_pixels to read it"}
                    )
                    continue
                except Exception as exc:  # Pillow raises many types for corrupt files
                    reason = f"unreadable image ({error_line(exc, 80)})"
                    if on_bad_image == "fail":
                        raise DataError(
                            f"{rel}: {reason}", "Remove or fix the file, or set data.on_bad_image: skip."
                        ) from None
                    result.rejected.append({"file": rel, "reason": reason})
                    continue
                result.image_sizes[f"{w}x{h}"] += 1
                kept.append(rel)
    reference = "train" if layout == "splits" else "all"
    result.class_names = sorted(result.files[reference])
    if not result.class_names:
        raise DataError(
            f"data path '{root}' has no class subfolders",
            "Put each class's images in its own subfolder (data/cat/*.jpg, data/dog/*.jpg), optionally under train/ and val/.",
        )
    empty = [c for c in result.class_names if not result.files[reference][c]]
    if empty:
        raise DataError(
            f"class folder(s) {', '.join(empty)} in '{root}' hold no readable images",
            "Add images or remove the empty folders.",
        )
    if layout == "splits":
        for split_name in ("val", "test"):
            seen = set(result.files[split_name])
            if seen and seen != set(result.class_names):
                extra, missing = sorted(seen - set(result.class_names)), sorted(set(result.class_names) - seen)
                raise DataError(
                    f"the {split_name} split's classes differ from train's"
                    + (f" (not in train: {', '.join(extra)})" if extra else "")
                    + (f" (missing: {', '.join(missing)})" if missing else ""),
                    f"Give {split_name}/ the same class subfolders as train/.",
                )
    return result


def decode(path: Path, size: int, channels: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an image file (first frame, upright by its EXIF orientation) to uint8 (size, size, channels),
    bilinear resize.

    16-bit images (Pillow's I;16 modes) are scaled to 8 bits (converting them directly would clip
    every value above 255 to white).
    """
    from PIL import Image

    image = load_upright(path, max_pixels)
    mode = "L" if channels == 1 else "RGB"
    if image.mode.startswith("I"):  # 16/32-bit integer grey: scale the 16-bit range to 8 bits
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "P", "PA") and mode == "RGB":
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(canvas, image)
    image = image.convert(mode).resize((size, size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def resize_batch(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Resize uint8 (N, H, W, C) images to (N, size, size, channels) (grey<->RGB as needed)."""
    from PIL import Image

    out = np.empty((len(images), size, size, channels), np.uint8)
    for i, image in enumerate(images):
        mode = "L" if image.shape[-1] == 1 else "RGB"
        pil = Image.fromarray(image[..., 0] if mode == "L" else image, mode)
        pil = pil.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
        array = np.asarray(pil, dtype=np.uint8)
        out[i] = array[..., None] if channels == 1 else array
    return out


def check(path: str, key: str = "data.path") -> None:
    p = Path(path)
    if not p.exists():
        raise DataError(
            f"data path '{path}' does not exist ({key})",
            "Pass an image folder with one subfolder per class (--data DIR), or builtin:digits.",
        )
    if not p.is_dir():
        raise DataError(
            f"data path '{path}' is not a folder ({key})", "Pass an image folder with one subfolder per class."
        )
    if not any(p.iterdir()):
        raise DataError(f"data folder '{path}' is empty ({key})", "Put each class's images in its own subfolder.")


def scan_source(config, seed: int) -> SourceScan:
    source = config.path
    found = scan(Path(source), config.on_bad_image, config.max_image_pixels)
    class_names = select_classes(found.class_names, config.classes, source)
    if found.layout == "splits":
        splits = {s: [(f, c) for c in class_names for f in found.files[s].get(c, [])] for s in SPLITS}
    else:  # one folder of classes: all of it is train, out of which make_index holds val and test
        splits = {"train": [(f, c) for c in class_names for f in found.files["all"][c]], "val": [], "test": []}
    return SourceScan(
        class_names,
        splits,
        found.layout,
        str(Path(source).resolve()),
        found.rejected,
        dict(found.image_sizes),
        {"max_image_pixels": config.max_image_pixels},
    )


def materialize(index: dict, size: int, channels: int) -> dict[str, np.ndarray]:
    root = Path(index["source"])
    max_pixels = index.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)
    out = {}
    for split_name, entries in index["splits"].items():
        decoded = [decode(root / item, size, channels, max_pixels) for item, _ in entries]
        out[split_name] = np.stack(decoded) if decoded else np.zeros((0, size, size, channels), np.uint8)
    return out


register_source(
    Source(
        None,
        "an image folder: one subfolder per class, or train/ val/ [test/] subfolders",
        check,
        scan_source,
        materialize,
    )
)
