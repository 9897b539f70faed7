"""Quantization-aware fine-tuning: the int8 simulation itself, batch-norm folding and fake-quant placement on
MobileNetV2, and a fine-tuned model through the real converters.

That model is a small MobileNetV2-shaped classifier (inverted residual blocks, one with a skip addition,
one with stride 2 and explicit padding) built by edgepipe's ``build_classifier`` and trained on
scikit-learn's digits 0-2, then made lossy on purpose without changing what it computes in float: one
channel of a projection's output is scaled up 300 times and the next convolution's weights on it scaled
down as much, so per-tensor int8 activations there have too coarse a step for the other channels.
Post-training INT8 loses most of its accuracy; fine-tuning with the int8 simulation recovers it.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgepipe.errors import EdgepipeError

SIZE = 16
CLASSES = 3
OUTLIER_SCALE = 300.0


def _block(x, expand: int, out: int, stride: int, name: str):
    import keras

    layers = keras.layers
    y = layers.Conv2D(expand, 1, use_bias=False, name=f"{name}_expand")(x)
    y = layers.BatchNormalization(momentum=0.9, name=f"{name}_expand_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_expand_relu")(y)
    if stride == 2:
        y = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(y)
    y = layers.DepthwiseConv2D(
        3, strides=stride, padding="same" if stride == 1 else "valid", use_bias=False, name=f"{name}_depthwise"
    )(y)
    y = layers.ReLU(6.0, name=f"{name}_depthwise_relu")(
        layers.BatchNormalization(momentum=0.9, name=f"{name}_depthwise_bn")(y)
    )
    y = layers.Conv2D(out, 1, use_bias=False, name=f"{name}_project")(y)
    y = layers.BatchNormalization(momentum=0.9, name=f"{name}_project_bn")(y)
    return layers.Add(name=f"{name}_add")([x, y]) if stride == 1 else y


def _mini_mobilenet(input_shape, alpha=None, weights=None, include_top=False, classes=1000):
    """A MobileNetV2 in miniature: conv-BN-ReLU6 stem, a residual block, a stride-2 block, conv-BN-ReLU6 top."""
    import keras

    layers = keras.layers
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.ReLU(6.0, name="stem_relu")(layers.BatchNormalization(momentum=0.9, name="stem_bn")(x))
    x = _block(x, 16, 8, 1, "b1")
    x = _block(x, 24, 16, 2, "b2")
    x = layers.Conv2D(32, 1, use_bias=False, name="top")(x)
    x = layers.ReLU(6.0, name="out_relu")(layers.BatchNormalization(momentum=0.9, name="top_bn")(x))
    return keras.Model(inputs, x, name="mini")


@pytest.fixture(scope="module")
def digits():
    """Digits 0-2 as 16x16 RGB raw pixels: (train images, labels, test images, labels)."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = data.target < CLASSES
    pixels = np.clip(data.images[keep] * 16, 0, 255)[..., None]
    images = np.clip(np.round(tf.image.resize(pixels, (SIZE, SIZE)).numpy()), 0, 255).astype(np.uint8).repeat(3, -1)
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], data.target[keep][order]
    return images[:360], labels[:360], images[360:], labels[360:]


def _mini_classifier():
    from edgepipe.architectures.base import TF_MINUS1_1, Architecture
    from edgepipe.architectures.classifier import build_classifier

    arch = Architecture("mini_mobilenet", "test", "", _mini_mobilenet, TF_MINUS1_1, SIZE, SIZE)
    return build_classifier(arch, CLASSES, SIZE, 3, None, "none")


def _trained(digits):
    import keras

    keras.utils.set_random_seed(0)
    model = _mini_classifier()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", jit_compile=False)
    model.fit(digits[0].astype(np.float32), digits[1], epochs=12, batch_size=32, verbose=0)
    return model


def _lossy(trained):
    """``trained`` with b2_project's channel 0 scaled up OUTLIER_SCALE times and undone by ``top``: the same
    function in float, a 300 times coarser int8 step for the other channels of that activation."""
    import keras

    model = keras.models.clone_model(trained)
    model.set_weights(trained.get_weights())
    backbone = model.get_layer("backbone")
    gamma, beta, mean, variance = backbone.get_layer("b2_project_bn").get_weights()
    gamma[0], beta[0] = gamma[0] * OUTLIER_SCALE, beta[0] * OUTLIER_SCALE
    backbone.get_layer("b2_project_bn").set_weights([gamma, beta, mean, variance])
    kernel, *rest = backbone.get_layer("top").get_weights()
    kernel[:, :, 0, :] /= OUTLIER_SCALE
    backbone.get_layer("top").set_weights([kernel, *rest])
    return model


