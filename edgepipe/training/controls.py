"""Training controls: optimizer, learning-rate schedule, weight decay, early stopping,
class weights, label smoothing, progress display, and multi-device distribution.

Every Keras ``fit`` in edgepipe goes through :func:`fit_arrays`, so pretraining,
head training (on images or on cached features), fine-tuning and full training
all honour the same controls, on one device or under a tf.distribute strategy.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
    lr_values: tuple[float, ...] | None = None
    plateau_factor: float = 0.1
    plateau_patience: int = 3
    weight_decay: float = 0.0
    early_stopping_patience: int = 0
    class_weight: str = "none"
    label_smoothing: float = 0.0

    @classmethod
    def from_config(cls, train_config) -> Controls:
        """The controls a TrainConfig asks for (pretraining uses ``Controls(learning_rate)``)."""
        t = train_config
        return cls(
            learning_rate=t.learning_rate,
            optimizer=t.optimizer,
            momentum=t.momentum,
            lr_schedule=t.lr_schedule,
            lr_boundaries=tuple(t.lr_boundaries),
            lr_values=tuple(t.lr_values) if t.lr_values else None,
            plateau_factor=t.plateau_factor,
            plateau_patience=t.plateau_patience,
            weight_decay=t.weight_decay,
            early_stopping_patience=t.early_stopping_patience,
            class_weight=t.class_weight,
            label_smoothing=t.label_smoothing,
        )

    def scaled(self, factor: float) -> Controls:
        """The same controls at ``factor`` times the learning rate (explicit piecewise values scale too)."""
        import dataclasses

        values = tuple(v * factor for v in self.lr_values) if self.lr_values else None
        return dataclasses.replace(self, learning_rate=self.learning_rate * factor, lr_values=values)


def check(train_config) -> None:
    """Cross-key checks of the training controls, before any work starts."""
    c = Controls.from_config(train_config)
    if c.lr_schedule == "piecewise":
        if not c.lr_boundaries:
            raise ConfigError(
                "train.lr_schedule is piecewise but train.lr_boundaries is empty",
                "List the epochs at which the rate steps down, e.g. lr_boundaries: [2, 5, 8, 12].",
            )
        if list(c.lr_boundaries) != sorted(set(c.lr_boundaries)):
            raise ConfigError(
                "train.lr_boundaries must be strictly increasing epoch numbers", f"Got {list(c.lr_boundaries)}."
            )
        if c.lr_values is not None and len(c.lr_values) != len(c.lr_boundaries) + 1:
            raise ConfigError(
                f"train.lr_values needs one rate more than train.lr_boundaries ({len(c.lr_boundaries) + 1}), "
                f"got {len(c.lr_values)}",
                "Give the rate before the first boundary and after each one.",
            )


def piecewise_rate(c: Controls, epoch: int) -> float:
    """The rate of a step schedule at 0-based ``epoch``: values[i] from boundary i-1 on
    (default values: learning_rate, then x0.1 at each boundary)."""
    values = c.lr_values or tuple(c.learning_rate * 0.1**i for i in range(len(c.lr_boundaries) + 1))
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
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    # a metric object, not "accuracy": its variables are made here (in a tf.distribute scope, mirrored
    # like the weights), not while a distributed step is traced, which fails with several devices
    model.compile(optimizer=optimizer(c), loss=loss, metrics=[accuracy])


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> dict[int, float] | None:
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
                    stream.write(
                        f"\r  {label} epoch {self.epoch + 1}/{total} [{'#' * done}{'.' * (20 - done)}] "
                        f"{batch + 1}/{steps}"
                    )
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
        out.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=c.plateau_factor, patience=c.plateau_patience, min_lr=c.learning_rate * 1e-4
            )
        )
    if c.early_stopping_patience:
        out.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=c.early_stopping_patience, restore_best_weights=True
            )
        )
    return out


def fit_arrays(
    model,
    x: np.ndarray,
    y: np.ndarray,
    val: tuple[np.ndarray, np.ndarray],
    *,
    c: Controls,
    epochs: int,
    batch_size: int,
    seed: int,
    label: str,
    echo: Callable[[str], None],
    features: bool = False,
) -> dict[str, list[float]]:
    """Compile ``model`` with the controls and fit it; returns the per-epoch history (with the rate used).
    ``features``: ``x`` holds a frozen backbone's cached features (small: fed through a pipeline of edgepipe's
    own, see PIPELINE_MAX_MB), not images.

    Inside a tf.distribute strategy's scope (where ``model`` must have been built), the epochs run
    on every replica, ``batch_size`` being the global batch (see :func:`_fit_distributed`).
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    compile_model(model, c)
    num_classes = int(model.outputs[0].shape[-1])
    y_fit, y_val = y, val[1]
    if c.label_smoothing > 0:
        y_fit, y_val = (keras.utils.to_categorical(v, num_classes) for v in (y, val[1]))
    weights = class_weights(y, num_classes, c.class_weight)
    if tf.distribute.has_strategy():
        history = _fit_distributed(
            model,
            (x, y_fit),
            (val[0], y_val),
            weights,
            y,
            c=c,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            label=label,
            echo=echo,
        )
    else:
        steps = int(math.ceil(len(x) / batch_size))
        history = model.fit(
            **_fit_inputs(x, y_fit, (val[0], y_val), batch_size, seed, features),
            epochs=epochs,
            verbose=0,
            class_weight=weights,
            callbacks=callbacks(c, epochs, label, steps, echo),
        ).history
    out = {k: [float(v) for v in values] for k, values in history.items()}
    if c.early_stopping_patience and len(out.get("loss", [])) < epochs:
        echo(
            f"  {label}: early stopping after epoch {len(out['loss'])} (val_loss did not improve for "
            f"{c.early_stopping_patience} epochs; best weights restored)"
        )
    return out


