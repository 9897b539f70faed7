"""The search itself: latency first, accuracy for the survivors cheapest first, INT8 only where it can still win,
and the winner written as a normal run directory.

1. Every candidate's artifacts are timed on the target (``edgepipe.choose.measure``, from its cache where it
   holds) before anything is trained; an artifact over the latency, size or memory budget is out, with why.
2. Each candidate with an artifact left trains a head on its frozen backbone's cached features (the train
   stage's feature-extraction strategy: the backbone runs once per image) and is scored on the validation
   split; FP32 artifacts compute what that model computes and take its top-1.
3. Other precisions are exported (the export stage's recipes and INT8 accuracy budget) and run on the
   validation split, most promising first, and only while they can still win: an artifact whose FP32 model
   is no more accurate than the best artifact found so far (and is no faster) is not exported.
4. The winner, the most accurate artifact within every budget, is run through edgepipe's pipeline into
   ``<search>/winner``, whose report gives its top-1 on the test split, which took part in no choice. Its
   run takes what the search made for it: the cached backbone features, and the artifact when the export
   step made it (the same weights and settings: see pipeline.export's artifact cache).

Steps 1 to 3 convert, train and export in the search's worker processes when there are two or more usable
cores (edgepipe.choose.workers); they end before the winner's run.

Each step's record (search.json) carries the digest of its inputs and is written when the step ends, so a
killed search resumes where it stopped; ``force`` redoes every step.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.choose.answer import (
    BELOW_TOP1,
    CANNOT_WIN,
    FAILED,
    OVER_BUDGET,
    SKIPPED,
    WINNER,
    WITHIN,
    Row,
    SearchResult,
    choose_winner,
    render_table,
)
from edgepipe.choose.budgets import Budgets
from edgepipe.choose.candidates import Candidate, WeightsSpec, as_dict, enumerate_candidates
from edgepipe.choose.measure import (
    Conditions,
    Confirm,
    Echo,
    Measurement,
    MeasurementCache,
    Target,
    cache_key,
    latency_at,
    measure,
    needs_measuring,
    unconfirmed,
)
from edgepipe.choose.records import Records
from edgepipe.config import RunConfig
from edgepipe.errors import EdgepipeError
from edgepipe.fileio import sha256_value
from edgepipe.pipeline.rundir import RunDir
from edgepipe.pipeline.sequence import only_new_objects_collected

WINNER_FOLDER = "winner"


@dataclass
class SearchRequest:
    """Everything a search needs. ``config`` gives the data, training, export and bench settings (and the seed)
    every candidate shares; the search chooses the architecture, width, input size, weights and format."""

    config: RunConfig
    archs: list[str]
    alphas: list[float] | None
    sizes: list[int] | None
    formats: list[str]
    weights: WeightsSpec
    allow_random: bool
    budgets: Budgets
    conditions: Conditions
    target: Target
    cache: MeasurementCache
    output: Path
    force: bool = False
    #: the screening timing's second look at artifacts near the latency budget (None: no budget, or the
    #: screening floors are the full ones)
    confirm: Confirm | None = None


@dataclass
class _State:
    """What the steps share: the request, the search directory and its records, the data."""

    request: SearchRequest
    folder: RunDir
    records: Records
    index: dict[str, Any]
    echo: Echo
    #: the worker processes that convert and train side by side (edgepipe.choose.workers)
    pool: _Pool
    datasets: dict[int, Any] = dataclasses.field(default_factory=dict)
    #: {candidate id: the worker process that built its network in the latency step and keeps it}
    holders: dict[str, int] = dataclasses.field(default_factory=dict)
    #: {candidate id: its measure.Network} (a weights file's digest is taken once)
    networks: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def config(self) -> RunConfig:
        return self.request.config

    @functools.cached_property
    def config_dict(self) -> dict[str, Any]:
        """The run configuration as a plain dict, for a worker process: a RunConfig's classes are made at run time
        and do not pickle."""
        return self.config.to_dict()

    def dataset(self, size: int):
        """The data decoded at ``size`` pixels (once per size)."""
        from edgepipe.data import materialize

        if size not in self.datasets:
            self.datasets[size] = materialize(self.index, size, self.config.model.channels)
        return self.datasets[size]


#: what the search's workers import while they wait for their first item
WORKER_PRELOAD = ("tensorflow", "keras")


class _Pool:
    """The search's worker processes, started on first use (``get``), one per usable core
    (edgepipe.choose.workers.default_jobs), each with an equal share of the cores for its TensorFlow; none with
    one usable core (everything then runs in this process)."""

    def __init__(self, folder: Path):
        from edgepipe.choose.workers import default_jobs

        self.folder, self.jobs = folder, default_jobs()
        self._workers = None

    def get(self):
        """The Workers, started now if they are not yet; None with one usable core."""
        if self._workers is None and self.jobs >= 2:
            from edgepipe.choose.workers import Workers
            from edgepipe.device import core_limits

            threads = max(1, core_limits()["usable_cores"] // self.jobs)
            self._workers = Workers(self.jobs, self.folder, threads=threads, preload=WORKER_PRELOAD)
        return self._workers

    def wait_ready(self) -> None:
        """If the workers were started, return once none is still importing (it would share the cores with the
        timing that follows)."""
        if self._workers is not None:
            self._workers.wait_ready()

    def release_kept(self) -> None:
        """Have every worker let go of the networks it kept (edgepipe.choose.kept), if the workers were started."""
        if self._workers is not None:
            self._workers.each("edgepipe.choose.kept:release")

    def close(self) -> None:
        if self._workers is not None:
            self._workers.close()
            self._workers = None


def run_search(request: SearchRequest, echo: Echo) -> SearchResult:
    """Run (or resume) the search in ``request.output`` under its lock; see the module docstring. EdgepipeError
    when no artifact meets the budgets (naming the closest one) or every candidate was skipped."""
    folder = RunDir(request.output, reset_damaged_records=request.force)
    created = folder.prepare()
    try:
        with folder.lock(echo), only_new_objects_collected():
            for line in folder.sweep():
                echo(f"removed {line}, left in {folder.path} by an interrupted command")
            try:
                return _search(request, folder, echo)
            finally:
                shutil.rmtree(folder.scratch, ignore_errors=True)
    except BaseException:
        if created and not (folder.path / Records.NAME).exists():
            shutil.rmtree(folder.path, ignore_errors=True)  # a folder this command made and filled with nothing
        raise


def _search(request: SearchRequest, folder: RunDir, echo: Echo) -> SearchResult:
    pool = _Pool(folder.scratch / "workers")
    if request.force or not (folder.path / Records.NAME).exists():
        pool.get()  # a new search: its workers import TensorFlow while the data and candidates are read
    try:
        return _steps(request, folder, pool, echo)
    except BaseException:
        pool.close()
        raise


def _steps(request: SearchRequest, folder: RunDir, pool: _Pool, echo: Echo) -> SearchResult:
    from edgepipe.data import format_summary, make_index

    config = request.config
    index = make_index(config.data, config.seed)
    echo(format_summary(index["summary"]))
    records = Records(folder.path / Records.NAME, request.force)
    records.describe(
        {
            "budgets": request.budgets.to_dict(),
            "formats": request.formats,
            "conditions": dataclasses.asdict(request.conditions),
            "target": request.target.name,
            "data": config.data.path,
            "seed": config.seed,
        }
    )
    state = _State(request, folder, records, index, echo, pool)
    echo("candidates:")
    candidates = enumerate_candidates(
        request.archs, request.alphas, request.sizes, request.weights, config.model.channels, request.allow_random, echo
    )
    rows = _latency_step(state, candidates)
    if not any(r.status == WITHIN for r in rows):
        raise _nothing_left(rows, request.budgets)
    models = _accuracy_step(state, candidates, rows)
    _export_step(state, candidates, rows, models)
    pool.close()  # what is left runs in this process: the workers' memory is returned
    winner = choose_winner(rows)
    if winner is None:
        raise _nothing_left(rows, request.budgets)
    winner.status = WINNER
    for number, row in enumerate(rows, 1):
        row.number = number
    by_id = {c.id: c for c in candidates}
    measured = _winner_run(state, by_id[winner.candidate], winner, models[winner.candidate])
    return _answer(state, rows, winner, measured)


# ------------------------------------------------------------------------------------------------ latency


def _latency_step(state: _State, candidates: list[Candidate]) -> list[Row]:
    """Every candidate's artifacts timed on the target (records and the measurement cache first); rows in
    candidate and format order, each within the cost budgets or out with the reason. The candidates to measure
    are all exported first, in worker processes side by side (edgepipe.choose.exports), then timed one by one."""
    from edgepipe.choose.exports import Exports

    req = state.request
    active = [c for c in candidates if not c.reason]
    networks = {c.id: _network(state, c) for c in active}
    todo = [
        c
        for c in active
        if _recorded(state, c) is None
        and needs_measuring(
            networks[c.id], req.formats, req.conditions, req.target, req.cache, force=req.force, confirm=req.confirm
        )
    ]
    # each network is built as its candidate's accuracy step builds it, and kept for that step
    builders = {c.id: (f"{__name__}:built_for_timing", _build_spec(state, c)) for c in active}
    rows: list[Row] = []
    with Exports(req.formats, req.conditions, state.echo, parent=state.folder.scratch, pool=state.pool.get) as exports:
        exports.run([networks[c.id] for c in todo], {networks[c.id]: builders[c.id] for c in todo})
        state.holders = {c.id: exports.processes[networks[c.id]] for c in todo if networks[c.id] in exports.processes}
        state.pool.wait_ready()  # a new search's workers, when nothing was converted in them
        for c in candidates:
            if c.reason:
                rows.append(Row(c.id, c.arch, c.alpha, c.input_size, c.weights, None, SKIPPED, c.reason))
                continue
            i = active.index(c) + 1
            state.echo(f"[latency {i}/{len(active)}] {c.label} ({', '.join(req.formats)})")
            for m in _measurements(state, c, exports, builders[c.id]):
                rows.append(_cost_row(c, m, req.budgets))
    return rows


def _build_spec(state: _State, c: Candidate) -> dict[str, Any]:
    """What built_for_timing needs to build ``c`` (picklable: a worker process builds it)."""
    return {"config": state.config_dict, "candidate": c, "classes": len(state.index["class_names"])}


def built_for_timing(spec: dict[str, Any]) -> tuple[Any, dict[str, int]]:
    """The candidate's network for the latency step (a measure.Builder): built as its accuracy step builds it (the
    same seed, its initial weights, the head untrained), and kept in this process (edgepipe.choose.kept) for that
    step, which then trains this very model instead of building it again. Not random weights: an OpenVINO INT8
    file of random weights times faster than the trained network's will (docs/search.md)."""
    from edgepipe import config as cfg
    from edgepipe.choose import kept
    from edgepipe.choose.measure import network_counts
    from edgepipe.pipeline.sequence import fresh_random_state
    from edgepipe.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    config, c, classes = cfg.from_dict(spec["config"], {}), spec["candidate"], spec["classes"]
    fresh_random_state(config.seed)  # as _train_and_score does before it builds
    model = build_candidate(config, classes, c)
    kept.keep(_build_key(config, classes, c), model)
    return model, network_counts(model)


