"""Data sources behind one registry, dispatching on the path's scheme: ``builtin:NAME``, ``tfds:NAME``,
or (no registered scheme) an image folder. A new source is one module that registers a :class:`Source`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgepipe.registry import Registry


@dataclass
class Scan:
    """What a source found: class names, the items of each split the source itself defines (an item is
    whatever ``materialize`` decodes: a file path, an array index; everything is train when it defines
    no split: ``make_index`` holds the missing val and test splits out of train), how it was laid out,
    and the files it rejected."""

    class_names: list[str]
    splits: dict[str, list[tuple[Any, str]]]  # split -> [(item, class name)]
    layout: str
    root: str
    rejected: list[dict[str, str]] = field(default_factory=list)
    image_sizes: dict[str, int] = field(default_factory=dict)
    #: anything the source's materialize needs again (e.g. the pixel limit images were accepted under)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    scheme: str | None  # None: the fallback (image folders)
    description: str
    #: cheap check before any work starts: raise DataError naming the config key
    check: Callable[[str, str], None]
    #: (DataConfig, seed) -> Scan: classes, the splits the source defines, rejected files
    scan: Callable[..., Scan]
    #: (index, size, channels) -> {split: (uint8 images (N, size, size, channels), labels)}
    materialize: Callable[..., dict[str, Any]]


SOURCES: Registry[Source] = Registry("data source")
FOLDER = "folder"


def register_source(source: Source) -> Source:
    SOURCES.add(source.scheme or FOLDER, source)
    return source


def source_for(path: str) -> Source:
    """The source a ``data.path`` names: by its ``scheme:`` prefix when one is registered, else a folder."""
    scheme, sep, _ = path.partition(":")
    if sep and scheme in SOURCES and scheme != FOLDER:
        return SOURCES.get(scheme)
    return SOURCES.get(FOLDER)


def check_path(path: str, key: str) -> None:
    source_for(path).check(path, key)
