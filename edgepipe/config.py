"""The run configuration: typed sections, defaults, YAML loading and validation.

A configuration is loaded from YAML (or built from defaults), CLI flags are
applied as dotted-key overrides (``model.arch=resnet50``), and the result is
validated before any work starts. Unknown keys, wrong types and impossible
values are rejected with the key's full name and, for typos, the closest
valid key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from edgepipe import backends, defaults
from edgepipe.errors import ConfigError
from edgepipe.options import option as _opt
from edgepipe.quantization.options import QatConfig
from edgepipe.registry import did_you_mean


@dataclass
class DataConfig:
    path: str = _opt(
        "builtin:digits",
        "An image folder (one subfolder per class, or train/ val/ [test/] subfolders), a built-in set: builtin:digits, builtin:synthetic, builtin:photos (real photos shipped by scikit-image, scikit-learn and matplotlib; needs scikit-image), or tfds:NAME (TensorFlow Datasets, needs tensorflow-datasets).",
    )
    classes: list[str] | None = _opt(
        None, "Use only these classes (folder names; digits are '0'..'9'), in this order.", coerce_str=True
    )
    max_per_class: int | None = _opt(None, "Keep at most this many training images per class (seeded choice).", min=1)
    val_fraction: float = _opt(
        0.2,
        "Fraction of each class held out of the training images for validation when the data has no val/ folder: every choice (early stopping, the INT8 recipe and its accuracy budget) is made on it.",
        min=0.0,
        max=0.9,
    )
    test_fraction: float = _opt(
        0.2,
        "Fraction of each class held out of the training images as the test split when the data has none (no test/ folder): accuracy is reported on it and it takes part in no choice (those are made on val). 0: report on val, which also chooses.",
        min=0.0,
        max=0.9,
    )
    on_bad_image: str = _opt(
        "skip", "What to do with unreadable image files: skip (and list them) or fail.", choices=("skip", "fail")
    )
    max_image_pixels: int = _opt(
        50_000_000,
        "Images with more pixels than this are skipped and listed (decoding a huge image can take gigabytes); raise it to read them.",
        min=1,
    )


@dataclass
class PreprocessingConfig:
    layout: str | None = _opt(
        None,
        "Layout of the network's input: nchw or nhwc (null: read from its shape, when only one side can hold the channels).",
        choices=("nchw", "nhwc"),
    )
    channels: str | None = _opt(
        None, "Channel order the network was trained on: rgb or bgr (raw pixels are RGB).", choices=("rgb", "bgr")
    )
    scale: float | None = _opt(None, "Raw pixels are divided by this first (e.g. 255).", min=1e-6)
    mean: list[float] | None = _opt(
        None,
        "Subtracted after scaling, per channel in the network's order (one value or three, e.g. [0.485, 0.456, 0.406]).",
    )
    std: list[float] | None = _opt(
        None, "Then divided by, per channel (one value or three, e.g. [0.229, 0.224, 0.225]).", min=1e-9
    )


@dataclass
class ModelConfig:
    arch: str = _opt(
        "mobilenet_v2",
        "Architecture name from 'edgepipe models' (Keras spellings such as MobileNetV2 accepted).",
        registry="architecture",
    )
    alpha: float | None = _opt(
        None,
        "Width multiplier for families that have one (MobileNet: 0.25-1.4); null for the family default.",
        min=0.01,
        max=4.0,
    )
    weights: str = _opt(
        "imagenet",
        "Initial backbone weights: imagenet (Keras cache/download), none (random), or a path to a weights file.",
    )
    input_size: int = _opt(224, "Square input size in pixels the model is built for.", min=8, max=2048)
    channels: int = _opt(3, "Input channels: 3 (RGB) or 1 (grey).", choices=(1, 3))
    dropout: float = _opt(0.2, "Dropout rate in the new classification head.", min=0.0, max=0.95)
    path: str | None = _opt(
        None,
        "Start from your own saved model instead of a registry architecture: a .keras or .h5 file saved by Keras (its classifier top is replaced), or a backbone in ONNX (pooled features or feature maps out; a new head is trained on its features, its preprocessing declared in model.preprocessing).",
    )
    preprocessing: Union[str, PreprocessingConfig] = _opt(
        "auto",
        "Pixel transform inside the model: auto (the architecture's own; none for model.path), none, unit (x/255), tf (x/127.5-1), torch (ImageNet mean/std), caffe (BGR minus mean), lite ((x-127)/128); or, for an ONNX model, a mapping of the keys below (what it was trained on; edgepipe folds it into every artifact).",
        choices=("auto", "none", "unit", "tf", "torch", "caffe", "lite"),
    )
    labels: str | None = _opt(
        None,
        "classifier strategy: a text file naming the network's classes, one per line in output order (default for Keras Applications with ImageNet weights: Keras' ImageNet class index).",
    )


@dataclass
class AugmentConfig:
    flip: bool = _opt(False, "Random horizontal flips (off for digits and text, where mirroring changes the class).")
    rotation: float = _opt(
        0.0, "Random rotation, as a fraction of a full turn (0.05 = up to 18 degrees either way).", min=0.0, max=0.5
    )
    zoom: float = _opt(0.0, "Random zoom in or out by up to this fraction.", min=0.0, max=0.9)
    translation: float = _opt(0.0, "Random shift by up to this fraction of the height and width.", min=0.0, max=0.9)

    @property
    def active(self) -> bool:
        return self.flip or self.rotation > 0 or self.zoom > 0 or self.translation > 0


@dataclass
class PretrainConfig:
    data: DataConfig = _opt(DataConfig(), "Source dataset the backbone is trained on from scratch before transfer.")
    epochs: int = _opt(10, "Epochs of from-scratch training on the source data.", min=1)
    batch_size: int = _opt(32, "Batch size for pretraining.", min=1)
    learning_rate: float = _opt(2e-3, "Adam learning rate for pretraining.", min=1e-8, max=10.0)
    augment: AugmentConfig = _opt(
        AugmentConfig(), "Augmentation while pretraining (Keras preprocessing layers, training only)."
    )


@dataclass
class TrainConfig:
    strategy: str = _opt("feature-extraction", "Transfer-learning strategy.", registry="strategy")
    epochs: int = _opt(20, "Epochs of head training.", min=1)
    batch_size: int = _opt(32, "Batch size.", min=1)
    learning_rate: float = _opt(1e-3, "Learning rate of the head (the first rate of a schedule).", min=1e-8, max=10.0)
    optimizer: str = _opt("adam", "Optimizer: adam, or sgd (with train.momentum).", choices=("adam", "sgd"))
    momentum: float = _opt(0.9, "sgd: momentum.", min=0.0, max=0.999)
    lr_schedule: str = _opt(
        "constant",
        "Learning-rate schedule, per epoch: constant; piecewise (steps at train.lr_boundaries, e.g. LeNet-5's); plateau (x train.plateau_factor when val_loss stalls, as VGG's authors did); cosine (decay to zero over the epochs).",
        choices=("constant", "piecewise", "plateau", "cosine"),
    )
    lr_boundaries: list[int] = _opt(
        [], "piecewise: epochs (0-based) at which the rate steps to the next value, e.g. [2, 5, 8, 12].", min=1
    )
    lr_values: list[float] | None = _opt(
        None,
        "piecewise: the rates, one more than lr_boundaries, e.g. [5e-4, 2e-4, 1e-4, 5e-5, 1e-5] (null: learning_rate, then x0.1 at each boundary).",
        min=1e-10,
        max=10.0,
    )
    plateau_factor: float = _opt(
        0.1,
        "plateau: multiply the rate by this when val_loss has not improved for plateau_patience epochs.",
        min=1e-4,
        max=0.99,
    )
    plateau_patience: int = _opt(3, "plateau: epochs without val_loss improvement before the rate drops.", min=1)
    weight_decay: float = _opt(
        0.0,
        "Weight decay on kernels (not biases or batch-norm): L2 regularisation for sgd, decoupled (AdamW-style) for adam; AlexNet and VGG used 5e-4 with SGD.",
        min=0.0,
        max=1.0,
    )
    early_stopping_patience: int = _opt(
        0, "Stop when val_loss has not improved for this many epochs and keep the best weights (0: off).", min=0
    )
    class_weight: str = _opt(
        "none",
        "Loss weight per class: none, or balanced (n_images / (n_classes x images of the class)) for imbalanced data.",
        choices=("none", "balanced"),
    )
    label_smoothing: float = _opt(
        0.0, "Label smoothing of the cross-entropy targets (0.1 is common).", min=0.0, max=0.5
    )
    augment: AugmentConfig = _opt(
        AugmentConfig(),
        "Augmentation while training (training only; with any augmentation on, backbone features are not cached).",
    )
    fine_tune_layers: int = _opt(
        30,
        "fine-tune: how many of the backbone's top layers to unfreeze after the head has converged (batch normalization stays frozen, in inference mode).",
        min=1,
    )
    fine_tune_epochs: int = _opt(
        5, "fine-tune: epochs after unfreezing, at learning_rate x fine_tune_lr_factor.", min=1
    )
    fine_tune_lr_factor: float = _opt(
        0.1, "fine-tune: learning-rate multiplier after unfreezing (about ten times lower).", min=1e-6, max=1.0
    )
    similarity: str = _opt(
        "similar",
        "auto: how similar your images are to the pretraining data (ImageNet photos): similar or different.",
        choices=("similar", "different"),
    )
    small_dataset_per_class: int = _opt(
        200, "auto: a dataset with fewer training images per class than this counts as small.", min=1
    )
    cache_features: bool = _opt(
        True,
        "feature-extraction: run the frozen backbone once per image and train the head on the cached features (off: run the backbone on every batch).",
    )
    feature_cache: str = _opt(
        "auto",
        "feature-extraction with cache_features: keep the cached features in memory, or on disk in the run directory (cache/, memory-mapped, reused by reruns with the same backbone and images); auto: disk above 1 GB of features.",
        choices=("auto", "memory", "disk"),
    )
    baseline_from_scratch: bool = _opt(
        False,
        "Also train the same network from scratch on the target data alone and report its accuracy, to show the gain from transfer.",
    )
    baseline_epochs: int | None = _opt(
        None, "Epochs for the from-scratch baseline (default: pretrain.epochs, else train.epochs).", min=1
    )


@dataclass
class _ExportCommon:
    formats: list[str] = _opt(
        ["tflite-fp32", "tflite-int8", "onnx-fp32"],
        "Artifact formats to export (see 'edgepipe formats').",
        registry="format",
    )
    calibration_size: int = _opt(
        200, "Images drawn (stratified, seeded) from the training split to calibrate INT8 formats.", min=1
    )
    calibration_method: str = _opt(
        "minmax",
        "First INT8 calibration method where the backend offers a choice (ONNX Runtime: minmax, entropy, percentile).",
        choices=("minmax", "entropy", "percentile"),
    )
    isolation: str = _opt(
        "auto",
        "Convert each format in a child process, so a converter's memory is returned when it ends: process, none, or auto (a child process when the model file is larger than 40 MB).",
        choices=("auto", "process", "none"),
    )
    accuracy_budget_pp: float = _opt(
        defaults.ACCURACY_BUDGET_PP,
        "INT8 accuracy budget: most top-1 percentage points an INT8 artifact may lose against the FP32 model on the validation split before other recipes are tried.",
        min=0.0,
        max=100.0,
    )
    qat: QatConfig = _opt(QatConfig(), "Quantization-aware fine-tuning, the last INT8 recipe.")


@dataclass
class _BenchCommon:
    threads: int | None = _opt(
        None, "Threads per inference engine (null: all cores). Set explicitly on every engine and recorded.", min=1
    )
    batch_size: int = _opt(1, "Batch size of the latency measurement.", min=1)
    devices: list[str] = _opt(
        ["cpu"],
        "Devices / execution providers to measure on (see 'edgepipe formats'): e.g. cpu, cuda, tensorrt (ONNX Runtime's CUDA and TensorRT providers). Each engine uses those it can, else its own default device. One record per artifact, engine and device.",
        registry="device",
    )
    engines: list[str] = _opt(
        [],
        "Engines to measure every artifact with besides its own default engine, where they read its file type (e.g. [openvino] also runs the ONNX and TFLite files with OpenVINO).",
        registry="engine",
    )
    warmup: int = _opt(defaults.WARMUP_CALLS, "Warm-up inferences before timing: at least this many...", min=0)
    warmup_s: float = _opt(
        defaults.WARMUP_S, "...and for at least this many seconds (as trtexec warms up by time).", min=0.0
    )
    min_iterations: int = _opt(defaults.MIN_ITERATIONS, "Measured inferences: at least this many...", min=1)
    min_duration_s: float = _opt(defaults.MIN_DURATION_S, "...and for at least this many seconds.", min=0.0)
    memory: bool = _opt(
        True, "Measure each artifact's memory (resident after load, peak while running) in a fresh process."
    )
    tune: bool = _opt(
        False,
        "Sweep each engine's settings that matter (threads up to bench.threads or all cores, ONNX Runtime spinning and optimization level, OpenVINO hints and streams) and measure every artifact with its fastest; then the batch size with the most images/s. The default and the best are recorded; the recommendation uses and names the best.",
    )
    profile: bool = _opt(
        False,
        "After timing, profile every measured artifact per op with its engine's own profiler, in a session of its own (never the timed one): the report's 'Where the time goes'.",
    )


@dataclass
class SearchConfig:
    archs: list[str] | None = _opt(
        None,
        "edgepipe search: architectures to compare (null: every one with at most 6 M parameters by its published count).",
        registry="architecture",
    )
    alphas: list[float] | None = _opt(
        None,
        "edgepipe search: width multipliers, e.g. [0.35, 0.5] (null: each family's default; architectures without one ignore them).",
        min=0.01,
        max=4.0,
    )
    input_sizes: list[int] | None = _opt(
        None,
        "edgepipe search: square input sizes in pixels, e.g. [128, 224] (null: each architecture's own).",
        min=8,
        max=2048,
    )
    formats: list[str] | None = _opt(
        None,
        "edgepipe search: formats to measure (null: tflite-fp32, tflite-int8, openvino-int8, onnx-int8).",
        registry="format",
    )
    weights: Union[str, dict[str, str]] = _opt(
        "imagenet",
        "edgepipe search: initial backbone weights: imagenet (files already on this machine; nothing is downloaded), none (random, needs allow_random_weights), a file (one architecture), or a mapping of architecture to imagenet, none or a file (the others: imagenet).",
        keys="architecture",
    )
    allow_random_weights: bool = _opt(
        False,
        "edgepipe search: allow random backbone weights: weights none, and in place of ImageNet weights that are not on this machine (each such candidate says so).",
    )
    max_latency_ms: float | None = _opt(
        None,
        "edgepipe search: latency budget per image at batch 1, in ms at the percentile below (null: none).",
        above=0.0,
    )
    percentile: str = _opt(
        "p50", "edgepipe search: the latency percentile the budget applies to.", choices=("p50", "p90", "p95", "p99")
    )
    max_size_mb: float | None = _opt(None, "edgepipe search: artifact file size budget in MB (null: none).", above=0.0)
    max_memory_mb: float | None = _opt(
        None,
        "edgepipe search: peak resident memory budget in MB of a process running the artifact (null: none; measured in a fresh process).",
        above=0.0,
    )
    min_top1: float | None = _opt(
        None, "edgepipe search: least validation top-1 in percent (null: none).", min=0.0, max=100.0
    )
    threads: int | None = _opt(
        None, "edgepipe search: threads per engine (null: every core usable here; required with remote).", min=1
    )
    remote: str | None = _opt(
        None, "edgepipe search: time the artifacts (exported here) on this [user@]host over SSH (null: this machine)."
    )
    remote_edgepipe: str = _opt("edgepipe", "edgepipe search with remote: the edgepipe command on the remote machine.")
    remote_dir: str = _opt(
        "edgepipe-bench",
        "edgepipe search with remote: remote folder for each job (a fresh subfolder, removed afterwards).",
    )
    memory: bool | None = _opt(
        None,
        "edgepipe search: measure each artifact's peak memory in a fresh process (null: only with max_memory_mb).",
    )
    output: str | None = _opt(
        None,
        "edgepipe search: the search directory (null: runs/search); the winner's run directory is <output>/winner.",
    )


#: The export and bench sections' own keys at their defaults: the one home of the INT8 accuracy budget and of the
#: latency harness's floors (warm-up calls and seconds, timed calls and seconds), which the harness's
#: BenchSettings, the Python API's and the command line's defaults and the report read.
EXPORT_DEFAULTS = _ExportCommon()
BENCH_DEFAULTS = _BenchCommon()


def _with_sections(name: str, base: type, sections: list[tuple[str, type, str]]) -> type:
    """``base`` plus one option section per backend or engine that declares one (names from the registries)."""
    fields = [(section, cls, _opt(cls(), help)) for section, cls, help in sections]
    return dataclasses.make_dataclass(name, fields, bases=(base,))


def _backend_order(backend: str, name: str = "") -> tuple:
    """edgepipe's own backends in their listed order, then plugins by name: the sections' order does not depend on
    which backend a process happened to import first."""
    builtin = backends.BUILTIN
    return (builtin.index(backend) if backend in builtin else len(builtin), backend, name)


def _sections() -> dict[str, type]:
    """ExportConfig and BenchConfig, made once, when first asked for: their sections are the backends' own, so
    making them loads the backends (importing this module does not)."""
    made = globals()
    if "ExportConfig" not in made:
        made["ExportConfig"] = _with_sections(
            "ExportConfig",
            _ExportCommon,
            [
                (b.section, b.export_options, f"Export options of the {b.name} backend ({b.description}).")
                for _, b in sorted(backends.BACKENDS, key=lambda item: _backend_order(item[1].name))
                if b.export_options
            ],
        )
        made["BenchConfig"] = _with_sections(
            "BenchConfig",
            _BenchCommon,
            [
                (
                    e.name,
                    e.settings,
                    f"Settings of the {e.name} engine ({e.description}), recorded with every measurement.",
                )
                for _, e in sorted(backends.ENGINES, key=lambda item: _backend_order(item[1].backend, item[0]))
                if e.settings
            ],
        )
    return {"ExportConfig": made["ExportConfig"], "BenchConfig": made["BenchConfig"]}


def __getattr__(name: str) -> Any:
    if name in ("ExportConfig", "BenchConfig"):
        return _sections()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _section_option(name: str, help: str) -> Any:
    """A RunConfig field holding a default ``name`` section, made on first use (see _sections)."""
    return field(default_factory=lambda: _sections()[name](), metadata={"help": help})


@dataclass
class RunConfig:
    name: str = _opt("run", "Run name; the run directory is runs/<name> unless 'output' is set.")
    output: str | None = _opt(None, "Run directory (default: runs/<name>).")
    seed: int = _opt(0, "Seed for splits, sampling, initialisation and training.", min=0)
    data: DataConfig = _opt(DataConfig(), "Target dataset.")
    model: ModelConfig = _opt(ModelConfig(), "Architecture and initial weights.")
    pretrain: PretrainConfig | None = _opt(
        None, "Optional from-scratch pretraining of the backbone on a source dataset (null: none)."
    )
    train: TrainConfig = _opt(TrainConfig(), "Transfer learning.")
    export: ExportConfig = _section_option(  # noqa: F821 (a section built when first asked for)
        "ExportConfig", "Export formats and calibration."
    )
    bench: BenchConfig = _section_option(  # noqa: F821
        "BenchConfig", "Latency and accuracy measurement."
    )
    search: SearchConfig = _opt(
        SearchConfig(),
        "What 'edgepipe search' compares and its budgets (its flags override these; other commands ignore them).",
    )

    @property
    def run_dir(self) -> Path:
        return Path(self.output) if self.output else Path("runs") / self.name

    #: allow loading model files whose loading runs arbitrary code: set only by the command line
    #: (--unsafe-load) or the Python API's explicit argument, never read from or written to a file
    unsafe_load: bool = dataclasses.field(default=False, init=False, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("unsafe_load")
        return data


# --------------------------------------------------------------------------- loading


def _registry_names(kind: str):
    if kind == "architecture":
        from edgepipe.architectures import ARCHITECTURES

        return ARCHITECTURES
    if kind == "format":
        return backends.formats()
    if kind == "engine":
        return backends.engines()
    if kind == "device":
        from edgepipe.registry import Registry

        devices: Registry = Registry("device", list_command="edgepipe formats")
        for name in backends.devices():
            devices.add(name, name)
        return devices
    if kind == "strategy":
        from edgepipe.training.strategies import STRATEGIES

        return STRATEGIES
    raise KeyError(kind)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        names = " or ".join(_type_name(a) for a in inner)
        return names + " or null" if type(None) in typing.get_args(tp) else names
    if origin is list:
        return "a list of " + _type_name(typing.get_args(tp)[0]) + "s"
    if origin is dict:
        return "a mapping of names to " + _type_name(typing.get_args(tp)[1]) + "s"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, key: str, meta: dict[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) > 1:  # a string or a mapping (model.preprocessing, search.weights): the value's kind decides
            chosen = next((a for a in inner if _is_mapping_type(a) == isinstance(value, dict)), None)
            if chosen is None:
                raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
            return _convert(value, chosen, key, meta)
        return _convert(value, inner[0], key, meta)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
        return {k: _convert(v, typing.get_args(tp)[1], f"{key}.{k}", meta) for k, v in value.items()}
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
        item_type = typing.get_args(tp)[0]
        return [_convert(v, item_type, key, meta) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if meta.get("coerce_str") and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")


def _is_mapping_type(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict


def _check(value: Any, key: str, meta: dict[str, Any]) -> None:
    if isinstance(value, dict):  # a mapping of names (search.weights): its keys are registry names
        names = _registry_names(meta["keys"])
        for name in value:
            if name not in names:
                raise ConfigError(
                    f"config key '{key}': unknown {meta['keys']} '{name}'", did_you_mean(name, names.names())
                )
        return
    values = value if isinstance(value, list) else [value]
    for item in values:
        if item is None or dataclasses.is_dataclass(item):  # a mapping's own keys were checked when it was built
            continue
        if "min" in meta and item < meta["min"]:
            raise ConfigError(f"config key '{key}' must be at least {meta['min']}, got {item!r}")
        if "above" in meta and item <= meta["above"]:
            raise ConfigError(f"config key '{key}' must be above {meta['above']:g}, got {item!r}")
        if "max" in meta and item > meta["max"]:
            raise ConfigError(f"config key '{key}' must be at most {meta['max']}, got {item!r}")
        if "choices" in meta and item not in meta["choices"]:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(map(str, meta['choices']))}; got {item!r}")
        if "registry" in meta:
            names = _registry_names(meta["registry"])
            if item not in names:
                raise ConfigError(
                    f"config key '{key}': unknown {meta['registry']} '{item}'", did_you_mean(item, names.names())
                )


def _normalise(value: Any, meta: dict[str, Any]) -> Any:
    """Registry names are stored in their canonical spelling (MobileNetV2 -> mobilenet_v2)."""
    if "registry" not in meta or value is None:
        return value
    names = _registry_names(meta["registry"])
    if isinstance(value, list):
        return [names.canonical(v) for v in value]
    return names.canonical(value)


def _canonical_keys(value: Any, meta: dict[str, Any]) -> Any:
    """A mapping's registry names in their canonical spelling ({MobileNetV2: f} -> {mobilenet_v2: f})."""
    if "keys" not in meta or not isinstance(value, dict):
        return value
    names = _registry_names(meta["keys"])
    return {names.canonical(k): v for k, v in value.items()}


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls, localns=_sections())
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(f"unknown config key '{prefix}{key}'", did_you_mean(str(key), list(fields)))
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        meta = dict(f.metadata)
        value = _convert(data[name], hints[name], prefix + name, meta)
        _check(value, prefix + name, meta)
        kwargs[name] = _canonical_keys(_normalise(value, meta), meta)
    return cls(**kwargs)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):  # a detailed key replaces a string form (model.preprocessing)
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


