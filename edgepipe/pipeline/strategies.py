"""Transfer-learning strategies, registered by name, and the training loops they use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgepipe.architectures.classifier import BACKBONE, CLASSIFIER, DROPOUT, POOL
from edgepipe.registry import Registry


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


class EpochLine:
    """Keras callback printing one progress line per epoch (label, epoch/total, metrics)."""

    def __new__(cls, label: str, total: int, echo: Callable[[str], None]):
        import keras

        class _Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "learning_rate")
                echo(f"  {label} epoch {epoch + 1}/{total}  {shown}")

        return _Callback()


def _compile(model, learning_rate: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def _history(history) -> dict[str, list[float]]:
    return {k: [float(v) for v in values] for k, values in history.history.items()}


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


def fit(model, train, val, *, epochs: int, batch_size: int, learning_rate: float, seed: int,
        label: str, echo: Callable[[str], None], augment=None) -> dict[str, list[float]]:
    """Train every trainable layer of ``model`` on raw-pixel splits; returns the per-epoch history."""
    import keras

    keras.utils.set_random_seed(seed)
    model = with_augmentation(model, augment, seed)
    _compile(model, learning_rate)
    history = model.fit(
        train.images.astype(np.float32), train.labels,
        validation_data=(val.images.astype(np.float32), val.labels),
        epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
        callbacks=[EpochLine(label, epochs, echo)],
    )
    return _history(history)


def backbone_features(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Pooled backbone features of raw-pixel images (inference mode)."""
    import keras

    extractor = keras.Model(model.inputs[0], model.get_layer(POOL).output)
    return np.asarray(extractor.predict(images.astype(np.float32), batch_size=batch_size, verbose=0))


def head_model(model):
    """The dropout + classifier layers of ``model`` as a model on pooled features (weights shared)."""
    import keras

    features = keras.Input(model.get_layer(POOL).output.shape[1:], name="features")
    x = model.get_layer(DROPOUT)(features)
    return keras.Model(features, model.get_layer(CLASSIFIER)(x), name="head")


@register_strategy("feature-extraction", "Freeze the pretrained backbone and train only a new head "
                   "(on cached backbone features: the backbone runs once per image).")
def feature_extraction(model, dataset, train_config, seed: int, echo: Callable[[str], None]) -> dict[str, Any]:
    import keras

    model.get_layer(BACKBONE).trainable = False
    if train_config.augment.active:
        echo("  augmentation is on: backbone features are not cached (the backbone runs on every augmented batch)")
        history = fit(model, dataset.train, dataset.splits["val"], epochs=train_config.epochs,
                      batch_size=train_config.batch_size, learning_rate=train_config.learning_rate, seed=seed,
                      label="head", echo=echo, augment=train_config.augment)
        return {"history": history, "features_cached": False, "trainable_layers": ["dropout", "classifier"]}
    train_features = backbone_features(model, dataset.train.images)
    val_features = backbone_features(model, dataset.splits["val"].images)
    head = head_model(model)
    keras.utils.set_random_seed(seed)
    _compile(head, train_config.learning_rate)
    history = head.fit(
        train_features, dataset.train.labels, validation_data=(val_features, dataset.splits["val"].labels),
        epochs=train_config.epochs, batch_size=train_config.batch_size, shuffle=True, verbose=0,
        callbacks=[EpochLine("head", train_config.epochs, echo)],
    )
    return {"history": _history(history), "features_cached": True, "trainable_layers": ["dropout", "classifier"]}