def _weights_file_digest(weights: str) -> str | None:
    """The sha256 of the weights file ``weights`` names (None when it names no file), hashed once per process
    while the file keeps its size and modification time: every step asks for it, for every candidate."""
    path = Path(weights)
    if not path.is_file():
        return None
    stat = path.stat()
    return _digest_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    from edgepipe.fileio import sha256_file

    return sha256_file(path)


def _build_inputs(config: RunConfig, c: Candidate) -> dict[str, Any]:
    """What build_candidate's network depends on besides the class count (a weights file by its contents)."""
    return {
        "candidate": as_dict(c),
        "weights_file": _weights_file_digest(c.weights),
        "seed": config.seed,
        "channels": config.model.channels,
        "dropout": config.model.dropout,
    }


def _build_key(config: RunConfig, classes: int, c: Candidate) -> str:
    """The key a network built for ``c`` is kept under (edgepipe.choose.kept)."""
    return sha256_value({**_build_inputs(config, c), "classes": classes})


def _network(state: _State, c: Candidate):
    """The candidate's network as the measurement cache knows it: with the identity of its weights (timed files
    hold them), so no search takes the figures of another's weights."""
    if c.id not in state.networks:
        config = state.config
        if c.weights == "imagenet":
            weights = "imagenet"
        elif c.weights == "none":
            weights = f"none@seed{config.seed}"
        else:
            weights = f"file sha256 {_weights_file_digest(c.weights)}"
        network = c.network(config.model.channels, len(state.index["class_names"]))
        state.networks[c.id] = dataclasses.replace(network, weights=weights)
    return state.networks[c.id]


