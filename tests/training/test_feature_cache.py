"""Head training on cached backbone features gives what training through the frozen backbone gives."""

from edgepipe.architectures import build_classifier
from edgepipe.config import DataConfig, TrainConfig
from edgepipe.data import make_index, materialize
from edgepipe.training.scratch import evaluate_top1
from edgepipe.training.strategies import feature_extraction


def test_cached_and_uncached_head_training_agree():
    dataset = materialize(make_index(DataConfig(path="builtin:synthetic", val_fraction=0.3), 0), 32, 3)
    results = {}
    for cached in (True, False):
        model = build_classifier("lenet5", 4, 32, 3, None, "none", seed=1)  # random tanh features separate shapes
        config = TrainConfig(epochs=8, learning_rate=0.01, batch_size=16, cache_features=cached)
        outcome = feature_extraction(model, dataset, config, seed=1, echo=lambda s: None)
        assert outcome["features_cached"] is cached
        results[cached] = evaluate_top1(model, dataset.splits["val"])
    assert results[True] > 0.4  # four classes: well above chance
    assert abs(results[True] - results[False]) <= 0.05, results


def test_disk_cache_matches_memory_and_is_reused(tmp_path):
    import numpy as np

    from edgepipe.training.strategies import backbone_features, disk_features

    dataset = materialize(
        make_index(DataConfig(path="builtin:synthetic", val_fraction=0.3, max_per_class=20), 0), 32, 3
    )
    model = build_classifier("lenet5", 4, 32, 3, None, "none", seed=1)
    train, val, note = disk_features(model, dataset, tmp_path)
    assert note.startswith("computed") and isinstance(train, np.memmap)
    np.testing.assert_allclose(train, backbone_features(model, dataset.train.images), rtol=1e-5, atol=1e-6)
    assert len(val) == len(dataset.splits["val"])
    _, _, again = disk_features(model, dataset, tmp_path)
    assert again.startswith("reused")
    outcome = feature_extraction(
        model, dataset, TrainConfig(epochs=1, feature_cache="disk"), seed=1, echo=lambda s: None, cache_dir=tmp_path
    )
    assert outcome["feature_cache"]["location"] == "disk" and outcome["feature_cache"]["note"].startswith("reused")
    model.get_layer("backbone").layers[1].set_weights(
        [w * 2 for w in model.get_layer("backbone").layers[1].get_weights()]
    )
    _, _, changed = disk_features(model, dataset, tmp_path)
    assert changed.startswith("computed")  # other weights: other features


def test_one_extractor_serves_every_chunk_and_split(tmp_path, monkeypatch):
    """The backbone's predict step is traced once per feature computation, not once per chunk or split: a new
    extractor per call traced the whole backbone again each time."""
    import keras

    from edgepipe.training.strategies import disk_features

    dataset = materialize(make_index(DataConfig(path="builtin:synthetic", val_fraction=0.2), 0), 32, 3)
    assert len(dataset.train) > 256  # more than one chunk of the disk cache
    model = build_classifier("lenet5", 4, 32, 3, None, "none", seed=1)
    built = []
    real = keras.Model

    def counted(*args, **kwargs):
        built.append(kwargs.get("name"))
        return real(*args, **kwargs)

    monkeypatch.setattr(keras, "Model", counted)
    train, val, _ = disk_features(model, dataset, tmp_path)
    assert len(built) == 1, built
    assert len(train) == len(dataset.train) and len(val) == len(dataset.splits["val"])