#: keys earlier versions wrote: (section, key) -> where the setting lives now
MOVED_KEYS = {("export", "int8_io"): "export.tflite.int8_io"}


def _retired_keys(data: dict[str, Any]) -> None:
    """Refuse keys that moved, with their new place; drop ``model.unsafe_load: false``, which earlier
    run directories wrote, and refuse ``true``: unsafe loading is never switched on by a file."""
    for (section, key), new in MOVED_KEYS.items():
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ConfigError(f"config key '{section}.{key}' has moved to '{new}'", f"Write it as {new}.")
    model = data.get("model")
    if isinstance(model, dict) and "unsafe_load" in model:
        model = data["model"] = dict(model)
        if model.pop("unsafe_load") is not False:
            raise ConfigError(
                "config key 'model.unsafe_load' is not read from files: a downloaded config must not be "
                "able to run a model's code",
                "Remove the key; pass --unsafe-load on the command line "
                "(or unsafe_load=True in Python) for a model file you trust.",
            )


def from_dict(
    data: dict[str, Any] | None, overrides: dict[str, Any] | None = None, unsafe_load: bool = False
) -> RunConfig:
    """Validate ``data`` (a parsed YAML mapping) with dotted-key ``overrides`` applied. ``unsafe_load``
    comes from the caller (the command line's --unsafe-load), never from ``data``."""
    data = dict(data or {})
    _retired_keys(data)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, dotted, value)
    config = _build(RunConfig, data)
    _cross_checks(config)
    config.unsafe_load = bool(unsafe_load)
    return config