def _record_key(state: _State, c: Candidate) -> tuple[str, str]:
    """(the search record's key of the candidate's latency, the digest of its inputs)."""
    req = state.request
    network = _network(state, c)
    return f"latency/{c.id}", sha256_value([cache_key(req.target, network, f, req.conditions) for f in req.formats])


def _recorded(state: _State, c: Candidate) -> list[Measurement] | None:
    """The candidate's measurements from this search's records, unless a budget now puts one of its screening
    figures near its line without a second timing."""
    found = state.records.get(*_record_key(state, c))
    if found is None:
        return None
    recorded = [Measurement.from_dict(m, cached=True) for m in found["measurements"]]
    return None if unconfirmed(recorded, state.request.confirm) else recorded


def _measurements(state: _State, c: Candidate, exports, builder: tuple[str, Any] | None) -> list[Measurement]:
    req = state.request
    recorded = _recorded(state, c)
    if recorded is not None:
        state.echo("  from this search's records")
        return recorded
    measured = measure(
        _network(state, c),
        req.formats,
        req.conditions,
        req.target,
        req.cache,
        force=req.force,
        confirm=req.confirm,
        echo=state.echo,
        exports=exports,
        builder=builder,
    )
    key, digest = _record_key(state, c)
    state.records.put(key, digest, {"candidate": as_dict(c), "measurements": [m.to_dict() for m in measured]})
    return measured


def _cost_row(c: Candidate, m: Measurement, budgets: Budgets) -> Row:
    from edgepipe.results import Status

    latency = latency_at(m, budgets.percentile)
    row = Row(
        c.id,
        c.arch,
        c.alpha,
        c.input_size,
        c.weights,
        m.format,
        WITHIN,
        params=m.params,
        macs=m.macs,
        size_mb=m.size_mb,
        p50_ms=m.p50_ms,
        p90_ms=m.p90_ms,
        latency_ms=latency,
        peak_memory_mb=m.peak_memory_mb,
        cached=m.cached,
    )
    if c.weights_note:
        row.extra["weights_note"] = c.weights_note
    if m.retimed:
        row.extra["retimed"] = "near the latency budget: timed again with fuller floors"
    if m.status != Status.OK or m.p50_ms is None:
        row.status, row.reason = (SKIPPED if m.status == Status.SKIPPED else FAILED), m.reason or str(m.status)
        return row
    over = budgets.cost_violations(latency, m.size_mb, m.peak_memory_mb)
    if over:
        row.status, row.reason = OVER_BUDGET, "; ".join(over)
    return row


def _nothing_left(rows: list[Row], budgets: Budgets) -> EdgepipeError:
    """The error when no artifact is left, naming the one closest to the budgets."""
    over = [r for r in rows if r.status == OVER_BUDGET]
    below = [r for r in rows if r.status == BELOW_TOP1]
    if below:
        best = max(below, key=lambda r: r.top1)
        return EdgepipeError(
            f"no artifact meets every budget ({budgets.describe()}); the closest is {best.label} "
            f"at {best.top1:.1f}% validation top-1",
            "Lower --min-top1, or relax the other budgets to let larger candidates in.",
        )
    if over:
        closest = min(over, key=lambda r: _excess(r, budgets))
        return EdgepipeError(
            f"no candidate meets the budgets ({budgets.describe()}); the closest is {closest.label}: {closest.reason}",
            "Relax the budget it exceeds, or add smaller candidates (--alphas, --input-sizes, --archs).",
        )
    reasons = [r.reason for r in rows if r.reason]
    return EdgepipeError(
        "no candidate could be measured" + (f": {reasons[0]}" if reasons else ""),
        "See each candidate's reason above (--allow-random-weights for missing weights).",
    )


