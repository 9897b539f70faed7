"""Transfer-learning strategies, registered by name, and the training loops they use."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.architectures.classifier import BACKBONE, CLASSIFIER, DROPOUT, POOL, PREPROCESS
from edgepipe.registry import Registry
from edgepipe.training.controls import Controls, batch_predictor, fit_arrays, is_chief


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    fn: Callable[..., dict[str, Any]]


STRATEGIES: Registry[Strategy] = Registry("strategy")


def register_strategy(name: str, description: str):
    def decorator(fn):
        STRATEGIES.add(name, Strategy(name, description, fn))
        return fn

    return decorator


def augmentation_layers(augment, seed: int):
    """Keras preprocessing layers for ``augment`` (an AugmentConfig), or None when it is off.

    The layers are active only in training; they are never part of the saved model.
    """
    import keras

    if augment is None or not augment.active:
        return None
    layers = []
    if augment.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if augment.rotation:
        layers.append(keras.layers.RandomRotation(augment.rotation, seed=seed))
    if augment.translation:
        layers.append(keras.layers.RandomTranslation(augment.translation, augment.translation, seed=seed))
    if augment.zoom:
        layers.append(keras.layers.RandomZoom(augment.zoom, seed=seed))
    return keras.Sequential(layers, name="augment")


def with_augmentation(model, augment, seed: int):
    """``model`` behind augmentation layers (same weights), or ``model`` itself when augmentation is off."""
    import keras

    layers = augmentation_layers(augment, seed)
    if layers is None:
        return model
    inputs = keras.Input(model.inputs[0].shape[1:], name="image")
    return keras.Model(inputs, model(layers(inputs)), name=f"{model.name}_augmented")


def fit(
    model,
    train,
    val,
    *,
    epochs: int,
    batch_size: int,
    controls: Controls,
    seed: int,
    label: str,
    echo: Callable[[str], None],
    augment=None,
) -> dict[str, list[float]]:
    """Train every trainable layer of ``model`` on raw-pixel splits; returns the per-epoch history."""
    import keras

    keras.utils.set_random_seed(seed)
    model = with_augmentation(model, augment, seed)
    return fit_arrays(
        model,
        train.images.astype(np.float32),
        train.labels,
        (val.images.astype(np.float32), val.labels),
        c=controls,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        label=label,
        echo=echo,
    )


def fit_configured(
    model,
    dataset,
    train_config,
    seed: int,
    echo: Callable[[str], None],
    label: str,
    *,
    epochs: int | None = None,
    controls: Controls | None = None,
) -> dict[str, list[float]]:
    """``fit`` on the dataset's train split, validated on its val split, with the train section's batch size,
    augmentation, epochs and controls (``epochs`` and ``controls`` replace the last two for a second phase)."""
    return fit(
        model,
        dataset.train,
        dataset.splits["val"],
        epochs=train_config.epochs if epochs is None else epochs,
        batch_size=train_config.batch_size,
        controls=Controls.from_config(train_config) if controls is None else controls,
        seed=seed,
        label=label,
        echo=echo,
        augment=train_config.augment,
    )


def feature_extractor(model, batch_size: int = 64) -> Callable[[np.ndarray], np.ndarray]:
    """A function from raw-pixel images to the model's pooled backbone features (inference mode, float32).

    One extractor serves every call, traced once (see batch_predictor): a new one per call (per split, per
    chunk of a disk cache) would trace the whole backbone again each time.
    """
    import keras

    return batch_predictor(keras.Model(model.inputs[0], model.get_layer(POOL).output), batch_size)


def backbone_features(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Pooled backbone features of raw-pixel images (inference mode)."""
    return feature_extractor(model, batch_size)(images)


#: features of more than this many MB go to disk when train.feature_cache is auto
FEATURE_CACHE_MEMORY_LIMIT_MB = 1024


def feature_cache_location(setting: str, width: int, images: int) -> str:
    """Where ``images`` features of ``width`` floats go: train.feature_cache, or for auto, disk above
    FEATURE_CACHE_MEMORY_LIMIT_MB."""
    if setting != "auto":
        return setting
    return "disk" if images * width * 4 / 2**20 > FEATURE_CACHE_MEMORY_LIMIT_MB else "memory"


def pool_width(model) -> int:
    """The pooled feature width of a classifier edgepipe built (its POOL layer's output)."""
    return int(model.get_layer(POOL).output.shape[-1])


