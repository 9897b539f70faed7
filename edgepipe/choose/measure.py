"""What one network costs on one device: latency (p50, p90 at batch 1), file size and peak memory per format.

Each network is built with random weights (edgepipe's classifier: in-model preprocessing, backbone, global
pooling, dense head), its batch-norm statistics and biases drawn as a trained network's (draw_statistics; a search
builds each candidate's own network instead, see Conditions.weights), exported with
the export stage's machinery (INT8 calibrated on a small seeded set of random pixels; no accuracy
verification: the files are only timed), and all its formats are timed together
in the bench harness's interleaved rounds, so their ratios are fair; each one's memory is measured
in a fresh process. The figures are cached per device, engine versions, network, format and
conditions, so asking again costs nothing; ``force`` measures anew.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgepipe.config import BENCH_DEFAULTS
from edgepipe.errors import EdgepipeError
from edgepipe.progress import Echo
from edgepipe.results import Record, Results, Status

#: what ``edgepipe models --measure`` measures when no formats are named
DEFAULT_FORMATS = ("tflite-fp32", "tflite-int8", "openvino-int8", "onnx-int8")
WEIGHTS = (
    "random, with batch-norm statistics and biases drawn as a trained network's (not zeros and ones: OpenVINO "
    "folds zero biases away, and an INT8 file of freshly initialised weights timed 13-24% faster than from ImageNet "
    "weights; with drawn statistics it compiles to the ImageNet network's operations)"
)


@dataclass(frozen=True)
class Network:
    """An architecture at one width and input size, with the dense head (``classes`` outputs) it is measured with;
    ``weights``: which weights its timed files hold when they are not random (a search's candidate: imagenet,
    none@seed<n>, or a weights file's sha256), part of its cache key only when given."""

    arch: str
    alpha: float | None
    input_size: int
    channels: int
    classes: int
    weights: str | None = None

    @classmethod
    def of(
        cls, arch: str, alpha: float | None = None, input_size: int | None = None, classes: int | None = None
    ) -> Network:
        """The network for a registry name (any spelling it accepts), with the architecture's default width, input
        size and published class count where not given; EdgepipeError for an unknown name or width."""
        from edgepipe.architectures import get_architecture
        from edgepipe.architectures.classifier import resolve_alpha
        from edgepipe.architectures.facts import reference_classes

        entry = get_architecture(arch)
        return cls(
            entry.name,
            resolve_alpha(entry, alpha),
            int(input_size or entry.default_input_size),
            entry.default_channels,
            int(classes or reference_classes(entry)),
        )

    @property
    def label(self) -> str:
        width = f" alpha {self.alpha}" if self.alpha is not None else ""
        return f"{self.arch}{width} at {self.input_size}x{self.input_size}x{self.channels}"


@dataclass(frozen=True)
class Conditions:
    """How every artifact is timed: threads, batch 1, the harness's warm-up and iteration floors; how INT8 is
    calibrated (``calibration_images`` random-pixel images drawn with ``seed``)."""

    threads: int
    warmup: int = BENCH_DEFAULTS.warmup
    warmup_s: float = BENCH_DEFAULTS.warmup_s
    min_iterations: int = BENCH_DEFAULTS.min_iterations
    min_duration_s: float = BENCH_DEFAULTS.min_duration_s
    calibration_images: int = 32
    seed: int = 0
    batch_size: int = 1
    #: measure each artifact's peak memory in a fresh process (seconds per artifact)
    memory: bool = True
    #: whose weights the timed files hold: ``random`` (each network built with random weights, its batch-norm
    #: statistics and biases drawn as draw_statistics does), or ``candidate`` (the search's: each candidate's
    #: network as it will be trained, its initial weights and untrained head, so the same build serves its
    #: accuracy step)
    weights: str = "random"

    def describe(self) -> str:
        weights = (
            "weights random (batch-norm statistics and biases drawn, not zeros and ones)"
            if self.weights == "random"
            else "each candidate's own weights (head untrained)"
        )
        return (
            f"{self.threads} thread(s), batch {self.batch_size}, {weights}, INT8 calibrated on "
            f"{self.calibration_images} synthetic images (seeded random pixels, seed {self.seed})"
            + ("" if self.memory else "; memory not measured")
        )

    def key(self) -> dict[str, Any]:
        """The conditions as a cache key; ``memory`` appears only when off, so entries measured before it existed
        (always with memory) keep their keys. Random weights are keyed as drawn statistics: entries from before
        draw_statistics (keyed without weights) timed OpenVINO INT8 files of zero biases, 13-24% too fast, and are
        not taken."""
        out = dataclasses.asdict(self)
        if self.memory:
            del out["memory"]
        if self.weights == "random":
            out["weights"] = "random, statistics drawn"
        return out


#: a target's bench: artifact paths (one network's formats) -> their results, timed in one interleaved session
BenchCall = Callable[[list[Path], Conditions, Echo], Results]


@dataclass
class Target:
    """Where artifacts are timed. ``identity`` is the part of every cache key that names the device and its
    software; ``bench`` times a list of artifacts there."""

    name: str
    identity: dict[str, Any]
    bench: BenchCall
    remote: str | None = None


@dataclass(frozen=True)
class Confirm:
    """A screening timing's second look: an artifact whose latency at ``percentile`` lies within ``margin`` (a
    fraction) of the ``limit_ms`` budget on either side is timed again under ``conditions`` (fuller floors), as
    the short screening's figure could put it on the wrong side of the line; the others keep their screening
    figure, far enough from the line for its spread not to matter."""

    conditions: Conditions
    percentile: str
    limit_ms: float
    margin: float = 0.25

    def near(self, m: Measurement) -> bool:
        """Whether ``m``'s screening figure is close enough to the budget to be timed again."""
        value = latency_at(m, self.percentile)
        return value is not None and self.limit_ms / (1 + self.margin) <= value <= self.limit_ms * (1 + self.margin)

    def describe(self) -> str:
        c = self.conditions
        return (
            f"artifacts within {self.margin:.0%} of the {self.limit_ms:g} ms budget timed again with at least "
            f"{c.min_iterations} calls and {c.min_duration_s:g} s"
        )


def latency_at(m: Measurement, percentile: str) -> float | None:
    """The measurement's latency at ``percentile`` (ms), from its bench record for those beyond p50/p90."""
    own = {"p50": m.p50_ms, "p90": m.p90_ms}
    if percentile in own:
        return own[percentile]
    return ((m.record.latency_ms or {}) if m.record else {}).get(percentile)


def local_identity() -> dict[str, Any]:
    """This machine (its stable facts, digested) and the versions of its engines and exporters."""
    from edgepipe.device import fingerprint, identity_digest

    fp = fingerprint()
    return {"device": identity_digest(fp), "engines": fp.get("engine_versions") or {}}


def remote_identity(host: str) -> dict[str, Any]:
    """A machine reached over SSH, named by its destination, with this machine's exporter versions (the artifacts
    are made here). The device and engines it reports are checked after each measurement there: entries from a
    different machine or engine versions behind the same name are dropped (see MeasurementCache.keep_only)."""
    from edgepipe.device import library_versions

    return {"remote": host, "exporters": library_versions()}


@dataclass
class Measurement:
    """One network in one format on one device at batch 1: latency (ms), artifact size (MB), peak resident memory
    (MB) of a fresh process running it, with its status (and the reason when it was not measured)."""

    arch: str
    alpha: float | None
    input_size: int
    classes: int
    format: str
    status: Status
    threads: int
    device: str
    reason: str | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    size_mb: float | None = None
    peak_memory_mb: float | None = None
    params: int | None = None
    macs: int | None = None
    engine: str | None = None
    measured_at: str | None = None
    #: taken from the cache rather than measured by this call
    cached: bool = False
    #: its screening latency lay near a budget line, so it was timed again with fuller floors (see Confirm)
    retimed: bool = False
    #: the bench harness's full record (rounds, every percentile, memory details, engine versions)
    record: Record | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["status"] = self.status.value
        out["record"] = self.record.to_dict() if self.record is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], cached: bool = False) -> Measurement:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["status"] = Status(kwargs["status"])
        kwargs["record"] = Record.from_dict(kwargs["record"]) if kwargs.get("record") else None
        kwargs["cached"] = cached
        return cls(**kwargs)


