"""Full-integer TFLite through AI Edge Quantizer: integer input/output, ops kept in float exactly as asked,
candidate ops, sensitivity by measured effect, the int32 bias repair, and the budget recipe that uses them.

The models are small and built here: a trained three-class colour classifier, and two variants made
lossy or fragile on purpose (an op whose int8 weights lose the signal; a near-dead channel whose
int32 bias overflows).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgepipe.backends import ExportContext
from edgepipe.backends.litert import aeq
from edgepipe.backends.litert.backend import LiteRTExportOptions
from edgepipe.calibration import CalibrationSet
from edgepipe.errors import EdgepipeError

SIZE = 16
CLASSES = 3


def _images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy raw-pixel images whose class is the dominant colour channel (a mixture, so some are close calls)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % CLASSES
    base = rng.uniform(40, 110, (count, 1, 1, 1)) + rng.uniform(-10, 10, (count, 1, 1, 3))
    base[np.arange(count), 0, 0, labels] += rng.uniform(10, 60, count)
    images = base + rng.normal(0, 30, (count, SIZE, SIZE, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels


def _classifier():
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="depthwise")(x)
    x = keras.layers.Conv2D(8, 1, activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="module")
def data():
    return {"train": _images(96, 0), "val": _images(90, 1)}


@pytest.fixture(scope="module")
def trained(data):
    import keras

    keras.utils.set_random_seed(0)
    model = _classifier()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    images, labels = data["train"]
    model.fit(images.astype(np.float32), labels, epochs=30, batch_size=16, verbose=0)
    return model


def _variant(model, change):
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    change(copy)
    return copy


def _lossy(model):
    """Depthwise channel 7 made dead (exactly 0) and conv_b given a large weight on it: the float model
    ignores it, but every output channel's int8 weight step grows so large the other weights round away."""

    def change(m):
        kernel, bias = m.get_layer("depthwise").get_weights()
        kernel[..., 7, :], bias[7] = 0.0, 0.0
        m.get_layer("depthwise").set_weights([kernel, bias])
        kernel, bias = m.get_layer("conv_b").get_weights()
        kernel[0, 0, 7, :] = 100 * np.abs(kernel).max()
        m.get_layer("conv_b").set_weights([kernel, bias])

    return _variant(model, change)


def _near_dead(model):
    """conv_a channel 3 near dead: weights of 1e-7 and a bias of 0.5, so it outputs a constant 0.5 that
    the rest of the model uses; at AEQ's own weight scale its int32 bias overflows."""

    def change(m):
        kernel, bias = m.get_layer("conv_a").get_weights()
        kernel[..., 3], bias[3] = 1e-7, 0.5
        m.get_layer("conv_a").set_weights([kernel, bias])

    return _variant(model, change)


