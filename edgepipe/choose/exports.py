"""Networks exported for timing in worker processes side by side, all before any timing starts.

Converting a network to its formats (the TFLite converter, tf2onnx, OpenVINO's conversion, NNCF) keeps about
one core busy; timing needs the machine to itself. ``Exports.run`` converts every network that has to be
measured in up to ``jobs`` worker processes at once (edgepipe.choose.workers), waits for all of them; the timing
that follows (``measure.measure`` with ``exports``) runs alone, one network at a time, on the files they made.
With one job (one usable core, or one network) nothing is converted ahead: ``measure`` exports each network just
before timing it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from edgepipe.choose.measure import Builder, Conditions, Echo, Network, Prepared, buildable_formats, prepare
from edgepipe.choose.workers import WorkerFailed, Workers, default_jobs, in_workers


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
        pool: Callable[[], Workers | None] | None = None,
    ):
        self.formats = buildable_formats(formats)  # what measure times (the others are rows with their reason)
        self.conditions, self.echo = conditions, echo
        self.parent, self.jobs = parent, jobs or default_jobs()
        #: the caller's worker processes (started when asked), in place of a pool of ``jobs`` made for ``run``
        self.pool = pool
        self.folder: Path | None = None
        self._made: dict[Network, Prepared] = {}
        #: {network: the worker process that built and exported it}
        self.processes: dict[Network, int] = {}

    def __enter__(self) -> Exports:
        return self

    def __exit__(self, *exc) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def run(self, networks: list[Network], builders: dict[Network, Builder] | None = None) -> None:
        """Export ``networks`` in worker processes side by side, the largest first, returning when all are done;
        the networks of a worker that failed are exported when they are timed, with a line saying why.
        ``builders``: how a network is built, where not with random weights (measure.prepare)."""
        if len(networks) < 2:
            return
        workers = self.pool() if self.pool is not None else None
        jobs = workers.live if workers is not None else min(self.jobs, len(networks))
        if jobs < 2:
            return
        if self.parent is not None:
            self.parent.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="edgepipe-exports-", dir=self.parent))
        self.echo(
            f"converting {len(networks)} network(s) for timing in {jobs} worker processes side by side; "
            "the timing starts when all are done"
        )
        builders = builders or {}
        items = [
            (n, self.formats, self.conditions, str(self.folder / f"{i:03d}"), builders.get(n))
            for i, n in enumerate(networks)
        ]
        function, cost = f"{__name__}:_prepare", (lambda item: item[0].input_size ** 2 * (item[0].alpha or 1.0))
        if workers is not None:
            made = workers.map(function, items, self.echo, cost)
        else:
            made = in_workers(function, items, jobs=jobs, folder=self.folder, echo=self.echo, cost=cost)
        for network, prepared in zip(networks, made):
            if isinstance(prepared, WorkerFailed):
                self.echo(f"  {network.label}: its conversion worker failed ({prepared.why}); exported when timed")
            else:
                self._made[network] = prepared
                if prepared.process is not None:
                    self.processes[network] = prepared.process

    def take(self, network: Network) -> Prepared | None:
        """The network's export made ahead (its worker's lines shown now), or None: export it when timing it."""
        prepared = self._made.pop(network, None)
        for line in prepared.lines if prepared is not None else ():
            self.echo(line)
        return prepared


def _summary(prepared: Prepared) -> str:
    if prepared.reason:
        return prepared.reason
    return ", ".join(f"{r['format']} {r['status']}" for r in prepared.exported)


def without_pytorch() -> None:
    """Keep PyTorch out of this worker for the rest of its life: NNCF imports it whenever it is installed
    (1.5-2.4 s of a worker's start here, and a few hundred MB), though quantizing an OpenVINO model never uses
    it, and nothing else a Keras network's conversion or head training runs does (the only networks these
    workers see). A later ``import torch`` in this process raises ImportError."""
    import sys

    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]


def _prepare(item: tuple) -> tuple[Prepared, str]:
    """What a worker runs for one network: its export, its progress lines kept for the parent to show."""
    without_pytorch()
    network, formats, conditions, folder, builder = item
    lines: list[str] = []
    Path(folder).mkdir(parents=True, exist_ok=True)
    prepared = prepare(network, formats, conditions, Path(folder), lines.append, builder)
    prepared.lines = lines
    return prepared, f"converted {network.label} ({_summary(prepared)})"
