"""Every transfer-learning strategy trains a tiny model; auto follows the four classic scenarios."""

import numpy as np
import pytest

from edgepipe.architectures import build_classifier
from edgepipe.config import DataConfig, TrainConfig
from edgepipe.data import make_index, materialize
from edgepipe.training.strategies import STRATEGIES, choose


@pytest.fixture(scope="module")
def dataset():
    return materialize(make_index(DataConfig(path="builtin:synthetic", val_fraction=0.3, max_per_class=20), 0), 32, 3)


@pytest.mark.parametrize("name", [n for n in STRATEGIES.names() if n != "classifier"])
def test_strategy_trains(dataset, name):
    model = build_classifier("mobilenet_v2", 4, 32, 3, 0.35, "none", seed=0)
    before = [w.copy() for w in model.get_layer("backbone").get_weights()]
    config = TrainConfig(strategy=name, epochs=1, fine_tune_epochs=1, fine_tune_layers=5, batch_size=16)
    outcome = STRATEGIES.get(name).fn(model, dataset, config, 0, lambda s: None)
    assert outcome["history"]["loss"] and np.isfinite(outcome["history"]["loss"]).all()
    after = model.get_layer("backbone").get_weights()
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, after))
    chosen = outcome.get("auto_choice", name)
    if chosen == "feature-extraction":
        assert changed == 0  # the backbone stays frozen
    else:
        assert changed > 0


def test_fine_tune_keeps_batch_normalization_frozen(dataset):
    import keras

    model = build_classifier("mobilenet_v2", 4, 32, 3, 0.35, "none", seed=0)
    bn_before = [
        l.get_weights() for l in model.get_layer("backbone").layers if isinstance(l, keras.layers.BatchNormalization)
    ]
    config = TrainConfig(strategy="fine-tune", epochs=1, fine_tune_epochs=1, fine_tune_layers=40, batch_size=16)
    outcome = STRATEGIES.get("fine-tune").fn(model, dataset, config, 0, lambda s: None)
    bn_after = [
        l.get_weights() for l in model.get_layer("backbone").layers if isinstance(l, keras.layers.BatchNormalization)
    ]
    assert all(np.array_equal(a, b) for x, y in zip(bn_before, bn_after) for a, b in zip(x, y))
    assert outcome["fine_tune_learning_rate"] == pytest.approx(config.learning_rate * 0.1)


@pytest.mark.parametrize(
    "per_class, similarity, expected",
    [
        (20, "similar", "feature-extraction"),
        (500, "similar", "fine-tune"),
        (20, "different", "fine-tune"),
        (500, "different", "full"),
    ],
)
def test_auto_follows_the_four_scenarios(per_class, similarity, expected):
    name, options, reason = choose(per_class, similarity, 200, 100)
    assert name == expected and reason
    if (per_class, similarity) == (20, "different"):
        assert options["layers"] == 50  # from earlier layers: half the network
