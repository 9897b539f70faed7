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
