"""Networks a search's process keeps between its steps, so a later step takes the model an earlier one built
instead of building it again.

The latency step builds each candidate's network to convert it (edgepipe.choose.loop.built_for_timing) the way
its accuracy step would build it, and keeps it here, in the worker process that converted it; the accuracy step
runs that candidate in the same worker where it can (edgepipe.choose.workers' ``prefer``) and trains the very
model. A key names everything the build depends on; a model is taken once (``take`` removes it), and nothing is
kept beyond KEEP_MAX_PARAMS parameters in one process.
"""

from __future__ import annotations

from typing import Any

#: at most this many parameters of kept models in one process (float32: 200 MB of weights)
KEEP_MAX_PARAMS = 50_000_000

_KEPT: dict[str, Any] = {}


def keep(key: str, model: Any) -> bool:
    """Keep ``model`` under ``key`` unless that would hold more than KEEP_MAX_PARAMS; whether it was kept."""
    held = sum(m.count_params() for k, m in _KEPT.items() if k != key)
    if held + model.count_params() > KEEP_MAX_PARAMS:
        return False
    _KEPT[key] = model
    return True


def take(key: str) -> Any | None:
    """The model kept under ``key`` (no longer kept), or None."""
    return _KEPT.pop(key, None)


def clear() -> None:
    """Let go of every kept model (a step that could take them is over)."""
    _KEPT.clear()


def release(item: Any) -> tuple[None, str]:
    """What a worker process runs to let go of its kept models (edgepipe.choose.workers.Workers.each)."""
    clear()
    return None, "let go of its kept networks"
