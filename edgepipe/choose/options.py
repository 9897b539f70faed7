"""What one search is asked for: the candidates, their weights, the budgets, the target and the search directory.

The same options come from three places, in rising precedence: the configuration's ``search:`` section, the
Python API's keyword arguments (or an ``options`` object) and the command line's flags. Each place builds a
SearchOptions holding only what it gives (None: not given there); ``over`` lays one on another.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from edgepipe.choose.budgets import Budgets

if TYPE_CHECKING:
    from edgepipe.config import SearchConfig

PathLike = Union[str, Path]


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """A search's options; None means "not given here" (the layer below decides, the configuration's defaults
    last). ``weights``: imagenet, none, a file, or {architecture: one of those}; budgets in ms at
    ``percentile``, MB of file, MB resident at the peak and top-1 percent; ``memory`` None: the bench
    section's setting; ``min_iterations`` and ``min_duration_s`` override the bench section's timing floors."""

    archs: Union[str, Sequence[str], None] = None
    alphas: Union[float, Sequence[float], None] = None
    input_sizes: Union[int, Sequence[int], None] = None
    formats: Union[str, Sequence[str], None] = None
    weights: Union[str, Mapping[str, str], None] = None
    allow_random_weights: bool | None = None
    max_latency_ms: float | None = None
    percentile: str | None = None
    max_size_mb: float | None = None
    max_memory_mb: float | None = None
    min_top1: float | None = None
    threads: int | None = None
    remote: str | None = None
    ssh_config: PathLike | None = None
    remote_edgepipe: str | None = None
    remote_dir: str | None = None
    output: PathLike | None = None
    force: bool | None = None
    memory: bool | None = None
    min_iterations: int | None = None
    min_duration_s: float | None = None
    cache: PathLike | None = None

    @classmethod
    def from_config(cls, section: SearchConfig) -> SearchOptions:
        """Every option the configuration's ``search:`` section holds (its defaults included)."""
        own = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dataclasses.asdict(section).items() if k in own})

    def over(self, base: SearchOptions) -> SearchOptions:
        """``base`` with each option given here (not None) in place of its own."""
        return dataclasses.replace(base, **self.given())

    def given(self) -> dict[str, Any]:
        """The options given here: {name: value} for those that are not None."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def budgets(self) -> Budgets:
        """The checked budgets (a one-line EdgepipeError for one that is not a finite positive number)."""
        return Budgets(
            self.max_latency_ms, self.percentile or "p50", self.max_size_mb, self.max_memory_mb, self.min_top1
        ).check()
