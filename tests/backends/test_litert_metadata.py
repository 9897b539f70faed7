"""TFLite metadata: edgepipe's TFLite files work in MediaPipe Tasks and say what they are.

A tiny raw-pixel classifier, trained on scikit-learn's digits (0, 1, 2), is
converted to float32 and full-integer (uint8 I/O) TFLite. With metadata
written, MediaPipe's ImageClassifier must load each file and name, for every
held-out digit, the class LiteRT's own output ranks first; LiteRT must give
bit-identical outputs; and the file must read back its edgepipe info and labels.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgepipe.backends.litert.metadata import read_metadata, write_metadata
from edgepipe.errors import EdgepipeError

LABELS = ["zero", "one", "two"]
FORMATS = ["tflite-fp32", "tflite-int8"]


def _info(fmt: str) -> dict:
    return {"format": fmt, "precision": "int8" if fmt.endswith("int8") else "fp32", "input_size": 32}


@pytest.fixture(scope="module")
def digits():
    """Digits 0, 1, 2 as 32x32 RGB uint8 raw pixels, split 75/25 into train and held-out sets."""
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = data.target < 3
    grey = np.round(data.images[keep] * (255 / 16)).clip(0, 255).astype(np.uint8)  # 8x8, values 0..16
    images = np.repeat(np.repeat(grey, 4, axis=1), 4, axis=2)[..., None].repeat(3, axis=3)
    order = np.random.default_rng(0).permutation(len(images))
    images, targets = images[order], data.target[keep][order]
    cut = int(0.75 * len(images))
    return images[:cut], targets[:cut], images[cut:], targets[cut:]


@pytest.fixture(scope="module")
def keras_model(digits):
    """A small CNN on raw pixels (Rescaling inside), trained until it is confident."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy")
    train_x, train_y, _, _ = digits
    model.fit(train_x.astype("float32"), train_y, epochs=8, batch_size=32, verbose=0)
    return model


def _convert(model, calibration=None, **flags) -> bytes:
    import warnings

    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if calibration is not None:  # full integer, uint8 input and output
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None].astype("float32")] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    for name, value in flags.items():
        setattr(converter, name, value)
    with (
        warnings.catch_warnings()
    ):  # "Statistics for quantized inputs were expected" does not apply to calibrated conversion
        warnings.simplefilter("ignore", UserWarning)
        return converter.convert()


@pytest.fixture(scope="module")
def plain(keras_model, digits):
    """The converter's files, without metadata."""
    return {"tflite-fp32": _convert(keras_model), "tflite-int8": _convert(keras_model, digits[0][::4])}


@pytest.fixture(scope="module")
def described(plain):
    return {
        fmt: write_metadata(
            model,
            name="digits",
            description="Digits 0-2 on raw pixels",
            version="3",
            labels=LABELS,
            edgepipe_info=_info(fmt),
        )
        for fmt, model in plain.items()
    }


def _litert_outputs(model: bytes, images: np.ndarray) -> np.ndarray:
    """LiteRT's raw output (uint8 for the INT8 file) for each image, fed as raw pixels."""
    return _litert_run(model, images)[0]