def _cross_checks(config: RunConfig) -> None:
    if config.data.val_fraction + config.data.test_fraction >= 0.95:
        raise ConfigError(
            "config keys 'data.val_fraction' + 'data.test_fraction' leave no training images",
            "Keep their sum below 0.95.",
        )
    from edgepipe.training import controls

    controls.check(config.train)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that gives the same key twice (YAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise ConfigError(
                    f"config key '{key}' is given twice (line {key_node.start_mark.line + 1})", "Keep one of them."
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """A config mapping from YAML text; ConfigError naming ``source`` for invalid YAML or a non-mapping."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source} is not valid YAML{where}", "Fix the YAML syntax.") from None
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. a key YAML can build but not hash
        raise ConfigError(
            f"{source} cannot be read as a configuration ({type(exc).__name__})",
            "Write plain keys and values, as in examples/image-folder.yaml.",
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must hold a mapping of keys, not {type(raw).__name__}")
    return raw


def read_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed, not yet validated, mapping of a YAML run configuration file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file '{path}' does not exist" if not path.exists() else f"'{path}' is not a file",
            "Check the path, or run without a config for the quickstart.",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}' is not UTF-8 text", "Save it as UTF-8 YAML.") from None
    except OSError as exc:
        raise ConfigError(f"config file '{path}' cannot be read ({exc.strerror})", "Check its permissions.") from None
    return parse_yaml(text, f"config file '{path}'")


def load(
    path: str | os.PathLike | None, overrides: dict[str, Any] | None = None, unsafe_load: bool = False
) -> RunConfig:
    """Load and validate a YAML run configuration (``None``: defaults only)."""
    return from_dict({} if path is None else read_mapping(path), overrides, unsafe_load)


def quickstart_path() -> Path:
    return Path(__file__).parent / "configs" / "quickstart.yaml"


def image_folder_path() -> Path:
    """The defaults for a run on the user's own images (the same file as examples/image-folder.yaml)."""
    return Path(__file__).parent / "configs" / "image-folder.yaml"


def to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def reference(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every config key, for the docs' configuration reference."""
    rows = []
    for f in (f for f in dataclasses.fields(cls) if f.init):
        hint = typing.get_type_hints(cls, localns=_sections())[f.name]
        inner = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if len(inner) > 1:  # a string or a mapping: the string's row, then the mapping's keys
            rows.append(
                (
                    prefix + f.name,
                    yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip(),
                    f.metadata["help"],
                )
            )
            rows.extend(
                row for a in inner if dataclasses.is_dataclass(a) for row in reference(a, prefix + f.name + ".")
            )
        elif dataclasses.is_dataclass(inner[0]):
            rows.append((prefix + f.name, "null" if default is None else "(section)", f.metadata["help"]))
            rows.extend(reference(inner[0], prefix + f.name + "."))
        else:
            rows.append(
                (
                    prefix + f.name,
                    yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip(),
                    f.metadata["help"],
                )
            )
    return rows


def reference_markdown() -> str:
    """The config reference as a Markdown table (docs/configuration.md is regenerated with tools/update_docs.py)."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    # a help line's '<name>' would be read as an HTML tag and vanish; '|' would split the cell
    lines += [
        f"| `{key}` | `{default}` | {text.replace('|', '/').replace('<', '&lt;')} |"
        for key, default, text in reference()
    ]
    return "\n".join(lines) + "\n"
