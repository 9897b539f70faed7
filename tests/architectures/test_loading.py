"""A user's own model file enters the pipeline; unsafe files are refused unless asked."""

import os
import shutil

import keras
import pytest

from edgepipe.architectures import build_classifier, check_weights_request, get_architecture
from edgepipe.architectures.loading import feature_extractor, load_keras_model, user_architecture
from edgepipe.errors import EdgepipeError
from tests.conftest import SHARED_WEIGHTS


def _small_model(with_lambda=False):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Lambda(lambda t: t / 255.0)(inputs) if with_lambda else keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_saved_model_file_becomes_a_backbone(tmp_path, suffix):
    path = tmp_path / f"mine{suffix}"
    _small_model().save(path)
    arch = user_architecture(str(path))
    assert arch.default_input_size == 16
    model = build_classifier(arch, 5, 16, 3, None, "none")
    assert model.output.shape[-1] == 5
    assert model.get_layer("backbone").output.shape[-1] == 4  # cut before pooling and the old classifier


def test_lambda_model_is_refused_unless_unsafe(tmp_path):
    path = tmp_path / "lambda.keras"
    _small_model(with_lambda=True).save(path)
    with pytest.raises(EdgepipeError, match="--unsafe-load"):
        load_keras_model(str(path))
    assert load_keras_model(str(path), unsafe=True) is not None


def test_savedmodel_directory_is_refused_up_front_with_the_way_out(tmp_path):
    """A SavedModel holds a traced graph: it built, then training crashed; now it is refused before any work."""
    _small_model().export(str(tmp_path / "sm"), verbose=False)
    with pytest.raises(EdgepipeError, match="SavedModel.*save it as .keras"):
        user_architecture(str(tmp_path / "sm"))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("text.h5", b"just some notes\n", "not an HDF5 file"),
        ("random.keras", bytes(range(256)) * 4, "not a zip archive"),
        ("truncated.keras", b"PK\x03\x04" + b"\x00" * 40, "could not load"),
    ],
)
def test_files_that_are_not_models_are_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(EdgepipeError, match=message):
        load_keras_model(str(path))


def test_missing_or_wrong_model_path(tmp_path):
    with pytest.raises(EdgepipeError, match="does not exist"):
        load_keras_model(str(tmp_path / "nope.keras"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(EdgepipeError, match="not a Keras model"):
        load_keras_model(str(tmp_path / "notes.txt"))


def test_feature_extractor_of_flat_model_gives_a_map():
    inputs = keras.Input((10,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(6)(inputs)))
    assert tuple(feature_extractor(model).output.shape[1:]) == (1, 1, 6)


def test_imagenet_requests_that_cannot_be_served():
    with pytest.raises(EdgepipeError, match="no published ImageNet weights"):
        check_weights_request(get_architecture("efficientnet_lite0"), "imagenet", 224, 3, None)
    with pytest.raises(EdgepipeError, match="only at input size 224"):
        check_weights_request(get_architecture("nasnet_mobile"), "imagenet", 160, 3, None)
    with pytest.raises(EdgepipeError, match="alpha"):
        check_weights_request(get_architecture("mobilenet_v2"), "imagenet", 224, 3, 0.6)


@pytest.mark.skipif(not SHARED_WEIGHTS.is_dir(), reason="genuine Keras ImageNet weights not found in ../shared/weights")
def test_genuine_imagenet_weights_load_through_the_keras_cache(tmp_path):
    """weights=imagenet goes through Keras' own cache ($KERAS_HOME/models), read when Keras starts: a fresh process."""
    import subprocess
    import sys

    models = tmp_path / "models"
    models.mkdir()
    for file in SHARED_WEIGHTS.glob("*.h5"):
        shutil.copy(file, models / file.name)
    script = f"""
import numpy as np, keras
from edgepipe.architectures import build_classifier
model = build_classifier("mobilenet_v2", 2, 224, 3, 0.35, "imagenet")
reference = keras.applications.MobileNetV2(alpha=0.35, include_top=False, input_shape=(224, 224, 3),
    weights="{models / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"}")
ours = model.get_layer("backbone").get_layer("Conv1").get_weights()[0]
assert np.array_equal(ours, reference.get_layer("Conv1").get_weights()[0])
assert abs(float(ours.std()) - 0.0) > 1e-3
print("imagenet weights loaded")
"""
    env = {**os.environ, "KERAS_HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert "imagenet weights loaded" in result.stdout, result.stderr[-2000:]


def test_a_model_with_edgepipes_own_layers_loads_in_a_fresh_process(tmp_path):
    """Models built with caffe- or torch-style preprocessing hold edgepipe's ChannelAffine layer; a process that
    only exports or benchmarks them has not imported it (it failed: 'Could not locate class ChannelAffine')."""
    import subprocess
    import sys

    import keras

    from edgepipe.architectures.layers import ChannelAffine

    inputs = keras.Input((8, 8, 3))
    x = ChannelAffine((1.0,), (-100.0, -110.0, -120.0), True, name="preprocess")(inputs)
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x))).save(
        tmp_path / "m.keras"
    )
    code = (
        "import sys, numpy as np; from edgepipe.architectures.loading import load_keras_model; "
        "from edgepipe.backends import create_runner; load_keras_model(sys.argv[1]); "
        "r = create_runner(sys.argv[1], threads=1).activate(); print(r.infer(np.zeros((1, 8, 8, 3))).shape)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m.keras")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(1, 2)" in result.stdout
