"""Measured facts about registry entries: parameters and MACs at the default input, cached per version."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgepipe.architectures.base import ARCHITECTURES, Architecture
from edgepipe.fileio import cache_dir, read_json, write_json
from edgepipe.versions import __version__


def reference_classes(arch: Architecture) -> int:
    """Classes of the network as published (10 for LeNet-5's digits, 1000 for ImageNet)."""
    return 10 if arch.family == "LeNet" else 1000


def build_reference(arch: Architecture, size: int | None = None):
    """The published classifier (random weights, published class count) at ``size`` (default: its default input)."""
    size = size or arch.default_input_size
    return arch.build(
        input_shape=(size, size, arch.default_channels),
        alpha=arch.default_alpha,
        weights=None,
        include_top=True,
        classes=reference_classes(arch),
    )


def measure(arch: Architecture) -> dict[str, Any]:
    """Build the published classifier (random weights) at its default input and count it."""
    import keras
    import numpy as np

    from edgepipe.architectures.compute import count

    size, channels = arch.default_input_size, arch.default_channels
    model = arch.build(
        input_shape=(size, size, channels),
        alpha=arch.default_alpha,
        weights=None,
        include_top=True,
        classes=reference_classes(arch),
    )
    report = count(model)
    facts = {
        "params": int(model.count_params()),
        "trainable_params": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "macs": int(report.macs),
        "input": [size, size, channels],
        "classes": reference_classes(arch),
    }
    del model
    keras.backend.clear_session()
    gc.collect()
    return facts


def _cache_path() -> Path:
    import keras

    return cache_dir() / f"architecture-facts-{__version__}-keras{keras.__version__}.json"


def all_facts(echo: Callable[[str], None] | None = None, refresh: bool = False) -> dict[str, dict[str, Any]]:
    """Facts for every registry entry; measured once per edgepipe/Keras version and cached on disk."""
    path = _cache_path()
    cached: dict[str, Any] = {}
    if path.exists() and not refresh:
        try:
            cached = read_json(path)
        except ValueError:
            cached = {}
    missing = [name for name in ARCHITECTURES.names() if name not in cached]
    for i, name in enumerate(missing, 1):
        if echo:
            echo(f"measuring {name} ({i}/{len(missing)})")
        cached[name] = measure(ARCHITECTURES.get(name))
    if missing:
        try:
            write_json(path, cached)
        except OSError:
            pass  # a read-only home only costs the next listing its time
    return cached


def catalogue(count: bool = True, echo: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every registry entry with its published figures and (when ``count``) its parameters and MACs, counted on the
    network built with random weights (key ``measured``, as earlier versions wrote it)."""
    facts: dict = {}
    if count:
        from edgepipe.quiet import import_tensorflow_quietly

        import_tensorflow_quietly()
        facts = all_facts(echo=echo)
    return [
        {
            "name": name,
            "keras_name": arch.keras_name,
            "family": arch.family,
            "paper": arch.paper,
            "default_input_size": arch.default_input_size,
            "default_channels": arch.default_channels,
            "alphas": list(arch.alphas),
            "imagenet_weights": arch.has_imagenet_weights,
            "measured": facts.get(name),
            "reference": arch.reference.as_dict(),
        }
        for name, arch in ARCHITECTURES
    ]


def render_models_table(rows: list[dict]) -> str:
    def num(value, scale=1.0, spec=".1f"):
        return "–" if value is None else f"{value / scale:{spec}}"

    header = (
        f"{'name':<21} {'family':<31} {'params M':>8} {'MACs M':>8} {'input':>5} {'depth':>5} "
        f"{'ImageNet':>8} {'size MB':>7} {'top-1 %':>7} {'top-5 %':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        measured, ref = r["measured"] or {}, r["reference"]
        lines.append(
            f"{r['name']:<21} {r['family']:<31} {num(measured.get('params'), 1e6, '.2f'):>8} "
            f"{num(measured.get('macs'), 1e6, '.1f'):>8} {r['default_input_size']:>5} {num(ref['depth'], 1, '.0f'):>5} "
            f"{'yes' if r['imagenet_weights'] else 'no':>8} {num(ref['size_mb'], 1, '.0f'):>7} "
            f"{num(ref['top1']):>7} {num(ref['top5']):>7}"
        )
    lines.append(
        "params and MACs: measured here with the published classifier top (1000 classes; LeNet-5: 10) at the "
        "default input, batch 1. Size, depth, top-1/top-5: published ImageNet figures, sources in --json."
    )
    return "\n".join(lines)
