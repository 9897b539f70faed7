"""Work that does not need the machine to itself (converting networks, training heads), spread over worker
processes side by side.

Each worker is a fresh ``python -m edgepipe.child`` process (the caller's script is never imported again, as
multiprocessing's spawn would do) that imports TensorFlow once and runs one function over its share of the
items, the costliest dealt first, printing a marked progress line after each; everything else it writes
(TensorFlow's and the converters' own output) goes to a log file in the work folder. ``in_workers`` returns
when every worker has ended: what follows (timing) has the machine to itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.progress import Echo

#: at most this many workers: each holds a converter's or a network's memory (a large one peaks at a few GB)
MAX_JOBS = 4
#: the mark of a worker's progress lines (its other output is not shown)
_MARK = "edgepipe-worker: "


def default_jobs() -> int:
    """One worker per core this process may use, at most MAX_JOBS."""
    return max(1, min(MAX_JOBS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


@dataclass
class WorkerFailed:
    """In place of an item's result: its worker process ended without one (``why``)."""

    why: str


def in_workers(
    function: str,
    items: Sequence[Any],
    *,
    jobs: int,
    folder: Path,
    echo: Echo,
    cost: Callable[[Any], float] = lambda item: 0.0,
    threads: int | None = None,
) -> list[Any]:
    """``function(item)`` ("package.module:name", returning (result, summary line)) for every item, in up to
    ``jobs`` worker processes side by side; the results in ``items`` order, a WorkerFailed for those of a worker
    that ended abnormally. Progress: "  done k/n: <summary>" as each item is done. ``threads``: the intra-op
    threads of each worker's TensorFlow (default: its own choice)."""
    from concurrent.futures import ThreadPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    jobs = max(1, min(jobs, len(items)))
    order = sorted(range(len(items)), key=lambda i: -cost(items[i]))
    shares = [order[j::jobs] for j in range(jobs)]
    progress = _Progress(len(items), echo)
    results: list[Any] = [None] * len(items)

    def work(share: list[int]) -> list[Any] | WorkerFailed:
        from edgepipe import child

        task = {"function": function, "items": [items[i] for i in share], "log": str(folder), "parent": os.getpid()}
        try:
            env = {"TF_NUM_INTRAOP_THREADS": str(threads)} if threads else None
            return child.run(f"{__name__}:_share", task, pickled=True, echo=progress, folder=folder, env=env)
        except child.ChildFailed as exc:
            return WorkerFailed(exc.line or exc.kind)

    with ThreadPoolExecutor(jobs) as pool:
        for share, outcome in zip(shares, pool.map(work, shares)):
            for k, i in enumerate(share):
                results[i] = outcome if isinstance(outcome, WorkerFailed) else outcome[k]
    return results


class _Progress:
    """Shows the workers' marked lines, numbered across workers."""

    def __init__(self, total: int, echo: Echo):
        import threading

        self.total, self.echo, self.done, self.lock = total, echo, 0, threading.Lock()

    def __call__(self, line: str) -> None:
        if line.startswith(_MARK):
            with self.lock:
                self.done += 1
                self.echo(f"  done {self.done}/{self.total}: {line[len(_MARK) :]}")


def _share(task: dict) -> list[Any]:
    """What a worker process runs: its items one after another, a progress line after each."""
    import gc
    import importlib
    import sys

    _end_with_parent(task["parent"])
    log = os.open(os.path.join(task["log"], f"worker-{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT, 0o644)
    stdout = os.fdopen(os.dup(1), "w")
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = sys.stderr = os.fdopen(os.dup(log), "w")
    from edgepipe.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras  # noqa: F401

    gc.collect()
    gc.freeze()  # the imports' objects: each clear_session between items collects only what came after
    module, _, name = task["function"].partition(":")
    function = getattr(importlib.import_module(module), name)
    out = []
    for item in task["items"]:
        result, summary = function(item)
        out.append(result)
        print(f"{_MARK}{summary}", file=stdout, flush=True)
    return out


def _end_with_parent(parent: int) -> None:
    """Linux: have this worker killed when the process that started it ends (a search killed mid-way leaves no
    converter running beside the next one's timing); it ends now if that process is already gone."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a killed search's workers finish their share, then end
        return
    if os.getppid() != parent:
        os._exit(1)