def _excess(row: Row, budgets: Budgets) -> float:
    """How far a row is over its tightest budget, as the largest ratio of figure to limit."""
    pairs = [
        (row.latency_ms, budgets.max_latency_ms),
        (row.size_mb, budgets.max_size_mb),
        (row.peak_memory_mb, budgets.max_memory_mb),
    ]
    return max((value / limit for value, limit in pairs if limit and value is not None), default=float("inf"))


# ----------------------------------------------------------------------------------------------- accuracy


def _fp32(format_name: str) -> bool:
    from edgepipe.backends import formats

    return formats().get(format_name).precision == "fp32"


def _accuracy_step(state: _State, candidates: list[Candidate], rows: list[Row]) -> dict[str, dict]:
    """Train and score each candidate with an artifact left, fewest MACs first; FP32 artifacts take its top-1.
    Returns {candidate id: its accuracy record} (a failed one holds ``reason``)."""
    from edgepipe.choose import kept

    left = {r.candidate for r in rows if r.status == WITHIN}
    macs = {r.candidate: r.macs or 0 for r in rows}
    order = sorted((c for c in candidates if c.id in left), key=lambda c: macs[c.id])
    found = {c.id: _accuracy_found(state, c) for c in order}
    ahead = _trained_ahead(state, [c for c in order if found[c.id] is None], macs)
    models: dict[str, dict] = {}
    for i, c in enumerate(order, 1):
        state.echo(f"[accuracy {i}/{len(order)}] {c.label}: a head on its frozen backbone's features")
        models[c.id] = _accuracy(state, c, found[c.id], ahead.get(c.id))
        for row in (r for r in rows if r.candidate == c.id and r.status == WITHIN):
            if models[c.id].get("features_note"):
                row.extra["note"] = models[c.id]["features_note"]
            if "reason" in models[c.id]:
                row.status, row.reason = FAILED, models[c.id]["reason"]
            elif _fp32(row.format):
                _score(row, models[c.id]["top1"], models[c.id]["interval"], "Keras FP32", state.request.budgets)
    # the networks built for timing that no accuracy step took (a candidate out of the budgets, trained in another
    # process, or found in the records), here and in the workers, which go on to export
    kept.clear()
    state.pool.release_kept()
    return models


def _score(row: Row, top1: float, interval: list[float], source: str, budgets: Budgets) -> None:
    row.top1, row.top1_interval, row.top1_source = top1, interval, source
    below = budgets.top1_violation(top1)
    if below:
        row.status, row.reason = BELOW_TOP1, below


def _accuracy_inputs(state: _State, c: Candidate) -> dict[str, Any]:
    return {
        **_build_inputs(state.config, c),
        "dataset": sha256_value(state.index),
        "train": dataclasses.asdict(_train_config(state.config)),
    }


def _train_config(config: RunConfig):
    """The training every candidate gets: the configured head training on the frozen backbone, features cached
    on disk in the search directory so a resumed search does not run a backbone twice."""
    return dataclasses.replace(config.train, strategy="feature-extraction", cache_features=True, feature_cache="disk")


def _accuracy_key(state: _State, c: Candidate) -> tuple[str, str, Path]:
    """(the record's key, the digest of its inputs, the candidate's head file)."""
    digest = sha256_value(_accuracy_inputs(state, c))
    return f"accuracy/{c.id}", digest, state.folder.path / "candidates" / c.id / HEAD_FILE


def _accuracy_found(state: _State, c: Candidate) -> dict[str, Any] | None:
    """The candidate's accuracy record from this search's records, when its inputs and head file are unchanged."""
    from edgepipe.fileio import sha256_file

    key, digest, head_path = _accuracy_key(state, c)
    found = state.records.get(key, digest)
    if found is not None and (
        "reason" in found or (head_path.is_file() and sha256_file(head_path) == found.get("head_sha256"))
    ):
        return found
    return None


def _accuracy(
    state: _State, c: Candidate, found: dict[str, Any] | None, ahead: tuple[dict, list[str]] | None
) -> dict[str, Any]:
    """The candidate's accuracy record: from the records (``found``, see _accuracy_found), from a worker that
    trained it ahead (``ahead``: its payload and progress lines), or trained here now."""
    key, digest, head_path = _accuracy_key(state, c)
    if found is not None:
        state.echo(
            f"  from this search's records: validation top-1 {found.get('top1', float('nan')):.1f}%"
            if "top1" in found
            else f"  from this search's records: {found['reason']}"
        )
        return {**found, "digest": digest}
    if ahead is not None:
        payload, lines = ahead
        for line in lines:
            state.echo(line)
    else:
        payload = train_candidate(state.config, state.dataset(c.input_size), c, head_path, _cache(state), state.echo)
    state.records.put(key, digest, {"candidate": as_dict(c), **payload})
    return {**payload, "digest": digest}


def _cache(state: _State) -> Path:
    """Where the candidates' backbone features are cached (on disk, so a resumed search runs no backbone twice)."""
    return state.folder.path / "cache"