def disk_features(model, dataset, cache_dir: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Backbone features memory-mapped from ``cache_dir``, computed once per backbone and images.

    The file name carries a digest of the backbone's weights and the images, so a
    rerun of the train stage (another learning rate, more epochs) reuses them.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(model.get_layer(PREPROCESS).get_config(), sort_keys=True, default=str).encode())
    for weight in model.get_layer(BACKBONE).get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return cached_features(digest, dataset, cache_dir, pool_width(model), feature_extractor(model))


def cached_features(
    digest, dataset, cache_dir: Path, width: int, compute: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, str]:
    """(train, val features, what happened) memory-mapped from ``cache_dir``: files named by ``digest`` (a
    hashlib object holding what the backbone is) updated with the train and val images, each computed by
    ``compute`` (raw-pixel images -> (N, width) float32) in chunks when its file is not there yet."""
    from edgepipe.fileio import atomic_path

    arrays = {}
    for split in ("train", "val"):
        images = dataset.splits[split].images
        digest.update(split.encode() + str(images.shape).encode() + np.ascontiguousarray(images).tobytes())
    key = digest.hexdigest()[:16]
    reused = True
    for split in ("train", "val"):
        path = cache_dir / f"features-{key}-{split}.npy"
        if not path.exists():
            reused = False
            images = dataset.splits[split].images
            cache_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, suffix=".npy") as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(images), width))
                for i in range(0, len(images), 256):
                    out[i : i + 256] = compute(images[i : i + 256])
                out.flush()
                del out
        arrays[split] = np.load(path, mmap_mode="r")
    return (
        arrays["train"],
        arrays["val"],
        f"reused {key}" if reused else f"computed, {cache_dir.name}/features-{key}-*.npy",
    )


def head_model(model):
    """The dropout + classifier layers of ``model`` as a model on pooled features (weights shared)."""
    import keras

    features = keras.Input(model.get_layer(POOL).output.shape[1:], name="features")
    x = model.get_layer(DROPOUT)(features)
    return keras.Model(features, model.get_layer(CLASSIFIER)(x), name="head")


@register_strategy(
    "feature-extraction",
    "Freeze the pretrained backbone and train only a new head "
    "(on cached backbone features: the backbone runs once per image).",
)
def feature_extraction(
    model, dataset, train_config, seed: int, echo: Callable[[str], None], cache_dir: Path | None = None
) -> dict[str, Any]:

    model.get_layer(BACKBONE).trainable = False
    if train_config.augment.active or not train_config.cache_features:
        why = "augmentation is on" if train_config.augment.active else "train.cache_features is off"
        echo(f"  {why}: backbone features are not cached (the frozen backbone runs on every batch)")
        history = fit_configured(model, dataset, train_config, seed, echo, "head")
        return {"history": history, "features_cached": False, "trainable_layers": ["dropout", "classifier"]}
    count = len(dataset.train) + len(dataset.splits["val"])
    where = feature_cache_location(train_config.feature_cache, pool_width(model), count)
    if where == "disk" and cache_dir is not None and is_chief():
        train_features, val_features, note = disk_features(model, dataset, cache_dir)
    else:  # the chief alone writes the run directory: other workers keep their (identical) features in memory
        where, note = "memory", "computed"
        extract = feature_extractor(model)
        train_features, val_features = extract(dataset.train.images), extract(dataset.splits["val"].images)
    echo(
        f"  backbone features cached in {where} ({note}): {train_features.shape[1]} per image, "
        f"{len(train_features)} train + {len(val_features)} val images"
    )
    return fit_head_on_features(head_model(model), train_features, val_features, dataset, train_config, seed, echo) | {
        "feature_cache": {"location": where, "note": note}
    }


def fit_head_on_features(
    head, train_features, val_features, dataset, train_config, seed: int, echo: Callable[[str], None]
) -> dict[str, Any]:
    """Train ``head`` (dropout and the classifier) on a frozen backbone's cached features of the train split,
    validated on the val split's, with the configured controls; what training.json records of it (its history,
    the layers trained). Shared by Keras backbones and foreign (ONNX) ones."""
    history = fit_arrays(
        head,
        np.asarray(train_features),
        dataset.train.labels,
        (np.asarray(val_features), dataset.splits["val"].labels),
        c=Controls.from_config(train_config),
        epochs=train_config.epochs,
        batch_size=train_config.batch_size,
        seed=seed,
        label="head",
        echo=echo,
        features=True,
    )
    return {"history": history, "features_cached": True, "trainable_layers": ["dropout", "classifier"]}


