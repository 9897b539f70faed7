"""A small decorator-filled registry shared by architectures, exporters and runtimes."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from edgepipe.errors import EdgepipeError

T = TypeVar("T")


def closest(name: str, candidates: list[str], n: int = 3) -> list[str]:
    """Names in ``candidates`` that look like ``name`` (case-insensitive)."""
    lowered = {c.lower(): c for c in candidates}
    return [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)]


def did_you_mean(name: str, candidates: list[str]) -> str:
    near = closest(name, candidates)
    if near:
        return "Did you mean " + " or ".join(f"'{c}'" for c in near) + "?"
    return "Valid names: " + ", ".join(sorted(candidates)) + "."


class Registry(Generic[T]):
    """Maps names (and aliases) to entries; unknown names fail with the closest valid names."""

    def __init__(self, kind: str, list_command: str | None = None):
        self.kind = kind
        self.list_command = list_command
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        #: called before the first lookup, to fill the registry on first use rather than on import
        self.loader: Callable[[], None] | None = None

    def _load(self) -> None:
        loader, self.loader = self.loader, None
        if loader is not None:
            loader()

    def register(self, name: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            self.add(name, entry, aliases)
            return entry

        return decorator

    def add(self, name: str, entry: T, aliases: tuple[str, ...] = ()) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry
        for alias in aliases:
            self._aliases[alias.lower()] = name

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases; EdgepipeError if unknown."""
        self._load()
        if name in self._entries:
            return name
        key = name.lower()
        if key in self._aliases:
            return self._aliases[key]
        for registered in self._entries:
            if registered.lower() == key:
                return registered
        hint = did_you_mean(name, list(self._entries) + list(self._aliases))
        if self.list_command:
            hint += f" Run '{self.list_command}' to list them."
        raise EdgepipeError(f"unknown {self.kind} '{name}'", hint)

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name)]

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        try:
            self.canonical(name)
        except EdgepipeError:
            return False
        return True

    def __iter__(self) -> Iterator[tuple[str, T]]:
        self._load()
        return iter(self._entries.items())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)