def _trained_ahead(state: _State, todo: list[Candidate], macs: dict[str, int]) -> dict[str, tuple[dict, list[str]]]:
    """{candidate id: (accuracy payload, progress lines)} for ``todo`` trained in the search's worker processes
    side by side, before the step reports them one by one; empty with no workers (one usable core) or one
    candidate (each is then trained in this process when its turn comes). A worker gives its TensorFlow an
    equal share of the cores; a head trained there may differ from one trained here in float rounding only."""
    from edgepipe.choose.workers import WorkerFailed

    workers = state.pool.get() if len(todo) > 1 else None
    if workers is None or not workers.live:  # none left: each is trained here when its turn comes
        return {}
    state.echo(
        f"training {len(todo)} head(s) in {workers.live} worker process(es) side by side (the backbones run there)"
    )
    items = [
        {
            "config": state.config_dict,
            "index": state.index,
            "candidate": c,
            "head_path": _accuracy_key(state, c)[2],
            "cache": _cache(state),
        }
        for c in todo
    ]
    made = workers.map(
        f"{__name__}:_train_in_worker",
        items,
        state.echo,
        cost=lambda item: macs.get(item["candidate"].id, 0),
        prefer=lambda item: state.holders.get(item["candidate"].id),  # the worker that keeps its network
    )
    out = {}
    for c, result in zip(todo, made):
        if isinstance(result, WorkerFailed):
            state.echo(f"  {c.label}: its training worker failed ({result.why}); trained here when its turn comes")
        else:
            out[c.id] = result
    return out


#: a worker's dataset decoded at each size its candidates take (a few tens of MB each)
_DECODED: dict[tuple, Any] = {}


def _decoded(index: dict, size: int, channels: int):
    """The dataset at ``size``, decoded once per worker (a worker trains several candidates at one size)."""
    from edgepipe.data import materialize

    key = (sha256_value(index), size, channels)
    if key not in _DECODED:
        _DECODED[key] = materialize(index, size, channels)
    return _DECODED[key]


def _train_in_worker(item: dict) -> tuple[tuple[dict, list[str]], str]:
    """What a worker runs for one candidate: ((its accuracy payload, its progress lines), a summary line)."""
    from edgepipe import config as cfg

    config, c = cfg.from_dict(item["config"], {}), item["candidate"]
    lines: list[str] = []
    dataset = _decoded(item["index"], c.input_size, config.model.channels)
    payload = train_candidate(config, dataset, c, item["head_path"], item["cache"], lines.append)
    summary = f"{payload['top1']:.1f}% validation top-1" if "top1" in payload else payload["reason"]
    return (payload, lines), f"trained {c.label}: {summary}"


def train_candidate(config: RunConfig, dataset, c: Candidate, head_path: Path, cache: Path, echo: Echo) -> dict:
    """The candidate's accuracy payload (top-1, interval, head file...), or {"reason"} when it cannot be trained."""
    try:
        return _train_and_score(config, dataset, c, head_path, cache, echo)
    except EdgepipeError as exc:
        reason = f"could not be trained: {exc}"
        echo(f"  {reason}")
        return {"reason": reason}


def build_candidate(config: RunConfig, num_classes: int, c: Candidate):
    """The candidate's classifier, its head as first built (no download): the same network every time (the
    classifier builder is seeded), so a trained head's weights set on it give the trained model."""
    from edgepipe.architectures import build_classifier
    from edgepipe.architectures.offline import no_downloads

    with no_downloads():
        return build_classifier(
            c.arch,
            num_classes,
            c.input_size,
            config.model.channels,
            c.alpha,
            c.weights,
            config.model.dropout,
            config.seed,
        )


def _train_and_score(
    config: RunConfig, dataset, c: Candidate, head_path: Path, cache: Path, echo: Echo
) -> dict[str, Any]:
    """Build the candidate (no download), train its head on cached features, score it on the validation split;
    the trained head's weights go to ``head_path`` (the backbone is the built one: see trained_candidate)."""
    from edgepipe.choose import kept
    from edgepipe.fileio import sha256_file
    from edgepipe.pipeline.export import weights_digest
    from edgepipe.pipeline.sequence import fresh_random_state
    from edgepipe.training.controls import predict_arrays
    from edgepipe.training.strategies import STRATEGIES, disk_features, head_model

    fresh_random_state(config.seed)  # as every pipeline stage starts, so the winner's run trains the same head
    # the network the latency step built and kept in this process, if it did (the same build: built_for_timing)
    model = kept.take(_build_key(config, dataset.num_classes, c))
    if model is None:
        model = build_candidate(config, dataset.num_classes, c)
    train = _train_config(config)
    STRATEGIES.get(train.strategy).fn(model, dataset, train, config.seed, lambda line: echo("  " + line), cache)
    val = dataset.splits["val"]
    # the head on the validation features the training cached computes what the whole model computes on those
    # images, without running (and tracing) the backbone again
    train_features, val_features, _ = disk_features(model, dataset, cache)
    probabilities = predict_arrays(head_model(model), np.asarray(val_features))
    top1, interval = top1_with_interval(probabilities, val.labels)
    note = degenerate_features(np.asarray(val_features))
    if note:
        echo(f"  warning: {note}")
    _write_head(model, head_path)
    echo(
        f"  validation top-1 (Keras FP32): {top1:.1f}% (95% interval {interval[0]:.1f}-{interval[1]:.1f}) "
        f"on {len(val)} images"
    )
    return {
        "top1": top1,
        "interval": interval,
        "val_images": len(val),
        "params": int(model.count_params()),
        "head": str(head_path.relative_to(head_path.parents[2])),  # <search>/candidates/<id>/head.npz
        "head_sha256": sha256_file(head_path),
        # the whole trained model's: the export step checks that the network it rebuilds under the head is this one
        "weights_sha256": weights_digest(model),
        # the cached feature files, named by a digest of the backbone and the images (the winner's run reuses them)
        "features": [Path(f.filename).name for f in (train_features, val_features)],
        **({"features_note": note} if note else {}),
    }


