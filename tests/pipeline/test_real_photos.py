"""Genuine ImageNet weights on real photos: feature extraction matches a linear probe, INT8 keeps to its budget.

Needs the Keras ImageNet weights in ../shared/weights (copied into a private Keras
cache, so ``weights: imagenet`` loads them as it would for a user) and scikit-image
for the built-in photo set.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from edgepipe.fileio import read_json
from tests.conftest import SHARED_WEIGHTS

pytestmark = [
    pytest.mark.skipif(
        not SHARED_WEIGHTS.is_dir(), reason="genuine Keras ImageNet weights not found in ../shared/weights"
    ),
]
pytest.importorskip("skimage", reason="builtin:photos needs scikit-image")

CONFIG = {
    "data": {"path": "builtin:photos", "val_fraction": 0.3, "test_fraction": 0.25},
    "model": {"arch": "mobilenet_v2", "alpha": 0.35, "weights": "imagenet", "input_size": 64},
    "train": {"strategy": "feature-extraction", "epochs": 30, "learning_rate": 0.003},
    "export": {"formats": ["tflite-int8", "onnx-int8"], "calibration_size": 64},
    "bench": {"warmup": 1, "min_iterations": 3, "min_duration_s": 0.0},
}


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("keras-home")
    (home / "models").mkdir()
    for file in SHARED_WEIGHTS.glob("*.h5"):
        shutil.copy(file, home / "models" / file.name)
    out = tmp_path_factory.mktemp("photo-run")
    config = out / "photos.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "output": str(out / "run")}))
    env = {**os.environ, "KERAS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "edgepipe", "run", str(config)], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out / "run"


def test_feature_extraction_reaches_the_linear_probe(photo_run):
    import keras
    from sklearn.linear_model import LogisticRegression

    from edgepipe.data import materialize

    training = read_json(photo_run / "training.json")
    dataset = materialize(read_json(photo_run / "dataset.json"), 64, 3)
    model = keras.models.load_model(photo_run / "model.keras", compile=False)
    features = keras.Model(model.inputs[0], model.get_layer("pool").output)
    x_train = features.predict(dataset.train.images.astype(np.float32), verbose=0)
    x_test = features.predict(dataset.heldout.images.astype(np.float32), verbose=0)
    probe = LogisticRegression(max_iter=5000).fit(x_train, dataset.train.labels)
    probe_top1 = float(np.mean(probe.predict(x_test) == dataset.heldout.labels))
    assert probe_top1 > 0.7  # ImageNet features separate these photos (random weights do not)
    assert training["top1"] >= probe_top1 - 0.05, (training["top1"], probe_top1)


def test_int8_artifacts_keep_to_the_budget_or_say_why(photo_run):
    results = read_json(photo_run / "results.json")
    records = {r["format"]: r for r in results["records"]}
    for name in ("tflite-int8", "onnx-int8"):
        record = records[name]
        assert record["status"] == "ok", record
        budget = record["int8_budget"]
        assert not [a for a in budget["attempts"] if "error" in a], budget["attempts"]  # every recipe ran
        for attempt in budget["attempts"]:
            if "kept in float" in attempt["recipe"]:
                assert attempt["kept_float"], attempt  # the sensitive layers were found and really kept
        chosen = next(a for a in budget["attempts"] if a["attempt"] == budget["chosen_attempt"])
        if budget["met"]:  # judged on the validation split, as the exporter must not see the test split
            assert chosen["drop_pp"] <= budget["budget_pp"]
        else:
            assert "no recipe stayed within" in budget["note"] and "McNemar" in budget["note"], budget
        assert budget["significance"]["images"] == budget["validation_images"]
        assert record["significance"]["mcnemar_p"] <= 1.0  # held-out images compared one by one with FP32
        assert abs(record["top1_change_pp"]) < 15  # on the held-out test split, INT8 stays close to FP32