def _probabilities(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model(images.astype(np.float32), training=False))


def _full_integer(model, calibration: np.ndarray) -> bytes:
    """The TFLite converter's full-integer model with uint8 input/output, as edgepipe's first recipe makes it."""
    import tensorflow as tf

    from edgepipe.quiet import native_output_suppressed

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None].astype(np.float32)] for image in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    with native_output_suppressed():
        return converter.convert()


def _interpreter(model_bytes: bytes, batch: int):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], (batch, SIZE, SIZE, 3))
    interpreter.allocate_tensors()
    return interpreter


def _int8_predictions(model_bytes: bytes, images: np.ndarray) -> np.ndarray:
    interpreter = _interpreter(model_bytes, len(images))
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = source["quantization"]
    interpreter.set_tensor(source["index"], np.clip(np.round(images / scale + zero_point), 0, 255).astype(np.uint8))
    interpreter.invoke()
    return interpreter.get_tensor(target["index"]).argmax(1)


def _assert_full_integer(model_bytes: bytes) -> None:
    interpreter = _interpreter(model_bytes, 1)
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    assert interpreter.get_output_details()[0]["dtype"] == np.uint8
    dtypes = {np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}
    assert "float32" not in dtypes and "int8" in dtypes, dtypes


# ------------------------------------------------------------------------------- the fine-tuned model
# One test, first in the file: its model is trained and fine-tuned once however pytest-xdist spreads the
# tests over its workers, and starts first.


def test_fine_tuning_recovers_what_post_training_int8_loses(digits, tmp_path):
    from edgepipe.quantization.qat import qat_finetune

    lossy = _lossy(_trained(digits))
    backbone = lossy.get_layer("backbone")
    for layer in [backbone, *backbone.layers]:  # frozen, as edgepipe saves a classifier after feature extraction
        layer.trainable = False
    before = [w.copy() for w in lossy.get_weights()]
    lines: list[str] = []
    model, record = qat_finetune(
        lossy, digits[0], digits[1], epochs=3, learning_rate=1e-3, validation=(digits[2], digits[3]), echo=lines.append
    )
    assert all(np.array_equal(a, b) for a, b in zip(lossy.get_weights(), before))  # the original is left alone
    _check_names_shapes_and_weights(model, lossy)
    _check_record(record, lines)
    _check_full_integer_tflite(model, lossy, digits)
    _check_activation_ranges_mode(model, record["activation_ranges"], digits)
    _check_onnx_qdq(model, digits, tmp_path)


def _check_names_shapes_and_weights(model, lossy) -> None:
    from edgepipe.quantization.qat import fold_batchnorm

    assert [layer.name for layer in model.layers] == [layer.name for layer in lossy.layers]
    assert model.inputs[0].name == lossy.inputs[0].name == "image"
    assert model.inputs[0].shape == lossy.inputs[0].shape and model.outputs[0].shape == lossy.outputs[0].shape
    for name in ("preprocess", "backbone", "pool", "dropout", "classifier"):
        assert model.get_layer(name).output.shape == lossy.get_layer(name).output.shape
    backbone = model.get_layer("backbone")
    assert not [layer for layer in backbone.layers if type(layer).__name__ == "BatchNormalization"]
    assert not backbone.trainable and not any(layer.trainable for layer in backbone.layers)  # flags kept
    assert len(model.trainable_weights) == 2
    folded = fold_batchnorm(lossy)[0].get_layer("backbone")
    for name in ("stem", "b1_depthwise", "b2_project", "top"):  # fine-tuned though frozen, not just folded
        kernel, folded_kernel = backbone.get_layer(name).kernel.numpy(), folded.get_layer(name).kernel.numpy()
        assert not np.allclose(kernel, folded_kernel, atol=1e-6), name
    kernel = model.get_layer("classifier").kernel.numpy()
    levels = kernel / (np.abs(kernel).max(axis=0) / 127)
    assert np.allclose(levels, np.round(levels), atol=1e-3)  # stored on its int8 grid