#: a candidate's trained head: the classifier layer's weights (the rest of the model is as built)
HEAD_FILE = "head.npz"


def _write_head(model, path: Path) -> None:
    from edgepipe.architectures.classifier import CLASSIFIER
    from edgepipe.fileio import atomic_path, make_folder

    make_folder(path.parent)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as out:
        np.savez(out, *model.get_layer(CLASSIFIER).get_weights())


def trained_candidate(config: RunConfig, num_classes: int, c: Candidate, head_path: Path):
    """The candidate's trained classifier: built as its head was trained on (build_candidate), with the trained
    head's weights from ``head_path`` (what _train_and_score wrote)."""
    from edgepipe.architectures.classifier import CLASSIFIER

    model = build_candidate(config, num_classes, c)
    with np.load(head_path) as saved:
        model.get_layer(CLASSIFIER).set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    return model


#: pooled backbone features no larger than this carry nothing a head can learn from (float32 resolution)
DEGENERATE_FEATURES = 1e-6


def degenerate_features(features: np.ndarray) -> str | None:
    """Why a head on these features can only predict from its bias (every feature at most DEGENERATE_FEATURES in
    magnitude: an untrained network's batch normalisation, in inference mode, normalises nothing and its
    activations shrink layer after layer); None when they carry signal."""
    magnitude = float(np.max(np.abs(features))) if features.size else 0.0
    if magnitude > DEGENERATE_FEATURES:
        return None
    return (
        f"head at chance: its backbone's features are at most {magnitude:.0e} (random weights: an untrained "
        "network's batch normalisation normalises nothing), so the head predicts from its bias alone; give "
        "ImageNet weights or a weights file"
    )


def top1_with_interval(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, list[float]]:
    """Top-1 in percent and its 95% bootstrap interval over images (edgepipe.significance.top1_interval)."""
    from edgepipe.significance import top1_interval

    return top1_interval(np.argmax(probabilities, axis=1) == np.asarray(labels))


# ------------------------------------------------------------------------------------------------- export


def _export_step(state: _State, candidates: list[Candidate], rows: list[Row], models: dict[str, dict]) -> None:
    """Export and score the other precisions, the most promising first (their FP32 model's top-1, then speed),
    and only those that can still win; the others are marked ``cannot win`` with the artifact that beats them."""
    by_id = {c.id: c for c in candidates}
    pending = [r for r in rows if r.status == WITHIN and r.top1 is None]
    pending.sort(key=lambda r: (-models[r.candidate]["top1"], r.latency_ms))
    for i, row in enumerate(pending, 1):
        bound = models[row.candidate]["top1"]
        beaten = _cannot_win(row, bound, rows, state.request.budgets)
        if beaten:
            row.status, row.reason = CANNOT_WIN, f"not exported: {beaten}"
            state.echo(f"[export {i}/{len(pending)}] {row.label}: {row.reason}")
            continue
        state.echo(f"[export {i}/{len(pending)}] {row.label}: exported and run on the validation split")
        done = _exported(state, by_id[row.candidate], row, models[row.candidate])
        if done.get("top1") is None:
            row.status, row.reason = FAILED, done.get("reason") or "not exported"
        else:
            _score(row, done["top1"], done["interval"], "artifact", state.request.budgets)
            row.extra["artifact"] = done["file"]
            row.extra["artifact_key"] = done.get("artifact_key")


def _cannot_win(row: Row, bound: float, rows: list[Row], budgets: Budgets) -> str | None:
    """Why ``row`` cannot be the winner, given that it is at most as accurate as its FP32 model (``bound``):
    a budget its FP32 model already misses, or a scored artifact within the budgets at least as accurate and
    no slower. None while it can still win."""
    below = budgets.top1_violation(bound)
    if below:
        return f"its FP32 model's {below}"
    leader = choose_winner([r for r in rows if r.top1 is not None])
    if leader is not None and (leader.top1 > bound or (leader.top1 == bound and leader.latency_ms <= row.latency_ms)):
        return (
            f"{leader.label} has {leader.top1:.1f}% at {leader.latency_ms:.3f} ms, and this one can reach at most "
            f"its FP32 model's {bound:.1f}%"
        )
    return None


def _exported(state: _State, c: Candidate, row: Row, model: dict[str, Any]) -> dict[str, Any]:
    """The artifact's record: exported with the export stage's recipes and INT8 budget, run on the validation
    split (top-1 and interval); from the records when its inputs and file are unchanged."""
    from edgepipe.backends import artifact_digest

    config = state.config
    export = {k: v for k, v in dataclasses.asdict(config.export).items() if k != "formats"}
    digest = sha256_value(
        {
            "head": model["head_sha256"],
            "format": row.format,
            "export": export,
            "threads": state.request.conditions.threads,
            "seed": config.seed,
        }
    )
    key = f"export/{c.id}/{row.format}"
    found = state.records.get(key, digest)
    if found is not None and (
        found.get("top1") is None
        or _intact(state.folder.path / str(found.get("file")), found.get("sha256"), artifact_digest)
    ):
        state.echo("  from this search's records")
        return found
    payload = _export_and_score(state, c, row.format, state.folder.path / model["head"], model.get("weights_sha256"))
    state.records.put(key, digest, payload)
    return payload


