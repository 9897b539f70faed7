"""Training controls: schedules, optimizer, weight decay, early stopping, class weights, label smoothing."""

import numpy as np
import pytest

from edgepipe import config as cfg
from edgepipe.errors import ConfigError
from edgepipe.training.controls import (
    Controls,
    choose_distribution,
    class_weights,
    cosine_rate,
    fit_arrays,
    piecewise_rate,
)

LENET = Controls(
    learning_rate=5e-4, lr_schedule="piecewise", lr_boundaries=(2, 5, 8, 12), lr_values=(5e-4, 2e-4, 1e-4, 5e-5, 1e-5)
)


def test_lenet5_piecewise_schedule():
    rates = [piecewise_rate(LENET, e) for e in range(14)]
    assert rates[:2] == [5e-4] * 2 and rates[2:5] == [2e-4] * 3 and rates[5:8] == [1e-4] * 3
    assert rates[8:12] == [5e-5] * 4 and rates[12:] == [1e-5] * 2


def test_default_piecewise_values_and_scaling():
    c = Controls(learning_rate=0.1, lr_schedule="piecewise", lr_boundaries=(3,))
    assert piecewise_rate(c, 2) == pytest.approx(0.1) and piecewise_rate(c, 3) == pytest.approx(0.01)
    assert piecewise_rate(LENET.scaled(0.1), 0) == pytest.approx(5e-5)


def test_cosine_decays_from_the_rate_to_near_zero():
    c = Controls(learning_rate=0.2, lr_schedule="cosine")
    assert cosine_rate(c, 0, 10) == pytest.approx(0.2)
    assert cosine_rate(c, 5, 10) == pytest.approx(0.1)
    assert cosine_rate(c, 9, 10) < 0.01


def test_balanced_class_weights():
    weights = class_weights(np.array([0] * 30 + [1] * 10), 2, "balanced")
    assert weights[0] == pytest.approx(40 / (2 * 30)) and weights[1] == pytest.approx(40 / (2 * 10))
    assert class_weights(np.array([0, 1]), 2, "none") is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.lr_schedule": "piecewise"}, "lr_boundaries is empty"),
        ({"train.lr_schedule": "piecewise", "train.lr_boundaries": [5, 2]}, "strictly increasing"),
        ({"train.lr_schedule": "piecewise", "train.lr_boundaries": [2], "train.lr_values": [0.1]}, "one rate more"),
        ({"train.optimizer": "rmsprop"}, "train.optimizer"),
    ],
)
def test_inconsistent_controls_are_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        cfg.from_dict({}, overrides)


def test_distribution_choice():
    assert choose_distribution(0, None) == "default"
    assert choose_distribution(1, None) == "default"
    assert choose_distribution(2, None) == "mirrored"
    two_workers = '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}'
    assert choose_distribution(0, two_workers) == "multi-worker-mirrored"
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        choose_distribution(0, "{not json")


def _features(n=120, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, 16)).astype(np.float32) + np.eye(classes, 16, dtype=np.float32)[y] * 2
    return x, y


def _head(classes=3):
    import keras

    inputs = keras.Input((16,))
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(inputs))


def test_sgd_with_schedule_smoothing_decay_and_class_weights_trains():
    x, y = _features()
    c = Controls(
        learning_rate=0.1,
        optimizer="sgd",
        lr_schedule="piecewise",
        lr_boundaries=(2,),
        weight_decay=1e-4,
        class_weight="balanced",
        label_smoothing=0.1,
    )
    history = fit_arrays(
        _head(), x[:90], y[:90], (x[90:], y[90:]), c=c, epochs=4, batch_size=16, seed=0, label="t", echo=lambda s: None
    )
    assert history["learning_rate"] == pytest.approx([0.1, 0.1, 0.01, 0.01])
    assert history["val_accuracy"][-1] > 0.6


def test_weight_decay_shrinks_kernels():
    x, y = _features()
    norms = {}
    for decay in (0.0, 0.3):
        model = _head()
        fit_arrays(
            model,
            x,
            y,
            (x, y),
            c=Controls(learning_rate=0.05, optimizer="sgd", weight_decay=decay),
            epochs=5,
            batch_size=16,
            seed=0,
            label="t",
            echo=lambda s: None,
        )
        norms[decay] = float(np.linalg.norm(model.layers[-1].get_weights()[0]))
    assert norms[0.3] < 0.8 * norms[0.0]


def test_early_stopping_stops_and_says_so():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 16)).astype(np.float32)
    y, y_val = rng.integers(0, 3, 60), rng.integers(0, 3, 60)  # noise: validation loss soon rises
    lines = []
    history = fit_arrays(
        _head(),
        x,
        y,
        (x[::-1].copy(), y_val),
        c=Controls(learning_rate=0.05, early_stopping_patience=2),
        epochs=60,
        batch_size=8,
        seed=0,
        label="t",
        echo=lines.append,
    )
    assert len(history["loss"]) < 60
    assert any("early stopping" in line for line in lines)


def test_cached_features_train_through_their_own_pipeline_repeatably_with_class_weights():
    x, y = _features()
    c = Controls(learning_rate=0.05, class_weight="balanced")
    heads, histories = [], []
    for _ in range(2):
        heads.append(_head())
        histories.append(
            fit_arrays(
                heads[-1],
                x[:90],
                y[:90],
                (x[90:], y[90:]),
                c=c,
                epochs=4,
                batch_size=16,
                seed=0,
                label="t",
                echo=lambda s: None,
                features=True,
            )
        )
    import tensorflow as tf

    from edgepipe.training.controls import _fit_inputs

    fed = _fit_inputs(x[:90], y[:90], (x[90:], y[90:]), 16, 0, pipeline=True)
    assert isinstance(fed["x"], tf.data.Dataset)  # edgepipe's own pipeline, not Keras's array adapter
    assert histories[0] == histories[1]  # seeded: the same shuffles, the same head
    np.testing.assert_array_equal(heads[0].layers[-1].get_weights()[0], heads[1].layers[-1].get_weights()[0])
    assert histories[0]["val_accuracy"][-1] > 0.6 and len(histories[0]["loss"]) == 4


def test_batch_predictor_gives_predicts_outputs_for_any_count_from_one_trace():
    """A last, smaller batch (and another call with another count) reuses the one graph traced for the first;
    the outputs are what Keras's predict gives, an empty array included."""
    import keras

    from edgepipe.training.controls import batch_predictor

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()])
    x = np.random.default_rng(0).normal(size=(70, 6, 6, 3)).astype(np.float32)
    predict = batch_predictor(model, batch_size=32)
    for count in (70, 5, 0):
        expected = model.predict(x[:count], batch_size=32, verbose=0) if count else np.zeros((0, 4), np.float32)
        np.testing.assert_allclose(predict(x[:count]), expected, rtol=1e-5, atol=1e-6)
    traced = predict.__closure__  # the tf.function the predictor calls
    run = next(c.cell_contents for c in traced if hasattr(c.cell_contents, "experimental_get_tracing_count"))
    assert run.experimental_get_tracing_count() == 1