def cache_key(target: Target, network: Network, format_name: str, conditions: Conditions) -> str:
    """The key of one measurement: device and engine versions, network, format and conditions."""
    from edgepipe.fileio import sha256_value

    return sha256_value(
        {
            "target": target.identity,
            # a network of random weights keeps the key it had before ``weights`` existed
            "network": {k: v for k, v in dataclasses.asdict(network).items() if k != "weights" or v is not None},
            "format": format_name,
            "conditions": conditions.key(),
        }
    )


class MeasurementCache:
    """Measurements in one JSON file under the user's cache folder, one entry per cache key.

    A file that cannot be read (damaged, foreign) is set aside with a one-line notice and everything is
    measured again; a cache that cannot be written costs only the next call its time.
    """

    SCHEMA = "edgepipe.measurements/1"

    def __init__(self, path: Path | None = None, echo: Echo = print):
        from edgepipe.fileio import cache_dir

        self.path = Path(path) if path is not None else cache_dir() / "measurements.json"
        self.echo = echo
        self._new: dict[str, dict] = {}
        self._dropped: set[str] = set()
        self.entries = self._load(notify=True)

    def _load(self, notify: bool = False) -> dict[str, dict]:
        import json

        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if (
                not isinstance(data, dict)
                or data.get("schema") != self.SCHEMA
                or not isinstance(data.get("entries"), dict)
            ):
                raise ValueError("not a measurement cache")
            return data["entries"]
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            if notify:
                self.echo(
                    f"note: the measurement cache {self.path} could not be read ({str(exc)[:80]}); measuring again"
                )
            return {}

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, entry: dict) -> None:
        self.entries[key] = self._new[key] = entry
        self._dropped.discard(key)

    def keep_only(self, target: Target, reported: dict[str, Any]) -> None:
        """Drop ``target``'s entries whose reported device or engines differ from ``reported`` (what the target
        said about itself just now): a remote name now reaching another machine, or upgraded engines."""
        for key, entry in list(self.entries.items()):
            if entry.get("target") == target.identity and entry.get("reported") != reported:
                del self.entries[key]
                self._new.pop(key, None)
                self._dropped.add(key)

    def save(self) -> None:
        """Write this call's entries, merged into what the file holds now (another call may have added some)."""
        from edgepipe.fileio import write_json

        if not self._new and not self._dropped:
            return
        merged = {k: v for k, v in self._load().items() if k not in self._dropped}
        merged.update(self._new)
        try:
            write_json(self.path, {"schema": self.SCHEMA, "entries": merged})
        except (OSError, EdgepipeError) as exc:
            self.echo(f"note: the measurement cache {self.path} could not be written ({str(exc)[:80]})")
        self._new, self._dropped = {}, set()