def _unfreeze_top(model, count: int) -> list[str]:
    """Make the backbone trainable except its bottom layers and every batch-normalization layer.

    Batch normalization stays frozen (in inference mode, Keras 3 semantics of
    ``trainable=False``) so its ImageNet statistics are not destroyed by small batches.
    """
    import keras

    backbone = model.get_layer(BACKBONE)
    backbone.trainable = True
    weighted = [layer for layer in backbone.layers if layer.weights]
    cut = max(len(weighted) - count, 0)
    unfrozen = []
    for i, layer in enumerate(weighted):
        layer.trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
        if layer.trainable:
            unfrozen.append(layer.name)
    return unfrozen


@register_strategy(
    "fine-tune",
    "Train the head on the frozen backbone, then unfreeze the backbone's top layers "
    "(batch normalization kept frozen) and continue at a learning rate ten times lower.",
)
def fine_tune(
    model,
    dataset,
    train_config,
    seed: int,
    echo: Callable[[str], None],
    layers: int | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    first = feature_extraction(model, dataset, train_config, seed, echo, cache_dir)
    unfrozen = _unfreeze_top(model, layers or train_config.fine_tune_layers)
    rate = train_config.learning_rate * train_config.fine_tune_lr_factor
    echo(f"  fine-tuning {len(unfrozen)} backbone layers at learning rate {rate:g}")
    second = fit_configured(
        model,
        dataset,
        train_config,
        seed,
        echo,
        "fine-tune",
        epochs=train_config.fine_tune_epochs,
        controls=Controls.from_config(train_config).scaled(train_config.fine_tune_lr_factor),
    )
    history = {k: first["history"].get(k, []) + second.get(k, []) for k in set(first["history"]) | set(second)}
    return {
        "history": history,
        "features_cached": first["features_cached"],
        "head_epochs": train_config.epochs,
        "fine_tune_epochs": train_config.fine_tune_epochs,
        "fine_tune_learning_rate": rate,
        "trainable_layers": ["dropout", "classifier", *unfrozen],
    }


@register_strategy("full", "Train every layer (for data that is large or very different from the pretraining data).")
def full(
    model, dataset, train_config, seed: int, echo: Callable[[str], None], cache_dir: Path | None = None
) -> dict[str, Any]:
    model.get_layer(BACKBONE).trainable = True
    history = fit_configured(model, dataset, train_config, seed, echo, "full")
    return {"history": history, "features_cached": False, "trainable_layers": ["all"]}


@register_strategy(
    "classifier",
    "Use the pretrained network with its original head, no training "
    "(your class folders are named after classes the network already knows).",
)
def classifier(
    model, dataset, train_config, seed: int, echo: Callable[[str], None], cache_dir: Path | None = None
) -> dict[str, Any]:
    echo("  no training: evaluating the network's own classifier")
    return {"history": {}, "features_cached": False, "trainable_layers": []}


def choose(
    per_class: float, similarity: str, small_below: int, backbone_layers: int
) -> tuple[str, dict[str, Any], str]:
    """The classic four transfer-learning scenarios: (strategy, options, reason)."""
    small = per_class < small_below
    size = f"{per_class:.0f} training images per class ({'small' if small else 'large'}: threshold {small_below})"
    if small and similarity == "similar":
        return "feature-extraction", {}, f"{size}, similar data: train a new head on the frozen backbone"
    if not small and similarity == "similar":
        return "fine-tune", {}, f"{size}, similar data: fine-tune the top of the network"
    if small:
        layers = max(backbone_layers // 2, 1)
        return (
            "fine-tune",
            {"layers": layers},
            f"{size}, different data: fine-tune from earlier layers (top {layers} of {backbone_layers} weighted layers)",
        )
    return "full", {}, f"{size}, different data: train the entire network"


@register_strategy(
    "auto",
    "Choose among feature-extraction, fine-tune and full from the dataset's size and the "
    "declared similarity to the pretraining data, and say why.",
)
def auto(
    model, dataset, train_config, seed: int, echo: Callable[[str], None], cache_dir: Path | None = None
) -> dict[str, Any]:
    per_class = len(dataset.train) / max(dataset.num_classes, 1)
    weighted = sum(1 for layer in model.get_layer(BACKBONE).layers if layer.weights)
    name, options, reason = choose(per_class, train_config.similarity, train_config.small_dataset_per_class, weighted)
    echo(f"  auto strategy: {name} ({reason})")
    if name != "full":
        options["cache_dir"] = cache_dir
    outcome = STRATEGIES.get(name).fn(model, dataset, train_config, seed, echo, **options)
    return {**outcome, "auto_choice": name, "auto_reason": reason}
