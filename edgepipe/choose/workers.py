"""Work that does not need the machine to itself (converting networks, training heads), spread over worker
processes side by side.

Each worker is a fresh ``python -m edgepipe.child`` process (the caller's script is never imported again, as
multiprocessing's spawn would do). A ``Workers`` pool starts them once: each imports TensorFlow (and what the
caller names) once, then waits, blocked on a pipe, for items; ``map`` hands the items out one at a time, the
costliest first, the next one to whichever worker finishes first, and returns when all are done, so what
follows (timing) has the machine to itself while the workers sit idle. A worker prints a marked progress line
after each item; everything else it writes (TensorFlow's and the converters' own output) goes to a log file in
the work folder, whose last line is shown when a worker dies. When the caller is interrupted or terminated, the
workers are killed; when it is killed, they end with it (edgepipe.child).
"""

from __future__ import annotations

import os
import pickle
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.progress import Echo

#: at most this many workers: each holds a converter's or a network's memory (a large one peaks at a few GB)
MAX_JOBS = 4
#: the mark of a worker's progress lines (its other output is not shown)
_MARK = "edgepipe-worker: "
#: what a worker prints once its preloads are imported
_READY = "edgepipe-worker-ready"


def default_jobs() -> int:
    """One worker per core this process can really use (affinity and cgroup quota), at most MAX_JOBS."""
    from edgepipe.device import core_limits

    return max(1, min(MAX_JOBS, core_limits()["usable_cores"]))


@dataclass
class WorkerFailed:
    """In place of an item's result: why none came (its worker ended without one, or the function raised)."""

    why: str


class _Worker:
    """One worker process, its exchange folder, and a thread that turns its marked lines into events."""

    def __init__(self, folder: Path, env: dict[str, str] | None, preload: Sequence[str], events: queue.Queue):
        import subprocess

        from edgepipe import child

        self.folder = folder  # its exchange files; its log goes beside, in the pool's folder
        self.process = child.start(
            f"{__name__}:_serve",
            {"log": str(folder.parent), "preload": list(preload)},
            folder,
            env,
            stdin=subprocess.PIPE,
        )
        self.busy: tuple[int, Path] | None = None  # (item index, its result file) while it works on one
        self.ready = threading.Event()  # set when its preloads are imported (or it ended)
        self.reader = threading.Thread(target=self._relay, args=(events,), daemon=True)
        self.reader.start()

    def _relay(self, events: queue.Queue) -> None:
        try:
            for line in self.process.stdout:
                if line.startswith(_READY):
                    self.ready.set()
                elif line.startswith(_MARK):
                    events.put((self, line[len(_MARK) :].rstrip("\n")))
            self.process.wait()
        finally:  # whatever ends the reading, the pool hears that this worker is gone
            self.ready.set()
            events.put((self, None))

    def give(self, index: int, function: str, item: Any, number: int) -> None:
        task, result = self.folder / f"task-{number}.pkl", self.folder / f"result-{number}.pkl"
        task.write_bytes(pickle.dumps({"function": function, "item": item, "result": str(result)}))
        self.busy = (index, result)
        try:
            self.process.stdin.write(f"{task}\n")
            self.process.stdin.flush()
        except OSError:  # it has just ended: its reader reports that, and the item fails with its last words
            pass

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def last_words(self) -> str:
        """ "; <the last line the worker wrote to its log>" (a traceback's last line, say), or nothing."""
        try:
            log = (self.folder.parent / f"worker-{self.process.pid}.log").read_text(errors="replace")
        except OSError:
            return ""
        lines = [line for line in log.splitlines() if line]
        return f"; its last words: {lines[-1][:200]}" if lines else ""


