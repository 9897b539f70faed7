"""Work that does not need the machine to itself (converting networks, training heads), spread over worker
processes side by side.

Each worker is a fresh ``python -m edgepipe.child`` process (the caller's script is never imported again, as
multiprocessing's spawn would do) that imports TensorFlow once and runs one function over its share of the
items, the costliest dealt first, printing a marked progress line after each; everything else it writes
(TensorFlow's and the converters' own output) goes to a log file in the work folder, whose last line is shown
when a worker fails. ``in_workers`` returns when every worker has ended: what follows (timing) has the machine
to itself. When the caller is interrupted or terminated, the workers are killed; when it is killed, they end
with it (edgepipe.child).
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
    """One worker per core this process can really use (affinity and cgroup quota), at most MAX_JOBS."""
    from edgepipe.device import core_limits

    return max(1, min(MAX_JOBS, core_limits()["usable_cores"]))


@dataclass
class WorkerFailed:
    """In place of an item's result: why none came (its worker ended without one, or the function raised)."""

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
    ``jobs`` worker processes side by side; the results in ``items`` order, a WorkerFailed for an item whose
    function raised and for those a worker left undone when it died. Progress: "  done k/n: <summary>" as each
    item is done. ``threads``: the intra-op threads of each worker's TensorFlow (default: its own choice)."""
    import threading

    from edgepipe import child

    folder.mkdir(parents=True, exist_ok=True)
    jobs = max(1, min(jobs, len(items)))
    order = sorted(range(len(items)), key=lambda i: -cost(items[i]))
    shares = [order[j::jobs] for j in range(jobs)]
    progress = _Progress(len(items), echo)
    env = {"TF_NUM_INTRAOP_THREADS": str(threads)} if threads else None
    started = [
        child.start(
            f"{__name__}:_share",
            {"function": function, "items": [items[i] for i in share], "log": str(folder)},
            folder,
            env,
        )
        for share in shares
    ]
    readers = [threading.Thread(target=_relay, args=(process, progress), daemon=True) for process, _ in started]
    try:
        for reader in readers:
            reader.start()
        for process, _ in started:
            process.wait()
    except BaseException:  # interrupted or terminated: no worker goes on converting or training
        for process, _ in started:
            process.kill()
            process.wait()
        raise
    finally:
        for reader in readers:
            reader.join(timeout=5)
    results: list[Any] = [None] * len(items)
    for share, (process, finish) in zip(shares, started):
        try:
            outcome = finish()
        except child.ChildFailed as exc:
            outcome = [WorkerFailed(f"{exc.line or exc.kind}{_last_line(folder, process.pid)}")] * len(share)
        for k, i in enumerate(share):
            results[i] = outcome[k]
    return results


def _relay(process, progress: _Progress) -> None:
    for line in process.stdout:
        progress(line.rstrip("\n"))


def _last_line(folder: Path, pid: int) -> str:
    """ "; <the last line the worker wrote to its log>" (a traceback's last line, say), or nothing."""
    try:
        lines = [line for line in (folder / f"worker-{pid}.log").read_text(errors="replace").splitlines() if line]
    except OSError:
        return ""
    return f"; its last words: {lines[-1][:200]}" if lines else ""


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
    """What a worker process runs: its items one after another, a progress line after each (an item whose function
    raises gets a WorkerFailed with the first line, and the next one goes on)."""
    import importlib
    import sys

    from edgepipe.errors import first_line
    from edgepipe.pipeline.sequence import only_new_objects_collected

    descriptor = os.open(Path(task["log"]) / f"worker-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT, 0o644)
    stdout = os.fdopen(os.dup(1), "w")
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    sys.stdout = sys.stderr = os.fdopen(os.dup(descriptor), "w")
    module, _, name = task["function"].partition(":")
    function = getattr(importlib.import_module(module), name)
    out: list[Any] = []
    # TensorFlow's and Keras's objects set aside: each clear_session between items collects only what came after
    with only_new_objects_collected():
        for item in task["items"]:
            try:
                result, summary = function(item)
            except Exception as exc:
                result = WorkerFailed(f"{type(exc).__name__}: {first_line(exc)}")
                summary = f"failed: {result.why}"
            out.append(result)
            print(f"{_MARK}{summary}", file=stdout, flush=True)
    return out