def _check_record(record: dict, lines: list[str]) -> None:
    assert record["epochs"] == record["epochs_completed"] == 3 and record["learning_rate"] == 1e-3
    assert record["fake_quantized_weights"] == [
        "backbone/stem",
        "backbone/b1_expand",
        "backbone/b1_depthwise",
        "backbone/b1_project",
        "backbone/b2_expand",
        "backbone/b2_depthwise",
        "backbone/b2_project",
        "backbone/top",
        "classifier",
    ]
    assert "backbone/b2_project" in record["fake_quantized_activations"]
    assert record["folded_batchnorm"]["b2_project"] == "b2_project_bn"
    low, high = record["activation_ranges"]["backbone/b2_project"]
    assert high - low > 100  # the outlier channel's range, learned
    assert 0 < record["training_seconds"] <= record["seconds"] and len(record["loss"]) == 3
    figures = record["validation"]
    assert figures["images"] == 177
    assert figures["fp32_top1"] > 0.9 and figures["fake_quant_top1_before"] < 0.7  # the simulation shows the loss
    assert figures["fake_quant_top1_after"] > 0.9 and figures["float_top1_after"] > 0.9
    assert len(lines) == 3 and lines[0].startswith("    QAT epoch 1/3")


def _check_full_integer_tflite(model, lossy, digits) -> None:
    """Full-integer TFLite of both: uint8 input/output, no float tensors; post-training INT8 of the lossy model
    loses most of its accuracy, the fine-tuned model's keeps it and agrees with its own float outputs more."""
    calibration, images, labels = digits[0][::12], digits[2], digits[3]
    post_training, fine_tuned = _full_integer(lossy, calibration), _full_integer(model, calibration)
    _assert_full_integer(post_training)
    _assert_full_integer(fine_tuned)
    reference = _probabilities(lossy, images).argmax(1)
    ptq, qat = _int8_predictions(post_training, images), _int8_predictions(fine_tuned, images)
    assert (reference == labels).mean() > 0.9
    assert (ptq == labels).mean() < 0.7
    assert (qat == labels).mean() >= (ptq == labels).mean() + 0.2
    assert (qat == _probabilities(model, images).argmax(1)).mean() >= (ptq == reference).mean()


def _check_activation_ranges_mode(model, ranges: dict, digits) -> None:
    """The converter quantizes a tensor with its learned range when the fixed FakeQuant op is kept."""
    from edgepipe.quantization.qat import with_activation_ranges

    kept = with_activation_ranges(model, ranges)
    assert kept.get_layer("backbone").get_layer("b2_project_range") is not None
    assert kept.layers[-1].name == "classifier" and kept.inputs[0].name == "image"
    converted = _full_integer(kept, digits[0][::12])
    _assert_full_integer(converted)
    low, high = ranges["backbone/b2_project"]
    # the range op is fused away; the convolution's output tensor carries the learned range
    scales = [
        d["quantization"][0]
        for d in _interpreter(converted, 1).get_tensor_details()
        if "b2_project" in d["name"] and d["quantization"][0] > 0
    ]
    assert np.isclose(scales, (high - low) / 255, rtol=1e-3).any(), (scales, (high - low) / 255)
    assert (_int8_predictions(converted, digits[2]) == digits[3]).mean() > 0.9


def _check_onnx_qdq(model, digits, tmp_path) -> None:
    """edgepipe's own onnx-int8 export (tf2onnx, ONNX Runtime QDQ; onnx.checker full check before writing)."""
    import onnx
    import onnxruntime as ort

    from edgepipe.backends import ExportContext
    from edgepipe.backends.onnxruntime.export import export_onnx_int8
    from edgepipe.calibration import draw

    ctx = ExportContext(
        model, ["0", "1", "2"], {}, calibration=draw(digits[0], digits[1], 24, 0), workdir_parent=tmp_path / "work"
    )
    path = tmp_path / "qat.onnx"
    try:
        export_onnx_int8(ctx, path)
    finally:
        ctx.close()
    assert sum(node.op_type == "QuantizeLinear" for node in onnx.load(str(path)).graph.node) > 5
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    predictions = session.run(None, {session.get_inputs()[0].name: digits[2].astype(np.float32)})[0].argmax(1)
    assert (predictions == digits[3]).mean() > 0.9


# ------------------------------------------------------------------------------------ the simulation