#: features up to this size (training and validation together) reach Keras as a tf.data pipeline of edgepipe's
#: own, shuffled in full each epoch (seeded): Keras's array adapter does per-batch work that doubled the time of a
#: head's 20 epochs on cached features (1.9 s against 0.9 s, 208 images of 1280 features). Larger arrays keep
#: Keras's adapter, which shuffles indices instead of holding the arrays again in a shuffle buffer.
PIPELINE_MAX_MB = 256


def _fit_inputs(
    x: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray], batch_size: int, seed: int, pipeline: bool
) -> dict[str, object]:
    """model.fit's data arguments for ``x``, ``y`` and the validation pair: Keras's array adapter, or with
    ``pipeline`` (cached features) a tf.data pipeline when they fit in PIPELINE_MAX_MB."""
    if not pipeline or (x.nbytes + val[0].nbytes) / 2**20 > PIPELINE_MAX_MB:
        return {"x": x, "y": y, "validation_data": val, "batch_size": batch_size, "shuffle": True}
    import tensorflow as tf

    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return {
        "x": train.batch(batch_size),
        "validation_data": tf.data.Dataset.from_tensor_slices(val).batch(batch_size),
        "shuffle": False,  # the pipeline shuffles; Keras's own shuffle does not apply to a dataset
    }


def batch_predictor(model, batch_size: int = 64) -> Callable[[np.ndarray], np.ndarray]:
    """A function from input arrays to ``model``'s outputs (inference mode, float32), computed by this process
    alone, in batches of ``batch_size``, traced once for any number of images and calls.

    Keras's predict traced the model again for a last, smaller batch (and a second time with a relaxed shape),
    seconds for a network on two cores, longer than running it on a few hundred images; this traces one graph
    whose batch dimension is open. It calls the model as predict does (``training=False``), so the outputs are
    the same. Inside a tf.distribute strategy's scope, Keras's predict would split the batches over the workers,
    a collective step that every worker must join at the same moment; every worker holds the whole arrays, so
    each computes what it needs by itself: the chief can then evaluate, or read cached features, while the
    other workers skip that work.
    """
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
    run = tf.function(lambda batch: model(batch, training=False), input_signature=[spec])

    def predict(x: np.ndarray) -> np.ndarray:
        if len(x) == 0:  # TensorFlow's kernels give an empty batch a wrong shape: one image's, kept empty
            return np.asarray(run(np.zeros((1, *x.shape[1:]), np.float32)))[:0]
        starts = range(0, len(x), batch_size)
        return np.concatenate([np.asarray(run(np.asarray(x[i : i + batch_size], np.float32))) for i in starts])

    return predict