class MadeAhead(Protocol):
    """Exports made before the timing started (edgepipe.choose.exports.Exports)."""

    def take(self, network: Network) -> Prepared | None: ...


def measure(
    network: Network,
    formats: Sequence[str],
    conditions: Conditions,
    target: Target,
    cache: MeasurementCache,
    *,
    force: bool = False,
    confirm: Confirm | None = None,
    echo: Echo = print,
    exports: MadeAhead | None = None,
    builder: Builder | None = None,
) -> list[Measurement]:
    """One Measurement per format (canonical names), in ``formats`` order.

    From the cache when every format this machine can build is there (unless ``force``); otherwise all of them
    are exported here (or taken from ``exports``, which converted them beforehand) and timed on ``target``
    together, in interleaved rounds, so the figures printed side by side always come from one session. With
    ``confirm``, those near its budget are then timed again under its conditions (a cached one near the budget
    that was not is measured anew). A format that cannot be built here or fails is a Measurement with its status
    and reason, never an exception; a format unavailable on this machine is not cached (installing its package
    makes it measurable). ``builder``: how the network is built when it is exported here (default: random
    weights; ``conditions.weights`` says which).
    """
    base = _base(network, conditions, target)
    skipped = {
        f: Measurement(format=f, status=Status.SKIPPED, reason=why, **base) for f, why in unavailable(formats).items()
    }
    buildable = [f for f in formats if f not in skipped]
    done = None if force else _cached(network, buildable, conditions, target, cache, confirm, echo)
    if done is None:
        prepared = exports.take(network) if exports is not None else None
        fresh, reported = (
            _measure_now(network, buildable, conditions, target, base, confirm, echo, prepared, builder)
            if buildable
            else ([], None)
        )
        if reported is not None:
            cache.keep_only(target, reported)
        done = {m.format: m for m in fresh}
        for m in fresh:
            if m.status != Status.SKIPPED:
                key = cache_key(target, network, m.format, conditions)
                cache.put(key, {"target": target.identity, "reported": reported, "measurement": m.to_dict()})
        cache.save()
    return [done.get(f) or skipped[f] for f in formats]