def test_fake_quant_kernel_rounds_each_output_channel_to_symmetric_int8():
    import tensorflow as tf

    from edgepipe.quantization.qat import fake_quant_kernel

    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 1, (3, 3, 4, 5)).astype(np.float32) * np.array([1e-3, 0.1, 1, 10, 0], np.float32)
    rounded = fake_quant_kernel(tf.constant(kernel)).numpy()
    for channel in range(4):  # every channel keeps its own max and lies on its own grid of max / 127
        step = np.abs(kernel[..., channel]).max() / 127
        assert np.isclose(np.abs(rounded[..., channel]).max(), step * 127, rtol=1e-5)
        levels = rounded[..., channel] / step
        assert np.allclose(levels, np.round(levels), atol=1e-3) and np.abs(levels).max() <= 127.001
        assert np.abs(rounded[..., channel] - kernel[..., channel]).max() <= step / 2 * 1.001
    assert not np.any(rounded[..., 4])  # an all-zero channel stays zero (no division by a zero range)

    depthwise = rng.normal(0, 1, (3, 3, 2, 3)).astype(np.float32)
    depthwise[:, :, 1, 2] *= 100  # one (input, multiplier) channel far larger: the others keep their own step
    rounded = fake_quant_kernel(tf.constant(depthwise), depthwise=True).numpy()
    small_step = np.abs(depthwise[:, :, 0, 0]).max() / 127
    assert np.abs(rounded[:, :, 0, 0] - depthwise[:, :, 0, 0]).max() <= small_step / 2 * 1.001

    variable = tf.Variable(kernel)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fake_quant_kernel(variable) * 3.0)
    assert np.allclose(tape.gradient(loss, variable).numpy(), 3.0)  # straight through the rounding


def test_activation_range_follows_batch_min_max_and_rounds_to_256_levels():
    import tensorflow as tf

    from edgepipe.quantization.qat import ActivationRange

    layer = ActivationRange(decay=0.5)
    batches = [np.array([[-1.0, 2.0]]), np.array([[-3.0, 4.0]]), np.array([[1.0, 8.0]]), np.array([[0.5, 0.5]])]
    expected_low, expected_high = [], []
    for i, batch in enumerate(batches):
        layer(tf.constant(batch, tf.float32), training=True)
        weight = max(1 / (i + 1), 0.5)  # running mean, then the moving average
        low, high = min(batch.min(), 0.0), max(batch.max(), 0.0)  # zero is always inside the range
        expected_low.append(low if i == 0 else expected_low[-1] + weight * (low - expected_low[-1]))
        expected_high.append(high if i == 0 else expected_high[-1] + weight * (high - expected_high[-1]))
        assert np.isclose(layer.minimum.numpy(), expected_low[-1])
        assert np.isclose(layer.maximum.numpy(), expected_high[-1])

    frozen = (layer.minimum.numpy(), layer.maximum.numpy())
    values = np.linspace(-10, 10, 5001, dtype=np.float32)[None]
    out = layer(tf.constant(values), training=False).numpy()
    assert (layer.minimum.numpy(), layer.maximum.numpy()) == frozen  # inference does not move the range
    assert len(np.unique(out)) <= 256
    assert np.isclose(out.min(), frozen[0], atol=0.05) and np.isclose(out.max(), frozen[1], atol=0.05)
    assert 0.0 in out  # zero exactly representable


@pytest.fixture(scope="module")
def mobilenet():
    """MobileNetV2 alpha 0.35 as edgepipe builds it, batch-norm statistics made far from identity."""
    from edgepipe.architectures.classifier import build_classifier

    model = build_classifier("mobilenet_v2", CLASSES, 32, 3, 0.35, "none")
    rng = np.random.default_rng(0)
    for layer in model.get_layer("backbone").layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 2, gamma.shape),
                    rng.normal(0, 0.5, beta.shape),
                    rng.normal(0, 0.5, mean.shape),
                    rng.uniform(0.5, 2, variance.shape),
                ]
            )
    return model


def test_folding_mobilenet_v2_removes_every_batchnorm_and_keeps_its_outputs(mobilenet):
    from edgepipe.quantization.qat import fold_batchnorm

    def kinds(model):
        return [type(layer).__name__ for layer in model.get_layer("backbone").layers]

    def features(model):
        return np.asarray(model.get_layer("backbone")(model.get_layer("preprocess")(images), training=False))

    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    folded, folds = fold_batchnorm(mobilenet)
    assert kinds(mobilenet).count("BatchNormalization") == 52 and len(folds) == 52
    assert "BatchNormalization" not in kinds(folded) and folds["Conv1"] == "bn_Conv1"
    assert [layer.name for layer in folded.layers] == [layer.name for layer in mobilenet.layers]
    reference = features(mobilenet)
    assert np.abs(features(folded) - reference).max() <= 1e-4 * np.abs(reference).max()
    assert np.allclose(_probabilities(folded, images), _probabilities(mobilenet, images), atol=1e-5)
    assert "BatchNormalization" in kinds(mobilenet)  # the original is left alone