class _Lazy(dict):
    """A mapping that makes each value on first use, so a test worker builds only what its tests need."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, key):
        self[key] = value = self.make(key)
        return value


@pytest.fixture(scope="module")
def models(trained):
    return _Lazy(
        lambda name: {
            "trained": lambda: trained,
            "lossy": lambda: _lossy(trained),
            "near_dead": lambda: _near_dead(trained),
        }[name]()
    )


@pytest.fixture(scope="module")
def converted(tmp_path_factory, models):
    """Float TFLite files (through edgepipe's own SavedModel conversion) of the trained model and its variants."""
    from edgepipe.backends.litert.export import _convert, _converter

    def convert(name: str) -> bytes:
        ctx = ExportContext(models[name], ["r", "g", "b"], {}, workdir_parent=tmp_path_factory.mktemp(name))
        try:
            return _convert(_converter(ctx))
        finally:
            ctx.close()

    return _Lazy(convert)


@pytest.fixture(scope="module")
def calibrated(converted, data):
    return _Lazy(lambda name: aeq.Calibrated(converted[name], data["train"][0][:32], "uint8"))


def _float_ops(model: bytes) -> list[tuple[str, str]]:
    """(op type, first output name) of every op LiteRT runs on a float32 tensor, QUANTIZE/DEQUANTIZE aside."""
    from edgepipe.backends.litert.runner import open_interpreter

    interpreter = open_interpreter(model, xnnpack=False)
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():
        touched = [i for i in [*op["inputs"], *op["outputs"]] if i in tensors]
        if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE") and any(tensors[i]["dtype"] == np.float32 for i in touched):
            found.append((op["op_name"], tensors[op["outputs"][0]]["name"]))
    return found


def test_aeq_int8_has_integer_input_output_and_no_float_tensors(calibrated, converted, data):
    from edgepipe.backends.litert.export import tensor_types

    for io in ("uint8", "int8"):
        quantizer = (
            calibrated["trained"] if io == "uint8" else aeq.Calibrated(converted["trained"], data["train"][0][:32], io)
        )
        types = tensor_types(quantizer.quantize())
        assert types["input_dtype"] == io and types["output_dtype"] == io
        assert "float32" not in types["tensor_dtypes"] and types["tensor_dtypes"].get("int8")
    # and it still classifies like the float model
    images = data["val"][0]
    reference = aeq.predict(converted["trained"], images)
    _, agreement = aeq.divergence(aeq.predict(calibrated["trained"].quantize(), images), reference)
    assert agreement >= 0.9


def test_ops_kept_in_float_are_exactly_the_float_ones(calibrated):
    from edgepipe.backends.litert.export import tensor_types

    quantizer = calibrated["trained"]
    kept = [op for op in aeq.candidates(quantizer.float_model) if op.type in ("DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert len(kept) == 2
    model = quantizer.quantize(kept)
    assert sorted(_float_ops(model)) == sorted((op.type, op.scope.rstrip(";")) for op in kept)
    types = tensor_types(model)
    assert types["input_dtype"] == "uint8" and types["output_dtype"] == "uint8"


def test_an_op_left_in_float_unasked_is_caught(calibrated):
    quantizer = calibrated["trained"]
    kept = [op for op in aeq.candidates(quantizer.float_model) if op.type == "FULLY_CONNECTED"]
    with pytest.raises(EdgepipeError, match="left in float"):
        aeq.check(quantizer.quantize(kept), "uint8", keep_float=[])


def test_candidates_exclude_preprocessing_input_output_and_softmax(calibrated):
    every = calibrated["trained"].ops
    chosen = aeq.candidates(calibrated["trained"].float_model)
    preprocessing = [op for op in every if "preprocess" in op.name]
    assert sorted(op.type for op in preprocessing) == ["ADD", "MUL"]  # the Rescaling layer, as converted
    assert not set(preprocessing) & set(chosen)
    assert every[-1].type == "SOFTMAX" and every[-1] not in chosen
    assert [op.type for op in chosen] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "MEAN", "FULLY_CONNECTED"]


def test_sensitivity_ranks_the_op_whose_quantization_hurts_first(calibrated, models, converted, data):
    model, tflite = models["lossy"], converted["lossy"]
    images = data["val"][0]
    reference = model.predict(images.astype(np.float32), verbose=0)
    quantizer = calibrated["lossy"]
    measure = aeq.probe(lambda m: aeq.predict(m, images), reference)
    baseline, ranked = aeq.rank_by_effect(quantizer, aeq.candidates(tflite), measure)
    assert len(ranked) == 5
    first, second = ranked[0], ranked[1]
    assert "conv_b" in first.op.name and first.op.type == "CONV_2D"
    # keeping conv_b in float removes most of the divergence; no other op comes close
    assert first.kl < 0.3 * baseline.kl and baseline.kl - second.kl < 0.3 * (baseline.kl - first.kl)
    assert first.agreement > baseline.agreement


def test_each_op_kept_lowers_the_divergence_of_the_model_kept_before_it(calibrated, models, converted, data):
    """With a budget no model meets, the search walks the ranking: every op it keeps lowers the cumulative
    divergence, every op it skips would not have, it stops at the limit, and it returns the most accurate step."""
    model, tflite = models["lossy"], converted["lossy"]
    images, labels = data["val"]
    reference = model.predict(images.astype(np.float32), verbose=0)
    measure = aeq.probe(lambda m: aeq.predict(m, images), reference)
    quantizer = calibrated["lossy"]
    baseline, ranked = aeq.rank_by_effect(quantizer, aeq.candidates(tflite), measure)

    def never(m: bytes) -> tuple[float, bool]:
        return float(np.mean(aeq.predict(m, images).argmax(1) == labels)), False

    chosen = aeq.fewest_kept_float(quantizer, ranked, baseline, measure, never, limit=2)
    assert not chosen.met and 1 <= len(chosen.kept) <= 2
    previous = baseline.kl
    for step in chosen.steps:
        if "skipped" in step:
            assert step["kl"] >= round(previous, 6)
        else:
            assert step["kl"] < round(previous, 6) and step["within_budget"] is False
            previous = step["kl"]
    kept_steps = [s for s in chosen.steps if "kept" in s]
    assert len(kept_steps) <= 2 and [s["op"] for s in kept_steps][: len(chosen.kept)] == [
        e.op.name for e in chosen.kept
    ]
    best = max(s["top1"] for s in kept_steps)
    assert next(s for s in kept_steps if s["top1"] == best)["kept"] == len(chosen.kept)


def test_bias_overflow_is_repaired_and_outputs_stay_correct(calibrated, converted, data):
    quantizer = calibrated["near_dead"]
    assert [(w["type"], w["channels"]) for w in quantizer.widened] == [("CONV_2D", 1)]
    assert "conv_a" in quantizer.widened[0]["op"]
    model = quantizer.quantize()
    images = data["val"][0]
    reference = aeq.predict(converted["near_dead"], images)
    probabilities = aeq.predict(model, images)
    _, agreement = aeq.divergence(probabilities, reference)
    assert agreement >= 0.9 and np.abs(probabilities - reference).mean() < 0.05
    assert _dequantized_bias(model, "conv_a")[3] == pytest.approx(0.5, rel=0.01)
    # without the repair AEQ saturates that bias (its sign flips), and the check says so
    quantizer.weight_ranges, widened = {}, quantizer.weight_ranges
    try:
        with pytest.raises(EdgepipeError, match="overflows"):
            quantizer.quantize()
    finally:
        quantizer.weight_ranges = widened


def _dequantized_bias(model: bytes, layer: str) -> np.ndarray:
    from edgepipe.backends.litert.runner import open_interpreter

    interpreter = open_interpreter(model, xnnpack=False)
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    for op in interpreter._get_ops_details():
        if op["op_name"] == "CONV_2D" and layer in tensors[op["outputs"][0]]["name"]:
            bias = tensors[op["inputs"][2]]
            return interpreter.get_tensor(bias["index"]) * bias["quantization_parameters"]["scales"]
    raise AssertionError(f"no CONV_2D of {layer}")


def test_the_stem_is_the_preprocessing_and_the_first_convolution(converted):
    stem = aeq.stem(converted["trained"])
    assert [op.type for op in stem] == ["MUL", "ADD", "CONV_2D"]
    assert "preprocess" in stem[0].name and "preprocess" in stem[1].name and "conv_a" in stem[2].name


def _budget_context(model, data, tmp_path, **options) -> ExportContext:
    """An export of ``model`` judged on validation images labelled by the model itself (FP32 top-1 = 100%),
    so any changed prediction counts against the budget."""
    from edgepipe.verification import ArtifactScorer

    images, _ = data["val"]
    reference = model.predict(images.astype(np.float32), verbose=0)
    labels = reference.argmax(1)
    train, train_labels = data["train"]
    return ExportContext(
        model,
        ["r", "g", "b"],
        {},
        CalibrationSet(train[:32], train_labels[:32], 0),
        workdir_parent=tmp_path,
        score=ArtifactScorer(images, labels, 1),
        reference_top1=1.0,
        validation=(images, labels),
        reference_probabilities=reference,
        accuracy_budget_pp=1.0,
        options={"litert": LiteRTExportOptions(**options)},
    )


def _export_int8(model, data, tmp_path, **options) -> tuple[dict, bytes]:
    from edgepipe.backends.litert.export import export_tflite_int8

    ctx = _budget_context(model, data, tmp_path, **options)
    path = tmp_path / "int8.tflite"
    try:
        details = export_tflite_int8(ctx, path)
    finally:
        ctx.close()
    return details, path.read_bytes()


def _weight_scales(model: bytes) -> dict[str, int]:
    """{weighted op type and output name: how many scales its int8 weights have}."""
    from edgepipe.backends.litert.runner import open_interpreter

    interpreter = open_interpreter(model, xnnpack=False)
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    return {
        f"{op['op_name']} {tensors[op['outputs'][0]]['name']}": len(
            tensors[op["inputs"][1]]["quantization_parameters"]["scales"]
        )
        for op in interpreter._get_ops_details()
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D") and tensors[op["inputs"][1]]["dtype"] == np.int8
    }


def test_first_int8_recipe_keeps_only_the_input_stem_in_float_within_the_budget(models, data, tmp_path):
    from edgepipe.backends.litert.export import tensor_types

    details, model = _export_int8(models["trained"], data, tmp_path, float_stem=True)
    budget = details["int8_budget"]
    assert budget.attempts[0]["recipe"].startswith("AI Edge Quantizer, the input stem (3 ops) kept in float")
    assert budget.met and budget.chosen_attempt == 1 and len(budget.attempts) == 1
    floats = _float_ops(model)
    assert [op for op, _ in floats] == ["MUL", "ADD", "CONV_2D"] and "conv_a" in floats[-1][1]
    assert len(details["kept_float"]) == 3 and "conv_a" in details["kept_float"][-1]
    assert budget.kept_higher_precision == details["kept_float"]
    # the rest is int8, weights per channel
    scales = _weight_scales(model)
    assert [k.split()[0] for k in scales] == ["DEPTHWISE_CONV_2D", "CONV_2D"] and min(scales.values()) == 8
    types = tensor_types(model)
    assert types["input_dtype"] == "uint8" and types["output_dtype"] == "uint8"
    # and it classifies the validation images like the float model
    images = data["val"][0]
    reference = models["trained"].predict(images.astype(np.float32), verbose=0)
    assert aeq.divergence(aeq.predict(model, images), reference)[1] >= 0.99


def test_by_default_the_file_is_full_integer_from_the_converter(models, data, tmp_path):
    details, model = _export_int8(models["trained"], data, tmp_path)
    assert details["int8_budget"].attempts[0]["recipe"].startswith("TFLite converter")
    assert _float_ops(model) == [] and "kept_float" not in details


def test_budget_recipe_keeps_the_fewest_sensitive_ops_in_float_and_reports_their_effect(models, data, tmp_path):
    from edgepipe.backends.litert.export import export_tflite_int8, tensor_types

    ctx = _budget_context(models["lossy"], data, tmp_path, float_stem=False)
    path = tmp_path / "lossy-int8.tflite"
    try:
        details = export_tflite_int8(ctx, path)
    finally:
        ctx.close()
    budget = details["int8_budget"]
    recipes = [a["recipe"] for a in budget.attempts]
    assert recipes[0].startswith("TFLite converter") and recipes[1].startswith("AI Edge Quantizer, full-integer")
    assert not budget.attempts[0]["within_budget"] and not budget.attempts[1]["within_budget"]
    assert budget.met and budget.chosen_attempt == budget.attempts[-1]["attempt"]
    assert all("top1" in a and "seconds" in a for a in budget.attempts)
    assert len(details["kept_float"]) == 1 and "conv_b" in details["kept_float"][0]
    assert budget.kept_higher_precision == details["kept_float"]
    kept = details["kept_float_ops"][0]
    assert kept["type"] == "CONV_2D" and kept["kl_reduction"] > 0
    assert kept["kl"] < details["sensitivity"]["all_integer"]["kl"]
    assert details["sensitivity"]["ranked"][0]["op"] == kept["op"] and details["sensitivity"]["candidates"] == 5
    [step] = details["kept_float_steps"]  # the first op alone meets the budget: nothing more is tried
    assert step["op"] == kept["op"] and step["kept"] == 1 and step["within_budget"]
    assert step["top1"] == budget.attempts[-1]["top1"] and step["kl"] == kept["kl"]
    types = tensor_types(path)
    assert types["input_dtype"] == "uint8" and types["output_dtype"] == "uint8" and types["tensor_dtypes"]["float32"]


def test_converter_fallback_ranks_ops_by_their_quantization_error(models, data, tmp_path):
    """The converter's own keep-in-float recipe ranks ops by sqrt(mean squared error) / scale: the lossy
    op comes first (not the first name in reverse alphabetical order)."""
    from edgepipe.backends.litert.export import _sensitive_nodes

    ctx = _budget_context(models["lossy"], data, tmp_path)
    try:
        nodes = _sensitive_nodes(ctx, ctx.calibration, 2)
    finally:
        ctx.close()
    assert len(nodes) == 2 and "conv_b" in nodes[0]
