"""ImageNet weights without a download: which Keras weights file a network asks for, and whether this machine has it.

Keras Applications fetch their weights through ``keras.utils.get_file``, which downloads whatever its cache
(``$KERAS_HOME/models``, default ``~/.keras/models``) lacks. ``missing_imagenet_weights`` builds the network only up
to that request and checks the file (and its published hash) on disk; ``no_downloads`` lets a build load files that
are there and turns any download into a one-line error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgepipe.errors import EdgepipeError


class _Asked(Exception):
    """Raised in place of a download: the file Keras asked for and the hash it would check."""

    def __init__(self, path: Path, file_hash: str | None):
        super().__init__(str(path))
        self.path, self.file_hash = path, file_hash


def _requested(args: tuple, kwargs: dict[str, Any]) -> tuple[Path, str | None]:
    """(where get_file keeps the file, its hash) for get_file's arguments, as Keras 3 computes them."""
    from keras.src.backend import config

    names = ("fname", "origin", "untar", "md5_hash", "file_hash", "cache_subdir")
    given = {**dict(zip(names, args)), **kwargs}
    fname = given.get("fname") or os.path.basename(str(given.get("origin") or ""))
    base = os.path.expanduser(given.get("cache_dir") or config.keras_home())
    if not os.access(base, os.W_OK):  # Keras falls back to /tmp/.keras when its home is not writable
        base = os.path.join("/tmp", ".keras")
    return Path(base) / given.get("cache_subdir", "datasets") / fname, given.get("file_hash") or given.get("md5_hash")


def _present(path: Path, file_hash: str | None) -> bool:
    """The file is there and, when Keras would check a hash, matches it (a mismatch would make Keras download)."""
    from keras.src.utils.file_utils import validate_file

    return path.is_file() and (not file_hash or validate_file(str(path), file_hash))


@contextlib.contextmanager
def _get_file_replaced(replacement) -> Iterator[None]:
    from keras.src.utils import file_utils

    original = file_utils.get_file
    file_utils.get_file = replacement(original)
    try:
        yield
    finally:
        file_utils.get_file = original


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """Keras loads weights files already on this machine; a download it would start is an EdgepipeError instead."""

    def replacement(original):
        def get_file(*args, **kwargs):
            path, file_hash = _requested(args, kwargs)
            if not _present(path, file_hash):
                raise EdgepipeError(
                    f"weights file {path.name} is not in {path.parent}, and nothing is downloaded here",
                    "Copy it there, pass its path as the weights, or use random weights.",
                )
            return original(*args, **kwargs)

        return get_file

    with _get_file_replaced(replacement):
        yield


def missing_imagenet_weights(arch, input_size: int, channels: int, alpha: float | None) -> str | None:
    """None when ``arch`` (an Architecture) can load ImageNet weights at this size, width and channel count from
    files on this machine; otherwise why not (no published weights for it, or the file Keras asks for is absent).
    Builds the network's graph up to the weights request, never downloads."""
    import keras

    from edgepipe.architectures.classifier import check_weights_request

    try:
        check_weights_request(arch, "imagenet", input_size, channels, alpha)
    except EdgepipeError as exc:
        return exc.message  # the hint speaks of run flags; the caller says what to do instead

    def replacement(original):
        def get_file(*args, **kwargs):
            raise _Asked(*_requested(args, kwargs))

        return get_file

    try:
        # in a stateless scope Keras leaves the variables uninitialised: the graph is built in half the time, and
        # this one is thrown away at the weights request
        with _get_file_replaced(replacement), keras.StatelessScope():
            arch.backbone((input_size, input_size, channels), alpha=alpha, weights="imagenet")
    except _Asked as asked:
        if not _present(asked.path, asked.file_hash):
            return (
                f"ImageNet weights file {asked.path.name} is not on this machine (looked in {asked.path.parent}; "
                "nothing is downloaded)"
            )
    finally:
        keras.backend.clear_session()
    return None