def _intact(path: Path, digest: str | None, artifact_digest) -> bool:
    return path.exists() and artifact_digest(path) == digest


def _export_and_score(
    state: _State, c: Candidate, format_name: str, head_path: Path, weights: str | None
) -> dict[str, Any]:
    """The artifact exported and scored (export_and_score) in one of the search's worker processes, which have
    the converters and quantizers imported already (this process then never imports NNCF, nor the PyTorch NNCF
    brings along); here when there are none, or the worker failed."""
    from edgepipe.choose.workers import WorkerFailed

    item = {
        "config": state.config_dict,
        "index": state.index,
        "candidate": c,
        "format": format_name,
        "head_path": head_path,
        "cache": _cache(state),
        "scratch": state.folder.scratch,
        "threads": state.request.conditions.threads,
        "force": state.request.force,
        "weights": weights,
    }
    workers = state.pool.get()
    if workers is not None:
        (done,) = workers.map(f"{__name__}:_export_in_worker", [item], lambda line: None)
        if not isinstance(done, WorkerFailed):
            payload, lines = done
            for line in lines:
                state.echo(line)
            return payload
        state.echo(f"  its export worker failed ({done.why}); exported here")
    return _export_item(item, state.config, state.dataset(c.input_size), state.echo)


def _export_in_worker(item: dict) -> tuple[tuple[dict, list[str]], str]:
    """What a worker runs for one artifact of the export step: ((its payload, its progress lines), a summary)."""
    from edgepipe import config as cfg
    from edgepipe.choose.exports import without_pytorch

    without_pytorch()  # NNCF would import it, for nothing an OpenVINO model's quantization uses
    config, c = cfg.from_dict(item["config"], {}), item["candidate"]
    lines: list[str] = []
    payload = _export_item(item, config, _decoded(item["index"], c.input_size, config.model.channels), lines.append)
    return (payload, lines), f"exported {c.label} {item['format']}: {payload['status']}"


def _export_item(item: dict, config: RunConfig, dataset, echo: Echo) -> dict[str, Any]:
    """export_and_score for an item of the export step (see _export_and_score), in a worker or here."""
    return export_and_score(
        config,
        dataset,
        item["candidate"],
        item["format"],
        item["head_path"],
        item["cache"],
        item["scratch"],
        item["threads"],
        echo,
        item["force"],
        item["weights"],
    )


def export_and_score(
    config: RunConfig,
    dataset,
    c: Candidate,
    format_name: str,
    head_path: Path,
    cache: Path,
    scratch: Path,
    threads: int,
    echo: Echo,
    force: bool = False,
    weights: str | None = None,
) -> dict[str, Any]:
    """The candidate's trained model (rebuilt from its head) exported to ``format_name`` with the export stage's
    recipes and INT8 budget beside the head (filed in the search's artifact cache), the file run on the validation
    split: the export step's record of it (top-1 and interval when it was made)."""
    from edgepipe.architectures import get_architecture
    from edgepipe.calibration import draw
    from edgepipe.pipeline.export import ExportJob, backend_options, export_all, weights_digest
    from edgepipe.pipeline.sequence import fresh_random_state
    from edgepipe.results import Status
    from edgepipe.verification import ArtifactScorer

    fresh_random_state(config.seed)
    e, val, train = config.export, dataset.splits["val"], dataset.train
    out_dir = head_path.parent / "artifacts"
    job = ExportJob(
        formats=[format_name],
        out_dir=out_dir,
        stem=c.id,
        labels=list(dataset.class_names),
        preprocessing=get_architecture(c.arch).preprocessing.as_dict(),
        calibration_set=draw(train.images, train.labels, e.calibration_size, config.seed),
        calibration_pool=(train.images, train.labels),
        validation=(val.images, val.labels),
        calibration_method=e.calibration_method,
        accuracy_budget_pp=e.accuracy_budget_pp,
        threads=threads,
        options=backend_options(config),
        workdir_parent=scratch,
        qat=e.qat,
        artifact_cache=cache / "artifacts",  # the winner's run takes its artifact from there
        file_artifacts=True,
        take_cached=not force,  # --force converts again (and files the new artifact)
    )
    model = trained_candidate(config, dataset.num_classes, c, head_path)
    if weights is not None and weights_digest(model) != weights:
        raise EdgepipeError(
            f"{c.label}: the network built now is not the one its head was trained on (Keras, TensorFlow or a "
            "weights file changed since the accuracy step)",
            "Rerun the search with --force.",
        )
    record = export_all(model, job, lambda line: echo("  " + line))[0]
    payload = {
        "format": format_name,
        "artifact_key": (record.details or {}).get("artifact_cache_key"),  # where export_all filed it
        "status": record.status.value,
        "reason": record.reason,
        "file": str((out_dir / record.file).relative_to(head_path.parents[2])),  # from <search>
        "sha256": record.sha256,
        "int8_budget": record.int8_budget.to_dict() if record.int8_budget else None,
    }
    if record.status != Status.OK:
        return payload
    evaluation = ArtifactScorer(val.images, val.labels, threads)(out_dir / record.file, format_name)
    top1, interval = top1_with_interval(evaluation.probabilities, val.labels)
    echo(f"  validation top-1 ({format_name}): {top1:.1f}% (95% interval {interval[0]:.1f}-{interval[1]:.1f})")
    return {**payload, "top1": top1, "interval": interval}