def needs_measuring(
    network: Network,
    formats: Sequence[str],
    conditions: Conditions,
    target: Target,
    cache: MeasurementCache,
    *,
    force: bool = False,
    confirm: Confirm | None = None,
) -> bool:
    """Whether ``measure`` would export and time this network (rather than read every format from the cache)."""
    buildable = buildable_formats(formats)
    return bool(buildable) and (
        force or _cached(network, buildable, conditions, target, cache, confirm, lambda line: None) is None
    )


def _base(network: Network, conditions: Conditions, target: Target) -> dict[str, Any]:
    return dict(
        arch=network.arch,
        alpha=network.alpha,
        input_size=network.input_size,
        classes=network.classes,
        threads=conditions.threads,
        device=target.name,
    )


def _cached(
    network: Network,
    buildable: list[str],
    conditions: Conditions,
    target: Target,
    cache: MeasurementCache,
    confirm: Confirm | None,
    echo: Echo,
) -> dict[str, Measurement] | None:
    """{format: its cached Measurement} when every buildable format is in the cache (and none near ``confirm``'s
    budget is without its second timing), else None."""
    keys = {f: cache_key(target, network, f, conditions) for f in buildable}
    if not buildable or any(keys[f] not in cache.entries for f in buildable):
        return None
    found = {f: Measurement.from_dict(cache.get(keys[f])["measurement"], cached=True) for f in buildable}
    if unconfirmed(found.values(), confirm):
        echo("  a cached figure is near the latency budget and was not timed again: measuring anew")
        return None
    return found


def unconfirmed(measurements, confirm: Confirm | None) -> bool:
    """Whether any of ``measurements`` is near ``confirm``'s budget without having been timed again."""
    return confirm is not None and any(confirm.near(m) and not m.retimed for m in measurements)


def buildable_formats(formats: Sequence[str]) -> list[str]:
    """``formats`` this machine can build, in order (the others are rows with their reason in ``measure``)."""
    missing = unavailable(formats)
    return [f for f in formats if f not in missing]


def unavailable(formats: Sequence[str]) -> dict[str, str]:
    """{format: why this machine cannot build it} for the formats it cannot build (a missing package or device)."""
    from edgepipe.backends import formats as all_formats

    reasons = {f: all_formats().get(f).available() for f in formats}
    return {f: why for f, why in reasons.items() if why}


def synthetic_calibration(network: Network, conditions: Conditions) -> np.ndarray:
    """Seeded random pixels (uint8 NHWC) at the network's input: enough to calibrate INT8 for timing, nothing more."""
    shape = (conditions.calibration_images, network.input_size, network.input_size, network.channels)
    return np.random.default_rng(conditions.seed).integers(0, 256, shape, dtype=np.uint8)


def build_network(network: Network, seed: int = 0):
    """(Keras model with random weights, {"params", "macs"} counted on it at batch 1); EdgepipeError when the
    architecture cannot take this input size or width."""
    from edgepipe.architectures import build_classifier
    from edgepipe.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    model = build_classifier(
        network.arch, network.classes, network.input_size, network.channels, network.alpha, weights="none", seed=seed
    )
    draw_statistics(model, seed)
    return model, network_counts(model)


def draw_statistics(model, seed: int = 0) -> int:
    """Give a network of random weights the kind of values a trained one holds where initialisation leaves
    constants: every batch normalization's scale, offset, moving mean and variance, and every bias, drawn (seeded)
    instead of ones and zeros. Returns how many layers were changed.

    Timing depends on it: OpenVINO folds the zero biases of a freshly initialised network away, so its INT8 IR of
    MobileNetV2 compiled to 122 runtime operations, where the same network of ImageNet weights compiled to 280 and
    timed 15-32% slower; with drawn statistics it compiles to the ImageNet network's 280 operations, of the same
    types and precisions. TFLite files timed the same either way."""
    import keras

    from edgepipe.architectures.classifier import all_layers

    rng = np.random.default_rng(seed)
    changed = 0

    def draw(variable, low: float | None = None, high: float | None = None) -> None:
        shape = tuple(variable.shape)
        values = rng.normal(0.0, 0.1, shape) if low is None else rng.uniform(low, high, shape)
        variable.assign(values.astype(variable.dtype))

    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            for name, low, high in (("gamma", 0.5, 1.5), ("beta", None, None), ("moving_mean", None, None)):
                if getattr(layer, name, None) is not None:
                    draw(getattr(layer, name), low, high)
            draw(layer.moving_variance, 0.5, 2.0)
            changed += 1
        elif isinstance(getattr(layer, "bias", None), keras.Variable):  # not a constant named bias (LRN's k)
            draw(layer.bias)
            changed += 1
    return changed