def test_fake_quant_sits_where_the_converters_quantize_mobilenet_v2(mobilenet):
    from edgepipe.quantization.qat import FakeQuantized, fold_batchnorm

    graph = FakeQuantized(fold_batchnorm(mobilenet)[0])
    assert len(graph.kernels) == 35 + 17 + 1  # every Conv2D, DepthwiseConv2D and the classifier
    ranges = set(graph.ranges)
    # after the fused ReLU6, not between the convolution and it; after projections without one; after adds
    for path in (
        "preprocess",
        "backbone/Conv1_relu",
        "backbone/block_1_depthwise_relu",
        "backbone/block_1_project",
        "backbone/block_2_add",
        "backbone/out_relu",
        "pool",
        "classifier",
    ):
        assert path in ranges, path
    for path in ("backbone/Conv1", "backbone/block_1_depthwise", "backbone/block_1_pad", "backbone", "dropout"):
        assert path not in ranges, path
    # preprocess, Conv1_relu, the first block's two, three in each of the 16 others, 10 adds, out_relu, pool, logits
    assert len(ranges) == 1 + 1 + 2 + 16 * 3 + 10 + 1 + 2


def test_models_edgepipe_did_not_build_are_refused(digits):
    import keras

    from edgepipe.quantization.qat import qat_finetune, unsupported_reason

    sequential = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    assert "not a Functional" in unsupported_reason(sequential)
    inputs = keras.Input((SIZE, SIZE, 3))
    renamed = keras.Model(inputs, keras.layers.Dense(3, name="head")(keras.layers.Flatten()(inputs)))
    assert "no layer named preprocess" in unsupported_reason(renamed)
    built = _mini_classifier()
    assert unsupported_reason(built) is None
    with pytest.raises(EdgepipeError, match="cannot fine-tune"):
        qat_finetune(renamed, digits[0], digits[1])
    with pytest.raises(EdgepipeError, match="the model takes"):
        qat_finetune(built, digits[0][:, :8], digits[1])


def test_time_limit_stops_fine_tuning_early(digits):
    from edgepipe.quantization.qat import qat_finetune

    built = _mini_classifier()
    model, record = qat_finetune(
        built, digits[0][:64], digits[1][:64], epochs=50, batch_size=16, max_seconds=0, echo=lambda line: None
    )
    assert record["stopped_at_time_limit"] and record["epochs_completed"] <= 1
    assert [layer.name for layer in model.layers] == [layer.name for layer in built.layers]


def test_export_recipe_fine_tunes_then_converts_through_a_context_of_its_own(digits, tmp_path):
    import tensorflow as tf

    from edgepipe.backends import ExportContext
    from edgepipe.calibration import draw
    from edgepipe.quantization.budget import within_budget
    from edgepipe.quantization.qat import qat_recipe

    built = _mini_classifier()
    calibration = draw(digits[0], digits[1], 12, 0)
    ctx = ExportContext(
        built,
        ["0", "1", "2"],
        {},
        calibration=calibration,
        workdir_parent=tmp_path / "work",
        calibration_pool=(digits[0][:48], digits[1][:48]),
        validation=(digits[2][:30], digits[3][:30]),
    )
    seen = {}

    def convert(fine_tuned, path):
        seen.update(model=fine_tuned.model, saved=fine_tuned.saved_model(), workdir=fine_tuned.workdir)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(fine_tuned.saved_model()))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None].astype(np.float32)] for image in calibration.images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.uint8
        path.write_bytes(converter.convert())
        return {"quantizer": "TFLite converter"}

    try:
        original_saved_model = ctx.saved_model()  # as an earlier recipe leaves it, beside the work folder
        factory = qat_recipe(ctx, convert, "the TFLite converter", keep_ranges=True, epochs=1)
        details = within_budget(ctx, tmp_path / "qat.tflite", "tflite-int8", [factory])
        attempt = details["int8_budget"].attempts[0]
        assert attempt["recipe"] == (
            "quantization-aware fine-tuning (1 epoch on 48 training images, int8 simulated), then the TFLite converter"
        )
        assert details["quantizer"] == "TFLite converter" and details["qat"]["epochs_completed"] == 1
        assert details["qat"]["fake_quantized_weights"] == 9 and details["qat"]["validation"]["images"] == 30
        assert seen["model"] is not built
        assert seen["model"].get_layer("backbone").get_layer("out_relu_range") is not None  # ranges kept
        assert seen["saved"] != original_saved_model and ctx.workdir in seen["saved"].parents  # its own SavedModel
        assert not seen["saved"].exists() and not seen["workdir"].exists()  # removed after
        assert ctx.workdir.exists() and original_saved_model.exists()
        _assert_full_integer((tmp_path / "qat.tflite").read_bytes())
        from edgepipe.config import QatConfig
        from edgepipe.quantization.budget import Skipped

        skipped = qat_recipe(ExportContext(built, ["0", "1", "2"], {}), convert, "x")()
        assert isinstance(skipped, Skipped) and "no training images" in skipped.reason
        off = ExportContext(built, ["0", "1", "2"], {}, calibration_pool=ctx.calibration_pool, qat=QatConfig(epochs=0))
        assert qat_recipe(off, convert, "x")().reason == "export.qat.epochs is 0"
    finally:
        ctx.close()


