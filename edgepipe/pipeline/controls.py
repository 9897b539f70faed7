"""Training controls: optimizer, learning-rate schedule, weight decay, early stopping,
class weights, label smoothing, progress display, and multi-device distribution.

Every Keras ``fit`` in edgepipe goes through :func:`fit_arrays`, so pretraining,
head training (on images or on cached features), fine-tuning and full training
all honour the same controls.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from edgepipe.errors import ConfigError

SCHEDULES = ("constant", "piecewise", "plateau", "cosine")


@dataclass(frozen=True)
class Controls:
    """The knobs of one Keras fit (a view of TrainConfig; pretraining uses the defaults)."""

    learning_rate: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    lr_schedule: str = "constant"
    lr_boundaries: tuple[int, ...] = ()
    lr_values: Optional[tuple[float, ...]] = None
    plateau_factor: float = 0.1
    plateau_patience: int = 3
    weight_decay: float = 0.0
    early_stopping_patience: int = 0
    class_weight: str = "none"
    label_smoothing: float = 0.0

    @classmethod
    def from_config(cls, train_config) -> "Controls":
        """The controls a TrainConfig asks for (pretraining uses ``Controls(learning_rate)``)."""
        t = train_config
        return cls(
            learning_rate=t.learning_rate, optimizer=t.optimizer, momentum=t.momentum, lr_schedule=t.lr_schedule,
            lr_boundaries=tuple(t.lr_boundaries), lr_values=tuple(t.lr_values) if t.lr_values else None,
            plateau_factor=t.plateau_factor, plateau_patience=t.plateau_patience, weight_decay=t.weight_decay,
            early_stopping_patience=t.early_stopping_patience, class_weight=t.class_weight,
            label_smoothing=t.label_smoothing,
        )

    def scaled(self, factor: float) -> "Controls":
        """The same controls at ``factor`` times the learning rate (explicit piecewise values scale too)."""
        import dataclasses

        values = tuple(v * factor for v in self.lr_values) if self.lr_values else None
        return dataclasses.replace(self, learning_rate=self.learning_rate * factor, lr_values=values)


def check(train_config) -> None:
    """Cross-key checks of the training controls, before any work starts."""
    c = Controls.from_config(train_config)
    if c.lr_schedule == "piecewise":
        if not c.lr_boundaries:
            raise ConfigError("train.lr_schedule is piecewise but train.lr_boundaries is empty",
                              "List the epochs at which the rate steps down, e.g. lr_boundaries: [2, 5, 8, 12].")
        if list(c.lr_boundaries) != sorted(set(c.lr_boundaries)):
            raise ConfigError("train.lr_boundaries must be strictly increasing epoch numbers",
                              f"Got {list(c.lr_boundaries)}.")
        if c.lr_values is not None and len(c.lr_values) != len(c.lr_boundaries) + 1:
            raise ConfigError(
                f"train.lr_values needs one rate more than train.lr_boundaries ({len(c.lr_boundaries) + 1}), "
                f"got {len(c.lr_values)}", "Give the rate before the first boundary and after each one.")


def piecewise_rate(c: Controls, epoch: int) -> float:
    """The rate of a step schedule at 0-based ``epoch``: values[i] from boundary i-1 on
    (default values: learning_rate, then x0.1 at each boundary)."""
    values = c.lr_values or tuple(c.learning_rate * 0.1 ** i for i in range(len(c.lr_boundaries) + 1))
    step = sum(1 for b in c.lr_boundaries if epoch >= b)
    return float(values[step])


def cosine_rate(c: Controls, epoch: int, epochs: int) -> float:
    """Cosine decay from learning_rate towards zero over ``epochs`` (per epoch)."""
    return float(c.learning_rate * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1))))


def initial_rate(c: Controls) -> float:
    return piecewise_rate(c, 0) if c.lr_schedule == "piecewise" else c.learning_rate


def optimizer(c: Controls):
    import keras

    decay = c.weight_decay or None
    if c.optimizer == "sgd":
        opt = keras.optimizers.SGD(initial_rate(c), momentum=c.momentum, weight_decay=decay)
    else:
        opt = keras.optimizers.Adam(initial_rate(c), weight_decay=decay)
    if decay:  # decay kernels only: biases and batch-normalization scale/offset are not regularised
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def compile_model(model, c: Controls) -> None:
    import keras

    if c.label_smoothing > 0:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=c.label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=optimizer(c), loss=loss, metrics=["accuracy"])


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> Optional[dict[int, float]]:
    """``balanced``: n_samples / (n_classes * count(c)) per class (as scikit-learn defines it)."""
    if mode != "balanced":
        return None
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return {i: float(w) for i, w in enumerate(weights)}


class _Progress:
    """One line per epoch; on a terminal, also a bar redrawn as batches finish."""

    def __new__(cls, label: str, total: int, steps: int, echo: Callable[[str], None], stream=None):
        import keras

        stream = stream or sys.stdout
        live = hasattr(stream, "isatty") and stream.isatty()

        class _Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                if live:
                    done = int(20 * (batch + 1) / max(steps, 1))
                    stream.write(f"\r  {label} epoch {self.epoch + 1}/{total} [{'#' * done}{'.' * (20 - done)}] "
                                 f"{batch + 1}/{steps}")
                    stream.flush()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                if live:
                    stream.write("\r" + " " * 60 + "\r")
                rate = logs.get("learning_rate")
                shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "learning_rate")
                echo(f"  {label} epoch {epoch + 1}/{total}  {shown}" + (f"  lr {float(rate):.3g}" if rate else ""))

        return _Callback()


def callbacks(c: Controls, epochs: int, label: str, steps: int, echo: Callable[[str], None]) -> list:
    import keras

    out = [_Progress(label, epochs, steps, echo)]
    if c.lr_schedule == "piecewise":
        out.append(keras.callbacks.LearningRateScheduler(lambda epoch: piecewise_rate(c, epoch)))
    elif c.lr_schedule == "cosine":
        out.append(keras.callbacks.LearningRateScheduler(lambda epoch: cosine_rate(c, epoch, epochs)))
    elif c.lr_schedule == "plateau":
        out.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=c.plateau_factor,
                                                     patience=c.plateau_patience, min_lr=c.learning_rate * 1e-4))
    if c.early_stopping_patience:
        out.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=c.early_stopping_patience,
                                                 restore_best_weights=True))
    return out


def fit_arrays(model, x: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray], *, c: Controls,
               epochs: int, batch_size: int, seed: int, label: str, echo: Callable[[str], None]) -> dict[str, list[float]]:
    """Compile ``model`` with the controls and fit it; returns the per-epoch history (with the rate used)."""
    import keras

    keras.utils.set_random_seed(seed)
    compile_model(model, c)
    num_classes = int(model.outputs[0].shape[-1])
    y_fit, y_val = y, val[1]
    if c.label_smoothing > 0:
        y_fit, y_val = (keras.utils.to_categorical(v, num_classes) for v in (y, val[1]))
    steps = int(math.ceil(len(x) / batch_size))
    history = model.fit(x, y_fit, validation_data=(val[0], y_val), epochs=epochs, batch_size=batch_size,
                        shuffle=True, verbose=0, class_weight=class_weights(y, num_classes, c.class_weight),
                        callbacks=callbacks(c, epochs, label, steps, echo))
    out = {k: [float(v) for v in values] for k, values in history.history.items()}
    if c.early_stopping_patience and len(out.get("loss", [])) < epochs:
        echo(f"  {label}: early stopping after epoch {len(out['loss'])} (val_loss did not improve for "
             f"{c.early_stopping_patience} epochs; best weights restored)")
    return out


# ------------------------------------------------------------------ several devices

def distribution(gpus: Optional[int] = None, tf_config: Optional[str] = None):
    """(name, tf.distribute strategy or None): MultiWorkerMirroredStrategy when TF_CONFIG names a
    cluster, MirroredStrategy when several GPUs are visible, else None (the default, one device)."""
    tf_config = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    if gpus is None:
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
    kind = choose_distribution(gpus, tf_config)
    if kind == "default":
        return kind, None
    import tensorflow as tf

    if kind == "multi-worker-mirrored":
        return kind, tf.distribute.MultiWorkerMirroredStrategy()
    return kind, tf.distribute.MirroredStrategy()


def choose_distribution(gpus: int, tf_config: Optional[str]) -> str:
    import json

    if tf_config:
        try:
            cluster = json.loads(tf_config).get("cluster", {})
        except ValueError:
            raise ConfigError("TF_CONFIG is not valid JSON",
                              "Set it as documented for tf.distribute, or unset it for one machine.") from None
        if sum(len(v) for v in cluster.values() if isinstance(v, list)) > 1:
            return "multi-worker-mirrored"
    return "mirrored" if gpus > 1 else "default"