def predict_arrays(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """``model``'s outputs for ``x`` (inference mode), computed by this process alone (see batch_predictor)."""
    return batch_predictor(model, batch_size)(x)


# ------------------------------------------------------------------ several devices


def distribution(gpus: int | None = None, tf_config: str | None = None):
    """(name, tf.distribute strategy or None): MultiWorkerMirroredStrategy when TF_CONFIG names a
    cluster, MirroredStrategy when several GPUs are visible, else None (the default, one device)."""
    tf_config = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    if gpus is None:
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
    kind = choose_distribution(gpus, tf_config)
    return kind, _strategy(kind)


@functools.cache
def _strategy(kind: str):
    """The strategy of ``kind``, created once per process: a process joins its cluster only once
    (pretraining and training in one command share it)."""
    if kind == "default":
        return None
    import tensorflow as tf

    if kind == "multi-worker-mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy()


def choose_distribution(gpus: int, tf_config: str | None) -> str:
    cluster, _, _ = _tf_config(tf_config)
    if _workers(cluster) > 1:
        return "multi-worker-mirrored"
    return "mirrored" if gpus > 1 else "default"


def _tf_config(tf_config: str | None) -> tuple[dict, str, int]:
    """(cluster, task type, task index) from TF_CONFIG (the environment's unless given)."""
    tf_config = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    if not tf_config:
        return {}, "worker", 0
    try:
        spec = json.loads(tf_config)
    except ValueError:
        spec = None
    if not isinstance(spec, dict) or not isinstance(spec.get("cluster", {}), dict):
        raise ConfigError(
            "TF_CONFIG is not valid JSON with a cluster",
            "Set it as documented for tf.distribute, or unset it for one machine.",
        )
    cluster, task = spec.get("cluster", {}), spec.get("task") or {}
    task_type, index = task.get("type", "worker"), task.get("index", 0)
    if _workers(cluster) > 1 and not (isinstance(index, int) and 0 <= index < len(cluster.get(task_type) or [])):
        raise ConfigError(
            f"TF_CONFIG's task ({task_type} {index}) is not one of its cluster's tasks",
            'Give each process its own task, e.g. "task": {"type": "worker", "index": 1}.',
        )
    return cluster, task_type, index


def _workers(cluster: dict) -> int:
    """The processes that train together: the cluster's chief and workers."""
    return sum(len(cluster.get(role) or []) for role in ("chief", "worker"))


def is_chief(tf_config: str | None = None) -> bool:
    """Whether this process writes the results: a process on its own, or the chief of its cluster
    (its "chief" task, else worker 0, as tf.distribute defines it). The other workers train and
    write nothing: the run directory has one writer."""
    cluster, task_type, index = _tf_config(tf_config)
    if _workers(cluster) <= 1:
        return True
    return task_type == "chief" or (task_type == "worker" and index == 0 and "chief" not in cluster)


def leave_results_to_chief(echo: Callable[[str], None], done: str) -> None:
    """Say that this worker, not the chief, is done: the chief writes the results."""
    cluster, task_type, index = _tf_config(None)
    echo(f"{task_type} {index}: {done}; {'the chief' if 'chief' in cluster else 'worker 0'} writes the results")


def wait_for_workers(strategy) -> None:
    """Return once every worker of ``strategy``'s cluster has got here (nothing on one machine).

    The other workers wait for the chief to write the results before they exit: TensorFlow
    reports a worker that exits while its cluster still runs as crashed.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    with strategy.scope():
        strategy.reduce("SUM", strategy.run(tf.constant, args=(1.0,)), axis=None)


def distribution_record(kind: str, strategy, tf_config: str | None = None) -> dict:
    """What training.json records: the strategy, the workers and replicas, and this worker's index."""
    cluster, _, index = _tf_config(tf_config)
    workers = _workers(cluster) if kind == "multi-worker-mirrored" else 1
    return {
        "strategy": kind,
        "workers": workers,
        "replicas": strategy.num_replicas_in_sync if strategy else 1,
        "task_index": index if workers > 1 else 0,
    }


def scope(strategy):
    """``strategy``'s scope, where models and optimizers must be built; nothing for the default."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def check_batch_size(batch_size: int, replicas: int, key: str = "the batch size") -> None:
    """The batch size is the global batch: each replica takes an equal part of it."""
    if batch_size % replicas:
        raise ConfigError(
            f"{key} ({batch_size}) does not split evenly over {replicas} replicas",
            f"Set {key} to a multiple of {replicas}: it is the global batch, split over the replicas.",
        )


def _fit_distributed(
    model,
    train: tuple,
    val: tuple,
    weights: dict[int, float] | None,
    labels: np.ndarray,
    *,
    c: Controls,
    epochs: int,
    batch_size: int,
    seed: int,
    label: str,
    echo: Callable[[str], None],
) -> dict[str, list]:
    """The epochs of ``model.fit`` under the current tf.distribute strategy, on Keras' own train and test steps.

    Keras 3's fit fails under MultiWorkerMirroredStrategy: to build the model it reduces the first
    batch across workers, and its per-step reduction of the metrics across workers fails on scalars.
    So the loop runs here. Metrics are read once per epoch, in cross-replica context, where
    tf.distribute sums them over every replica: every worker sees the same values, so early
    stopping and the plateau schedule decide alike everywhere. Class weights become sample
    weights, as in Keras' fit.
    """
    import keras
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    check_batch_size(batch_size, replicas)
    if weights:
        train = (*train, np.array([weights[int(v)] for v in labels], np.float32))
    model.optimizer.build(model.trainable_variables)  # here, in the scope: its slots are mirrored like the weights
    batches = iter(
        _replica_dataset(
            strategy,
            train,
            lambda: (
                step for epoch in range(epochs) for step in _shares(len(train[0]), batch_size, replicas, seed, epoch)
            ),
        )
    )
    validation = _replica_dataset(strategy, val, lambda: _shares(len(val[0]), batch_size, replicas))
    steps = len(_shares(len(train[0]), batch_size, replicas, seed, 0))
    history = keras.callbacks.History()
    listeners = keras.callbacks.CallbackList(
        [*callbacks(c, epochs, label, steps, echo), history], model=model, epochs=epochs, steps=steps, verbose=0
    )
    _epochs(
        model,
        epochs,
        listeners,
        (_step(strategy, model.train_step, batches.element_spec), batches, steps),
        (_step(strategy, model.test_step, validation.element_spec), validation),
    )
    return history.history


def _epochs(model, epochs: int, listeners, train: tuple, validate: tuple) -> None:
    """Keras' fit loop: ``train`` is (step, batch iterator, steps per epoch), ``validate`` (step, dataset)."""
    train_step, batches, steps = train
    test_step, validation = validate
    model.stop_training = False
    listeners.on_train_begin()
    for epoch in range(epochs):
        listeners.on_epoch_begin(epoch)
        logs = _pass(model, train_step, (next(batches) for _ in range(steps)), listeners.on_train_batch_end)
        val_logs = _pass(model, test_step, validation)
        listeners.on_epoch_end(epoch, {**logs, **{f"val_{k}": v for k, v in val_logs.items()}})
        if model.stop_training:
            break
    listeners.on_train_end()


def _step(strategy, step, spec):
    """``step`` on every replica, traced once for batches of any size (``spec``: the dataset's)."""
    import tensorflow as tf

    return tf.function(lambda batch: strategy.run(step, args=(batch,)), input_signature=[spec])


def _pass(model, step, batches, after_batch: Callable[[int], None] | None = None) -> dict[str, float]:
    """Run ``step`` on every batch; returns the model's metrics, summed over every replica."""
    model.reset_metrics()
    for i, batch in enumerate(batches):
        step(batch)
        if after_batch is not None:
            after_batch(i)
    return {k: float(v) for k, v in model.get_metrics_result().items()}


def _shares(n: int, batch_size: int, replicas: int, seed: int | None = None, epoch: int = 0) -> list[list[np.ndarray]]:
    """The indices each replica takes at each step.

    Training (a ``seed``): each global batch of a shuffle that every worker draws alike (seeded
    by epoch) is split into equal parts, one per replica. The epoch wraps round to a multiple of
    the replicas (at most ``replicas - 1`` images twice) so that no replica gets an empty or
    smaller part: an empty batch breaks convolution and batch normalization.

    Validation (no ``seed``): every replica takes every batch, in order. tf.distribute sums the
    metrics over the replicas, so their means are the split's, and no batch is ever empty.
    """
    if seed is None:
        return [[np.arange(start, min(start + batch_size, n))] * replicas for start in range(0, n, batch_size)]
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order = np.resize(order, n + (-n) % replicas)
    return [np.split(order[start : start + batch_size], replicas) for start in range(0, len(order), batch_size)]


def _replica_dataset(strategy, arrays: tuple, shares: Callable[[], Iterable[list[np.ndarray]]]):
    """A tf.data dataset per worker with its replicas' ``shares()`` of ``arrays``, distributed by ``strategy``."""
    import tensorflow as tf

    def pipeline(context):
        local = context.num_replicas_in_sync // context.num_input_pipelines
        mine = range(context.input_pipeline_id * local, (context.input_pipeline_id + 1) * local)

        def batches():
            for step in shares():
                for replica in mine:
                    yield tuple(a[step[replica]] for a in arrays)

        signature = tuple(tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype)) for a in arrays)
        options = tf.data.Options()
        # Every worker holds the whole arrays in memory and reads its own replicas' shares above
        # (there are no files to divide): tf.data must not shard them again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return tf.data.Dataset.from_generator(batches, output_signature=signature).with_options(options)

    return strategy.distribute_datasets_from_function(pipeline)