def _litert_run(model: bytes, images: np.ndarray) -> tuple[np.ndarray, tuple[float, int]]:
    """LiteRT's raw outputs for the images and the output's (scale, zero point); scale 0 when float."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    given, produced = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for image in images:
        interpreter.set_tensor(given["index"], image[None].astype(given["dtype"]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(produced["index"])[0].copy())
    return np.array(outputs), produced["quantization"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_file_reads_back_its_info_and_labels(described, tmp_path, fmt):
    path = tmp_path / "model.tflite"
    path.write_bytes(described[fmt])
    for source in (described[fmt], path, str(path)):
        meta = read_metadata(source)
        assert meta["edgepipe"] == _info(fmt)
        assert meta["labels"] == LABELS
        assert (meta["name"], meta["version"], meta["description"], meta["author"]) == (
            "digits",
            "3",
            "Digits 0-2 on raw pixels",
            "edgepipe",
        )


@pytest.mark.parametrize("fmt", FORMATS)
def test_litert_outputs_are_unchanged(plain, described, digits, fmt):
    held_out = digits[2]
    before, after = _litert_outputs(plain[fmt], held_out), _litert_outputs(described[fmt], held_out)
    assert before.dtype == after.dtype == (np.uint8 if fmt.endswith("int8") else np.float32)
    np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("fmt", FORMATS)
def test_mediapipe_names_the_class_litert_ranks_first(described, digits, tmp_path, fmt):
    mp = pytest.importorskip("mediapipe", reason="MediaPipe Tasks is not installed")
    from mediapipe.tasks.python import BaseOptions, vision

    path = tmp_path / "model.tflite"
    path.write_bytes(described[fmt])
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=1)
    _, _, images, targets = digits
    with vision.ImageClassifier.create_from_options(options) as classifier:
        top = [
            classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            .classifications[0]
            .categories[0]
            for image in images
        ]
    litert, (scale, zero_point) = _litert_run(described[fmt], images)
    expected = [LABELS[k] for k in litert.argmax(axis=1)]
    assert [c.category_name for c in top] == expected
    # MediaPipe fed the raw pixels the model expects: its scores are LiteRT's (dequantized) top probabilities.
    best = litert.max(axis=1).astype(np.float64)
    probabilities = (best - zero_point) * scale if scale else best
    np.testing.assert_allclose([c.score for c in top], probabilities, atol=1e-5)
    assert np.mean(litert.argmax(axis=1) == targets) > 0.8


@pytest.mark.parametrize("fmt", FORMATS)
def test_metadata_follows_the_standard_schema(described, fmt):
    """Parsed with MediaPipe's generated metadata bindings: identity normalization for float input only."""
    pytest.importorskip("mediapipe", reason="MediaPipe Tasks is not installed")
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema
    from tensorflow.lite.python import schema_py_generated as tflite

    model = tflite.Model.GetRootAsModel(described[fmt], 0)
    entries = {model.Metadata(i).Name(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    payload = model.Buffers(entries[b"TFLITE_METADATA"]).DataAsNumpy().tobytes()
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(payload, 0)
    meta = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAsModelMetadata(payload, 0))
    assert meta.minParserVersion == b"1.0.0"
    (subgraph,) = meta.subgraphMetadata
    (image,), (scores,) = subgraph.inputTensorMetadata, subgraph.outputTensorMetadata
    assert image.content.contentPropertiesType == schema.ContentProperties.ImageProperties
    assert image.content.contentProperties.colorSpace == schema.ColorSpaceType.RGB
    assert list(image.stats.min) == [0, 0, 0] and list(image.stats.max) == [255, 255, 255]
    if fmt.endswith("int8"):
        assert image.processUnits is None
    else:
        (unit,) = image.processUnits
        assert unit.optionsType == schema.ProcessUnitOptions.NormalizationOptions
        assert list(unit.options.mean) == [0, 0, 0] and list(unit.options.std) == [1, 1, 1]
    (labels,) = scores.associatedFiles
    assert (labels.name, labels.type) == (b"labels.txt", schema.AssociatedFileType.TENSOR_AXIS_LABELS)


def test_plain_tflite_reads_as_nones(plain):
    for model in plain.values():
        assert read_metadata(model) == {
            "edgepipe": None,
            "labels": None,
            "name": None,
            "version": None,
            "description": None,
            "author": None,
        }


def test_rewriting_replaces_the_metadata(described):
    from tensorflow.lite.python import schema_py_generated as tflite

    again = write_metadata(
        described["tflite-int8"],
        name="digits",
        description="d",
        version="4",
        labels=["0", "1", "2"],
        edgepipe_info={"format": "x"},
    )
    meta = read_metadata(again)
    assert (meta["version"], meta["labels"], meta["edgepipe"]) == ("4", ["0", "1", "2"], {"format": "x"})
    model = tflite.Model.GetRootAsModel(again, 0)
    names = [model.Metadata(i).Name() for i in range(model.MetadataLength())]
    assert names.count(b"TFLITE_METADATA") == names.count(b"edgepipe") == 1


def test_buffers_stored_after_the_flatbuffer_are_kept(keras_model, digits):
    """A converter may store weights after the flatbuffer at file offsets; the rewrite must carry them."""
    from tensorflow.lite.python import schema_py_generated as tflite

    model = _convert(keras_model, _experimental_use_buffer_offset=True)
    parsed = tflite.Model.GetRootAsModel(model, 0)
    if not any(parsed.Buffers(i).Offset() > 1 for i in range(parsed.BuffersLength())):
        pytest.skip("this TensorFlow's converter did not store buffers at offsets")
    described = write_metadata(model, name="d", description="d", version="1", labels=LABELS, edgepipe_info={})
    np.testing.assert_array_equal(_litert_outputs(described, digits[2][:20]), _litert_outputs(model, digits[2][:20]))


def test_labels_must_name_every_class(plain):
    with pytest.raises(EdgepipeError, match="2 labels for a model with 3 classes"):
        write_metadata(
            plain["tflite-fp32"], name="n", description="d", version="1", labels=["a", "b"], edgepipe_info={}
        )
    with pytest.raises(EdgepipeError, match="one line"):
        write_metadata(
            plain["tflite-fp32"], name="n", description="d", version="1", labels=["a", "b\nc", "d"], edgepipe_info={}
        )


def test_not_a_tflite_file_is_an_error():
    with pytest.raises(EdgepipeError, match="not a TFLite model"):
        read_metadata(b"\x00" * 64)