def network_counts(model) -> dict[str, int]:
    """{"params", "macs"} of a Keras model, counted at batch 1."""
    from edgepipe.architectures.compute import count

    return {"params": int(model.count_params()), "macs": int(count(model).macs)}


#: how a network is built for timing instead of with random weights (build_network): ("package.module:function",
#: its argument); the function returns (Keras model, {"params", "macs"}). Named, not a closure, so that a worker
#: process can build it (edgepipe.choose.exports)
Builder = tuple[str, Any]


def _built(network: Network, conditions: Conditions, builder: Builder | None):
    if builder is None:
        return build_network(network, conditions.seed)
    import importlib

    module, _, name = builder[0].partition(":")
    return getattr(importlib.import_module(module), name)(builder[1])


@dataclass
class Prepared:
    """A network's formats exported for timing: the export records (status, file, reason) in ``folder``, and the
    network's parameter and MAC counts; or ``reason``, why it cannot be built."""

    folder: Path
    exported: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    reason: str | None = None
    #: the progress lines of an export made in a worker process, shown when its result is taken
    lines: list[str] = field(default_factory=list)
    #: the process that built and exported it (a builder may keep the model there for later work)
    process: int | None = None


def prepare(
    network: Network,
    formats: list[str],
    conditions: Conditions,
    folder: Path,
    echo: Echo,
    builder: Builder | None = None,
) -> Prepared:
    """Build the network (with random weights, or by ``builder``) and export ``formats`` into ``folder`` for
    timing. A builder goes with conditions whose ``weights`` are not random, and only with them: the files'
    figures are cached under those conditions."""
    if (builder is None) != (conditions.weights == "random"):
        raise ValueError(f"conditions with weights {conditions.weights!r} and builder {builder!r} do not go together")
    try:
        model, counts = _built(network, conditions, builder)
    except EdgepipeError as exc:
        return Prepared(folder, reason=f"cannot be built: {exc}")
    exported = _export(model, network, formats, conditions, folder, echo)
    del model
    _release_keras()
    return Prepared(folder, exported, counts, process=os.getpid())


def _measure_now(
    network: Network,
    formats: list[str],
    conditions: Conditions,
    target: Target,
    base: dict,
    confirm: Confirm | None,
    echo: Echo,
    prepared: Prepared | None = None,
    builder: Builder | None = None,
) -> tuple[list[Measurement], dict | None]:
    """Time the network's ``formats`` on the target in one session (and those near ``confirm``'s budget again),
    exported now in a temporary folder, or ``prepared`` beforehand (its folder is removed after); returns the
    measurements and what the target reported about itself (None when nothing was timed)."""
    from edgepipe.pipeline.rundir import now_iso

    base = {**base, "measured_at": now_iso()}
    if prepared is not None:
        try:
            return _time_prepared(prepared, formats, conditions, target, base, confirm, echo)
        finally:
            shutil.rmtree(prepared.folder, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="edgepipe-measure-") as folder:
        made = prepare(network, formats, conditions, Path(folder), echo, builder)
        return _time_prepared(made, formats, conditions, target, base, confirm, echo)


def _time_prepared(
    prepared: Prepared,
    formats: list[str],
    conditions: Conditions,
    target: Target,
    base: dict,
    confirm: Confirm | None,
    echo: Echo,
) -> tuple[list[Measurement], dict | None]:
    if prepared.reason:
        return [Measurement(format=f, status=Status.SKIPPED, reason=prepared.reason, **base) for f in formats], None
    base = {**base, **prepared.counts}
    exported, folder = prepared.exported, prepared.folder
    made = [r for r in exported if r["status"] == Status.OK.value]
    results = target.bench([folder / r["file"] for r in made], conditions, echo) if made else None
    reported = None
    if results is not None:
        from edgepipe.device import device_label, identity_digest

        reported = {"device": identity_digest(results.device), "engines": results.device.get("engine_versions")}
        where = device_label(results.device)  # what the target says it is
        base["device"] = f"{target.remote}: {where}" if target.remote else where
    rows = [_row(r, results, base) for r in exported]
    if unconfirmed(rows, confirm):
        rows = _retime(rows, exported, folder, confirm, target, base, echo)
    return rows, reported