class Workers:
    """Up to ``jobs`` worker processes, started when the pool is made (their imports overlap the caller's own
    work) and given items by ``map`` as many times as needed; ``close`` (or the end of a ``with`` block) ends
    them. ``threads``: the intra-op threads of each worker's TensorFlow (default: its own choice); ``preload``:
    modules each worker imports while it waits for its first item."""

    def __init__(
        self,
        jobs: int,
        folder: Path,
        *,
        threads: int | None = None,
        preload: Sequence[str] = (),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.jobs = folder, max(1, jobs)
        self._events: queue.Queue = queue.Queue()
        self._numbers = 0
        env = {"TF_NUM_INTRAOP_THREADS": str(threads)} if threads else None
        self._workers: list[_Worker] = []
        try:
            for k in range(self.jobs):
                self._workers.append(_Worker(folder / f"exchange-{k}", env, preload, self._events))
        except BaseException:
            self.close()
            raise

    @property
    def live(self) -> int:
        """How many workers are still running (one that died on an item is gone for good)."""
        return sum(1 for w in self._workers if w.alive)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self) -> None:
        """Return once every worker has imported its preloads (or ended): a worker still importing would share
        the cores with whatever the caller times next."""
        for worker in self._workers:
            worker.ready.wait()

    def map(
        self,
        function: str,
        items: Sequence[Any],
        echo: Echo,
        cost: Callable[[Any], float] = lambda item: 0.0,
        prefer: Callable[[Any], int | None] = lambda item: None,
    ) -> list[Any]:
        """``function(item)`` ("package.module:name", returning (result, summary line)) for every item, in the
        workers side by side, the costliest first; the results in ``items`` order, a WorkerFailed for an item
        whose function raised and for one whose worker died on it (the others go on in the workers left).
        ``prefer``: the process id of the worker an item is best run in (one that holds what it needs from an
        earlier map), or None; a worker takes the costliest item that prefers it, else one that prefers no
        worker of the pool, else the costliest left (any worker can run any item). Progress: "  done k/n:
        <summary>" as each item is done."""
        results: list[Any] = [None] * len(items)
        waiting = sorted(range(len(items)), key=lambda i: -cost(items[i]))
        pids = {w.process.pid for w in self._workers if w.alive}
        done = 0

        def pick(worker: _Worker) -> int:
            wanted = [prefer(items[i]) for i in waiting]
            place = next((k for k, pid in enumerate(wanted) if pid == worker.process.pid), None)
            if place is None:
                place = next((k for k, pid in enumerate(wanted) if pid not in pids), 0)
            return waiting.pop(place)

        def give(worker: _Worker) -> None:
            if waiting and worker.alive:
                index = pick(worker)
                self._numbers += 1
                worker.give(index, function, items[index], self._numbers)

        def finished(index: int, result: Any, summary: str) -> None:
            nonlocal done
            results[index], done = result, done + 1
            echo(f"  done {done}/{len(items)}: {summary}")

        try:
            for worker in self._workers:
                give(worker)
            while any(w.busy for w in self._workers):
                worker, line = self._events.get()
                if worker.busy is None:
                    continue
                index, path = worker.busy
                worker.busy = None
                if line is None:  # it died on this item
                    code = worker.process.returncode
                    failed = WorkerFailed(f"exit code {code}{worker.last_words()}")
                    finished(index, failed, f"failed: {failed.why}")
                else:
                    result = pickle.loads(path.read_bytes())
                    path.unlink(missing_ok=True)
                    finished(index, result, line)
                    give(worker)
            why = "no worker left to run it" + (self._workers[0].last_words() if self._workers else "")
            for index in waiting:  # every worker died
                finished(index, WorkerFailed(why), f"failed: {why}")
        except BaseException:  # interrupted or terminated: no worker goes on converting or training
            self.close()
            raise
        return results

    def each(self, function: str) -> list[Any]:
        """``function(pid)`` once in every worker still running (to let go of what it holds, say), the worker's
        process id its item, which that worker takes as the one that prefers it; the results."""
        pids = [w.process.pid for w in self._workers if w.alive]
        return self.map(function, pids, lambda line: None, prefer=lambda pid: pid)

    def close(self) -> None:
        """End every worker now, by killing it (an item it is working on is lost): between items a worker holds
        nothing left to save, and a process with TensorFlow loaded takes about 1.5 s to exit on its own."""
        for worker in self._workers:
            worker.process.kill()
        for worker in self._workers:
            worker.process.wait()
            worker.reader.join(timeout=5)
            try:  # a task line left unsent to a worker that had ended is flushed here, into a broken pipe
                worker.process.stdin.close()
            except OSError:
                pass
            if not worker.reader.is_alive():  # a reader still blocked holds the pipe's lock
                worker.process.stdout.close()


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
    """``Workers.map`` in a pool of up to ``jobs`` workers made for these items alone."""
    if not items:
        return []
    with Workers(min(jobs, len(items)), folder, threads=threads) as workers:
        return workers.map(function, items, echo, cost)


def _serve(task: dict) -> None:
    """What a worker process runs: its preloads, then each item named on its standard input, its result pickled
    where the item says and a marked line printed after it (an item whose function raises gets a WorkerFailed
    with the first line, and the next one goes on), until its pool ends it."""
    import importlib

    from edgepipe.errors import first_line
    from edgepipe.pipeline.sequence import only_new_objects_collected

    descriptor = os.open(Path(task["log"]) / f"worker-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT, 0o644)
    stdout = os.fdopen(os.dup(1), "w")
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    sys.stdout = sys.stderr = os.fdopen(os.dup(descriptor), "w")
    for name in task["preload"]:
        importlib.import_module(name)
    # TensorFlow's and Keras's objects set aside: each clear_session between items collects only what came after
    with only_new_objects_collected():
        print(_READY, file=stdout, flush=True)  # TensorFlow imported: nothing more before the first item
        for line in sys.stdin:
            task_file = Path(line.rstrip("\n"))
            request = pickle.loads(task_file.read_bytes())
            task_file.unlink()
            module, _, name = request["function"].partition(":")
            try:
                result, summary = getattr(importlib.import_module(module), name)(request["item"])
            except Exception as exc:
                result = WorkerFailed(f"{type(exc).__name__}: {first_line(exc)}")
                summary = f"failed: {result.why}"
            done = Path(request["result"])
            done.with_suffix(".tmp").write_bytes(pickle.dumps(result))
            done.with_suffix(".tmp").replace(done)
            print(f"{_MARK}{summary}", file=stdout, flush=True)