# ------------------------------------------------------------------------------------------------- winner


def winner_config(
    config: RunConfig, c: Candidate, format_name: str, threads: int, path: Path, memory: bool = True
) -> RunConfig:
    """The configuration of the winner's run: the search's settings with its network, weights and format; peak
    memory measured when the search measured it (``memory``: a memory budget, or asked for)."""
    from edgepipe import config as cfg

    data = config.to_dict()
    # set in the mapping, not as overrides: an override of None (no width multiplier) would be ignored
    data["model"].update(arch=c.arch, alpha=c.alpha, input_size=c.input_size, weights=c.weights, path=None)
    return cfg.from_dict(
        data,
        {
            "output": str(path),
            "train.strategy": "feature-extraction",
            "train.cache_features": True,
            "train.feature_cache": "disk",  # where the search's features for it are put (see _seed_cache)
            "export.formats": [format_name],
            "bench.threads": threads,
            "bench.memory": bool(memory and config.bench.memory),
        },
    )


def _winner_run(state: _State, c: Candidate, winner: Row, model: dict[str, Any]) -> dict[str, Any]:
    """Run edgepipe's pipeline for the winner into <search>/winner, its feature cache seeded with the backbone
    features the accuracy step cached for it (``model``: its accuracy record); what its results say (top-1 on the
    reporting split, latency re-measured there)."""
    from edgepipe.pipeline.sequence import STAGES, run_stages
    from edgepipe.results import read_results

    req = state.request
    path = state.folder.path / WINNER_FOLDER
    state.echo(f"[winner] {winner.label}: edgepipe's pipeline into {path}")
    config = winner_config(req.config, c, winner.format, req.conditions.threads, path, req.conditions.memory)
    if not req.force:  # --force redoes the winner's run too: nothing taken from the search
        artifact = winner.extra.get("artifact_key")
        entry = _cache(state) / "artifacts" / artifact if artifact else None
        files = sorted(f"artifacts/{artifact}/{f.name}" for f in entry.iterdir()) if entry and entry.is_dir() else []
        _seed_cache(_cache(state), RunDir(path), model.get("features", []) + files)
    run = run_stages(config, list(STAGES), echo=lambda line: state.echo("  " + line), force=req.force)
    results = read_results(run.results)
    record = next((r for r in results.records if r.format == winner.format and r.top1 is not None), None)
    held = results.heldout or {}
    out: dict[str, Any] = {
        "split": held.get("split"),
        "images": held.get("images"),
        "carved": held.get("carved"),
        "took_part_in_choices": held.get("took_part_in_choices"),
        "top1": record.top1 if record else None,
    }
    latency = (record.latency_ms or {}) if record else {}
    if latency:
        out.update(p50_ms=latency.get("p50"), p90_ms=latency.get("p90"))
        at, limit = latency.get(req.budgets.percentile), req.budgets.max_latency_ms
        if limit is not None and at is not None:
            out["budget_note"] = (
                f"within the {limit:g} ms budget"
                if at <= limit
                else f"OVER the {limit:g} ms budget in this re-measurement: the search measured "
                f"{winner.latency_ms:.3f} ms"
            )
    return out


def _seed_cache(cache: Path, run: RunDir, names: list[str]) -> None:
    """Hard-link (or copy) the named files from the search's cache into the run directory's: its train stage
    finds there the features of the same backbone on the same images, its export stage the artifact the export
    step made from the same weights with the same settings (the names carry digests of what made them), and
    takes them instead of running the backbone or converting again. A name the run already holds, or the cache
    no longer has, is left alone (the stages make what they do not find)."""
    from edgepipe.fileio import link_file

    run.prepare()
    for name in names:
        source, target = cache / name, run.file("cache") / name
        if source.is_file() and not target.exists():
            link_file(source, target)


#: why the search leaves peak memory out unless asked: a fresh process per artifact, for a figure no budget reads
MEMORY_NOT_MEASURED = "peak memory not measured: no --max-memory-mb budget (--memory measures it anyway)"


def measured_text(req: SearchRequest) -> str:
    """How the latency step measured: target, conditions, the screening's second look, and why memory is left
    out when it is."""
    c = req.conditions
    text = f"measured on {req.target.name}: {c.describe()}".removesuffix("; memory not measured")
    text += f"; screening timing: at least {c.min_iterations} calls and {c.min_duration_s:g} s per artifact"
    if req.confirm is not None:
        text += f"; {req.confirm.describe()}"
    return text + ("" if c.memory else f"; {MEMORY_NOT_MEASURED}")


def _answer(state: _State, rows: list[Row], winner: Row, measured: dict[str, Any]) -> SearchResult:
    """The table, the plot and the answer, written into the search directory and search.json."""
    from edgepipe.choose.plot import optional_plot
    from edgepipe.fileio import write_text

    req = state.request
    folder = state.folder.path
    title = f"{len(rows)} artifacts on {req.target.name}: {req.budgets.describe()}"
    plot = optional_plot(rows, req.budgets, folder, title)
    result = SearchResult(
        folder,
        rows,
        req.budgets,
        winner,
        folder / WINNER_FOLDER,
        measured,
        measured_text(req),
        "",
        plot,
    )
    result.table = render_table(result)
    write_text(folder / "search.txt", result.table + "\n")
    state.records.answer(result.to_dict())
    return result