def _retime(
    rows: list[Measurement],
    exported: list[dict],
    folder: Path,
    confirm: Confirm,
    target: Target,
    base: dict,
    echo: Echo,
) -> list[Measurement]:
    """``rows`` with those near ``confirm``'s budget timed again (together, in interleaved rounds) under its
    conditions; each keeps the peak memory its first measurement found."""
    near = {m.format for m in rows if confirm.near(m)}
    echo(f"  near the {confirm.limit_ms:g} ms budget, timed again with fuller floors: {', '.join(sorted(near))}")
    again = [r for r in exported if r["format"] in near]
    results = target.bench([folder / r["file"] for r in again], confirm.conditions, echo)
    retimed = {r["format"]: _row(r, results, base) for r in again}
    out = []
    for m in rows:
        new = retimed.get(m.format)
        if new is None or new.p50_ms is None:
            out.append(m)
            continue
        record = dataclasses.replace(new.record, memory=m.record.memory if m.record else None)
        out.append(dataclasses.replace(new, peak_memory_mb=m.peak_memory_mb, record=record, retimed=True))
    return out


def _export(
    model, network: Network, formats: list[str], conditions: Conditions, folder: Path, echo: Echo
) -> list[dict]:
    """The export stage's records (status, file, reason) for each format of ``model``, written in ``folder``, as
    artifacts.json holds them (read by its one reader)."""
    from edgepipe.backends import BACKENDS
    from edgepipe.export_index import read_export_index
    from edgepipe.pipeline.export import ISOLATE_ABOVE_MB
    from edgepipe.standalone.export import export_model

    # a large network's formats are converted in child processes, as the export stage does (judged on its
    # float32 weights, without saving the model to measure its file first)
    large = model.count_params() * 4 / 1e6 > ISOLATE_ABOVE_MB
    # NNCF's bias correction changes an IR's bias values, not the graph OpenVINO compiles: a file only timed
    # goes without (the same runtime operations and precisions with it and without, checked on MobileNet,
    # MobileNetV2 and EfficientNet-Lite0 of ImageNet weights)
    options = {"openvino": BACKENDS.get("openvino").export_options(int8_bias_correction=False)}
    index = export_model(
        model,
        formats,
        folder,
        lambda line: echo("  " + line),
        calibration=synthetic_calibration(network, conditions),
        calibration_size=conditions.calibration_images,
        seed=conditions.seed,
        threads=conditions.threads,
        isolation="process" if large else "none",
        frozen_graph=True,
        options=options,
    )
    return [record.to_dict() for record in read_export_index(index).artifacts]


def _release_keras() -> None:
    """Clear Keras's session and collect, so the next architecture starts from a clean session (a model someone
    still holds, as edgepipe.choose.kept does, stays usable)."""
    import keras

    keras.backend.clear_session()
    gc.collect()


def _row(exported: dict, results: Results | None, base: dict) -> Measurement:
    """The Measurement of one exported format: its bench record (default engine), or the export's reason."""
    status = Status(exported["status"])
    if status != Status.OK or results is None:
        return Measurement(format=exported["format"], status=status, reason=exported.get("reason"), **base)
    record = next((r for r in results.records if r.format == exported["format"]), None)
    if record is None:
        return Measurement(
            format=exported["format"], status=Status.FAILED, reason="the bench returned no record for it", **base
        )
    record = dataclasses.replace(record, artifact=Path(record.artifact).name)
    latency, memory = record.latency_ms or {}, record.memory or {}
    return Measurement(
        format=exported["format"],
        status=record.status,
        reason=record.reason,
        p50_ms=latency.get("p50"),
        p90_ms=latency.get("p90"),
        size_mb=record.size_mb,
        peak_memory_mb=memory.get("peak_rss_mb"),
        engine=record.engine,
        record=record,
        **base,
    )
