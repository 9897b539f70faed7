"""Errors a user can act on.

Every error edgepipe raises on purpose is an :class:`EdgepipeError`: the CLI
prints it as one line (``error: <what is wrong>. <how to fix it>``) and exits
with code 2, without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations


class EdgepipeError(Exception):
    """A problem with the user's input or environment, with a hint to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message.rstrip('.')}. {self.hint}"
        return self.message


class ConfigError(EdgepipeError):
    """The run configuration is invalid."""


class DataError(EdgepipeError):
    """The dataset is missing, empty or malformed."""


class MissingDependencyError(EdgepipeError):
    """An optional package or device needed by a stage is not available."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of ``str(exc)``, cut to ``limit`` characters; the exception's type name when
    its message is empty or only whitespace (so a reason is never blank and never raises)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__


def error_line(exc: BaseException, limit: int = 240) -> str:
    """``"TypeName: first line"`` of ``exc`` (see :func:`first_line`), or only the type name when the
    message is empty."""
    line = first_line(exc, limit)
    name = type(exc).__name__
    return name if line == name and not str(exc).strip() else f"{name}: {line}"
