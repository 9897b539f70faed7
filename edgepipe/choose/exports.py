"""Networks exported for timing in worker processes side by side, all before any timing starts.

Converting a network to its formats (the TFLite converter, tf2onnx, OpenVINO's conversion, NNCF) keeps about
one core busy; timing needs the machine to itself. ``Exports.run`` converts every network that has to be
measured in up to ``jobs`` worker processes at once (each imports TensorFlow once and converts network after
network), waits for all of them and stops the workers; the timing that follows (``measure.measure`` with
``exports``) runs alone, one network at a time, on the files they made. With one job (one usable core, or one
network) nothing is converted ahead: ``measure`` exports each network just before timing it, in its own process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from edgepipe.choose.measure import Conditions, Echo, Network, Prepared, prepare

#: at most this many conversion workers: each holds a converter's memory (a large network peaks at a few GB)
MAX_JOBS = 4


def default_jobs() -> int:
    """One conversion worker per core this process may use, at most MAX_JOBS."""
    return max(1, min(MAX_JOBS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


class Exports:
    """Exports of networks made ahead of their timing (``run``), handed over one by one (``take``); the files
    live in a folder of their own under ``parent`` until taken and timed, or until the block ends."""

    def __init__(
        self,
        formats: list[str],
        conditions: Conditions,
        echo: Echo,
        parent: Path | None = None,
        jobs: int | None = None,
    ):
        self.formats, self.conditions, self.echo = list(formats), conditions, echo
        self.parent, self.jobs = parent, jobs or default_jobs()
        self.folder: Path | None = None
        self._made: dict[Network, Prepared] = {}

    def __enter__(self) -> Exports:
        return self

    def __exit__(self, *exc) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def run(self, networks: list[Network]) -> None:
        """Export ``networks`` in worker processes side by side, returning when all are done. Each worker is a
        fresh ``python -m edgepipe.child`` process (the caller's script is not imported again) converting its
        share, the largest networks dealt first; the networks of a worker that failed are left to be exported
        when they are timed, with a line saying why."""
        from concurrent.futures import ThreadPoolExecutor

        jobs = min(self.jobs, len(networks))
        if jobs < 2:
            return
        if self.parent is not None:
            self.parent.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="edgepipe-exports-", dir=self.parent))
        self.echo(
            f"converting {len(networks)} network(s) for timing in {jobs} worker processes side by side; "
            "the timing starts when all are done"
        )
        order = sorted(range(len(networks)), key=lambda i: -_cost(networks[i]))
        shares = [[(networks[i], str(self.folder / f"{i:03d}")) for i in order[j::jobs]] for j in range(jobs)]
        progress = _Progress(len(networks), self.echo)
        with ThreadPoolExecutor(jobs) as pool:
            for share, outcome in zip(shares, pool.map(lambda share: self._worker(share, progress), shares)):
                if isinstance(outcome, str):
                    labels = ", ".join(n.label for n, _ in share)
                    self.echo(f"  a conversion worker failed ({outcome}); exported when timed instead: {labels}")
                    continue
                self._made.update(zip((n for n, _ in share), outcome))

    def _worker(self, share: list[tuple[Network, str]], progress: _Progress) -> list[Prepared] | str:
        """One worker process's exports, or why it gave none."""
        from edgepipe import child

        task = {"share": share, "formats": self.formats, "conditions": self.conditions, "log": str(self.folder)}
        try:
            return child.run(_WORKER, task, pickled=True, echo=progress, folder=self.folder)
        except child.ChildFailed as exc:
            return exc.line or exc.kind

    def take(self, network: Network) -> Prepared | None:
        """The network's export made ahead (its worker's lines shown now), or None: export it when timing it."""
        prepared = self._made.pop(network, None)
        for line in prepared.lines if prepared is not None else ():
            self.echo(line)
        return prepared


#: the function a worker process runs, and the mark its progress lines carry (its other output is not shown)
_WORKER = "edgepipe.choose.exports:_prepare_share"
_MARK = "edgepipe-exports: "


class _Progress:
    """Shows the workers' progress lines (only those: a converter's own output is not for the user), numbered
    across workers."""

    def __init__(self, total: int, echo: Echo):
        import threading

        self.total, self.echo, self.done, self.lock = total, echo, 0, threading.Lock()

    def __call__(self, line: str) -> None:
        if line.startswith(_MARK):
            with self.lock:
                self.done += 1
                self.echo(f"  converted {self.done}/{self.total}: {line[len(_MARK) :]}")


def _cost(network: Network) -> float:
    """A rough conversion cost to deal the largest networks first: pixels times width."""
    return network.input_size**2 * (network.alpha or 1.0)


def _summary(prepared: Prepared) -> str:
    if prepared.reason:
        return prepared.reason
    return ", ".join(f"{r['format']} {r['status']}" for r in prepared.exported)


def _prepare_share(task: dict) -> list[Prepared]:
    """What a worker process runs: its share of the networks exported one after another, a progress line after
    each; everything else it writes (TensorFlow's and the converters' own output) goes to a log file that is
    removed with the folder."""
    import gc
    import sys

    log = os.open(os.path.join(task["log"], f"worker-{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT, 0o644)
    stdout = os.fdopen(os.dup(1), "w")
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = sys.stderr = os.fdopen(os.dup(log), "w")
    from edgepipe.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras  # noqa: F401

    gc.collect()
    gc.freeze()  # the imports' objects: each clear_session between networks collects only what came after
    out = []
    for network, folder in task["share"]:
        lines: list[str] = []
        Path(folder).mkdir(parents=True, exist_ok=True)
        prepared = prepare(network, task["formats"], task["conditions"], Path(folder), lines.append)
        prepared.lines = lines
        out.append(prepared)
        print(f"{_MARK}{network.label} ({_summary(prepared)})", file=stdout, flush=True)
    return out