# ------------------------------------------------------------------------------ in edgepipe's export


def test_export_fine_tunes_last_when_no_post_training_recipe_is_within_budget(digits, tmp_path):
    """Through ``edgepipe.export``: every post-training TFLite recipe loses accuracy on the lossy model (a budget of
    0 pp asks for none lost), so quantization-aware fine-tuning runs last; its file is fully integer, beats the plain
    recipe, and the record and report say what it did and cost."""
    import edgepipe
    from edgepipe.report.markdown import qat_lines

    lossy = _lossy(_trained(digits))
    images, labels = np.concatenate([digits[0], digits[2]]), np.concatenate([digits[1], digits[3]])
    lines: list[str] = []
    exported = edgepipe.export(
        lossy,
        ["tflite-int8"],
        calibration=(images, labels),
        labels=["0", "1", "2"],
        output=tmp_path / "out",
        accuracy_budget_pp=0.0,
        isolation="none",
        qat={"epochs": 2, "learning_rate": 1e-3},
        echo=lines.append,
    )
    artifact = exported.artifacts[0]
    budget = artifact.int8_budget
    fine_tuned = budget.attempts[-1]
    assert fine_tuned["recipe"].startswith("quantization-aware fine-tuning (2 epochs on ")
    assert fine_tuned["recipe"].endswith("then the TFLite converter with the learned activation ranges")
    assert fine_tuned["qat"]["epochs_completed"] == 2 and fine_tuned["qat"]["training_seconds"] > 0
    assert fine_tuned["top1"] > budget.attempts[0]["top1"] + 0.15
    assert any(line.startswith("    QAT epoch 2/2") for line in lines)
    _assert_full_integer((exported.index.parent / artifact.file).read_bytes())
    shown = qat_lines(fine_tuned)
    assert len(shown) == 1 and "quantization-aware fine-tuning: 2 of 2 epoch(s)" in shown[0]
    assert "simulated int8 top-1" in shown[0]


def test_onnx_fine_tuning_recipe_writes_a_qdq_file_of_the_fine_tuned_model(digits, tmp_path):
    import onnx

    from edgepipe.backends import ExportContext
    from edgepipe.backends.onnxruntime.export import _qat_recipe
    from edgepipe.calibration import draw

    built = _mini_classifier()
    ctx = ExportContext(
        built,
        ["0", "1", "2"],
        {},
        calibration=draw(digits[0], digits[1], 12, 0),
        workdir_parent=tmp_path / "work",
        calibration_pool=(digits[0][:48], digits[1][:48]),
    )
    try:
        attempt = _qat_recipe(ctx, epochs=1)()
        assert attempt.description.endswith("then ONNX Runtime static QDQ (minmax calibration)")
        details = attempt.build(tmp_path / "qat.onnx")
    finally:
        ctx.close()
    assert details["qat"]["epochs_completed"] == 1 and details["qdq_nodes"] > 5
    graph = onnx.load(str(tmp_path / "qat.onnx")).graph
    assert sum(node.op_type == "QuantizeLinear" for node in graph.node) > 5
