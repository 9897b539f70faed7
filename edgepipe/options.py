"""Typed option fields shared by the run configuration and the backends' own option sections.

A field carries its help line (the configuration reference in docs/configuration.md is generated from it)
and its checks (``min``, ``max``, ``choices``, ``registry``), which ``edgepipe.config``
enforces when a configuration is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


def option(default: Any, help: str, **checks: Any) -> Any:
    """A dataclass field with a help line and checks; mutable defaults are copied per instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **checks})
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda: dataclasses.replace(default), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})
