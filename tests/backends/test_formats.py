"""Every CPU-buildable format exports, loads in an independent parser with the types its name promises,
and verifies against the Keras model it came from."""

import json

import numpy as np
import onnx
import pytest

from edgepipe.backends import formats
from edgepipe.backends.litert.export import tensor_types
from edgepipe.fileio import read_json
from edgepipe.standalone.export import expand_formats, export_model
from tests.conftest import make_image_folder

CPU_FORMATS = [n for n, f in formats() if f.available() is None and not f.reference]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run):
    """Every CPU format of the tiny run's model, through the standalone 'export MODEL' path."""
    tmp = tmp_path_factory.mktemp("export-all")
    data = make_image_folder(tmp / "calib", classes=("0", "1", "2"), per_class=10, size=32)
    lines: list[str] = []
    index = export_model(tiny_run.model, ["all"], tmp / "out", lines.append, calibration=data, calibration_size=16)
    return {a["format"]: a for a in read_json(index)["artifacts"]}, tmp / "out", lines


def test_all_means_every_format_buildable_here():
    assert set(expand_formats(["all"])) == set(CPU_FORMATS)
    assert {
        "tflite-fp32",
        "tflite-fp16",
        "tflite-dynamic",
        "tflite-int8",
        "tflite-int16x8",
        "onnx-fp32",
        "onnx-fp16",
        "onnx-int8",
    } <= set(CPU_FORMATS)


def test_every_cpu_format_exports_and_is_verified(exported):
    records, _, _ = exported
    assert set(records) == set(CPU_FORMATS)
    for name, record in records.items():
        if record["status"] == "failed":  # the converter or LiteRT refused: reported with its reason
            assert name == "tflite-int16x8" and record["reason"], (name, record)
            continue
        assert record["status"] in ("ok", "failed-verification"), (name, record.get("reason"))
        v = record["verification"]
        assert v["images"] > 0 and 0 <= v["top1_agreement"] <= 1
        assert record["status"] == ("ok" if v["passed"] else "failed-verification")
    assert records["tflite-fp32"]["verification"]["max_abs_diff"] < 1e-4
    assert records["onnx-fp32"]["verification"]["max_abs_diff"] < 1e-4


def test_tflite_tensor_types_match_their_names(exported):
    _, out, _ = exported
    types = {
        n: tensor_types(f)
        for n in ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "tflite-int16x8")
        for f in out.glob(f"*-{n}.tflite")
    }
    assert types["tflite-fp32"]["tensor_dtypes"].keys() <= {"float32", "int32"}
    assert types["tflite-fp16"]["tensor_dtypes"].get("float16")
    assert types["tflite-dynamic"]["input_dtype"] == "float32" and types["tflite-dynamic"]["tensor_dtypes"].get("int8")
    assert types["tflite-int8"]["input_dtype"] == "uint8" and types["tflite-int8"]["output_dtype"] == "uint8"
    if "tflite-int16x8" in types:
        assert types["tflite-int16x8"]["tensor_dtypes"].get("int16")


def test_onnx_files_pass_the_full_checker_and_say_what_they_are(exported):
    _, out, _ = exported
    for name in ("onnx-fp32", "onnx-fp16", "onnx-int8"):
        model = onnx.load(next(out.glob(f"*-{name}.onnx")))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version >= 17 or any(o.version >= 17 for o in model.opset_import)
    int8 = onnx.load(next(out.glob("*-onnx-int8.onnx")))
    assert any(node.op_type == "QuantizeLinear" for node in int8.graph.node)
    half = onnx.load(next(out.glob("*-onnx-fp16.onnx")))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in half.graph.initializer)
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    labels = {p.key: p.value for p in onnx.load(next(out.glob("*-onnx-fp32.onnx"))).metadata_props}["labels"]
    assert json.loads(labels) == ["0", "1", "2"]


def test_int8_artifacts_report_their_accuracy_budget(exported):
    records, _, _ = exported
    for name in ("tflite-int8", "onnx-int8"):
        budget = records[name]["details"]["int8_budget"]
        assert budget["budget_pp"] == 1.0
        assert budget["attempts"] and "top1" in budget["attempts"][0] and "seconds" in budget["attempts"][0]
        assert isinstance(budget["met"], bool)
        if not budget["met"]:
            assert budget["note"] and len(budget["attempts"]) > 1


def test_tensorrt_formats_are_skipped_with_a_reason(exported):
    records, _, _ = exported
    for name in ("tensorrt-fp16", "tensorrt-int8"):
        reason = formats().get(name).available()
        if reason is None:
            pytest.skip("TensorRT and a CUDA device are present")
        assert name not in records  # 'all' means what this machine can build
        assert "tensorrt" in reason or "CUDA" in reason


def test_tensorrt_format_requested_explicitly_is_recorded_as_skipped(tiny_run, tmp_path):
    if formats().get("tensorrt-fp16").available() is None:
        pytest.skip("TensorRT and a CUDA device are present")
    index = export_model(tiny_run.model, ["tensorrt-fp16", "onnx-fp32"], tmp_path, lambda s: None)
    records = {a["format"]: a for a in read_json(index)["artifacts"]}
    assert records["tensorrt-fp16"]["status"] == "skipped" and records["tensorrt-fp16"]["reason"]
    assert records["onnx-fp32"]["status"] == "ok"


def test_a_failing_verification_is_marked_not_hidden(tiny_run):
    """An fp32 tolerance applied to an int8 file must fail: the check is real."""
    import dataclasses

    import keras

    from edgepipe.backends import Tolerance
    from edgepipe.data import materialize
    from edgepipe.verification import run_artifact, verify

    int8 = next(tiny_run.artifacts_dir.glob("*-tflite-int8.tflite"))
    strict = dataclasses.replace(formats().get("tflite-int8"), precision="fp32")
    dataset = materialize(read_json(tiny_run.dataset_index), 32, 3)
    reference = keras.models.load_model(tiny_run.model).predict(dataset.heldout.images.astype(np.float32), verbose=0)
    result = verify(strict, run_artifact(int8, "tflite-int8", dataset.heldout.images, threads=1), reference)
    assert strict.tolerance == Tolerance(max_abs_diff=1e-4)
    assert not result["passed"] and result["problems"]


def test_keeping_sensitive_layers_float_keeps_integer_input_and_output(tiny_run, tmp_path):
    """The third INT8 recipe (ops denylisted by TFLite's quantization debugger) still gives a model
    with the integer input and output its format name promises."""
    import keras

    from edgepipe.backends import ExportContext
    from edgepipe.backends.litert.export import _denylisted_model, _sensitive_nodes
    from edgepipe.calibration import draw
    from edgepipe.data import materialize

    dataset = materialize(read_json(tiny_run.dataset_index), 32, 3)
    calibration = draw(dataset.train.images, dataset.train.labels, 16, 0)
    model = keras.models.load_model(tiny_run.model, compile=False)
    ctx = ExportContext(model, tiny_run.read_labels(), {}, calibration, workdir_parent=tmp_path)
    try:
        nodes = _sensitive_nodes(ctx, calibration, 2)
        assert len(nodes) == 2
        path = tmp_path / "kept-float.tflite"
        path.write_bytes(_denylisted_model(ctx, calibration, nodes))
    finally:
        ctx.close()
    types = tensor_types(path)
    assert types["input_dtype"] == "uint8" and types["output_dtype"] == "uint8"
    assert types["tensor_dtypes"].get("float32")  # the kept ops compute in float


def test_float16_arithmetic_has_its_own_tolerance():
    from edgepipe.backends import TOLERANCES

    assert formats().get("onnx-fp16").tolerance == TOLERANCES["fp16-compute"]
    assert formats().get("tflite-fp16").tolerance == TOLERANCES["fp16"]  # float16 storage, float32 arithmetic
    assert TOLERANCES["fp16"].max_abs_diff < TOLERANCES["fp16-compute"].max_abs_diff


def test_every_tflite_artifact_works_in_mediapipe_tasks(exported, tiny_run):
    """MediaPipe's ImageClassifier (Android, iOS, web, Python) loads each TFLite file edgepipe wrote and names
    the class LiteRT ranks first, on real held-out images."""
    mp = pytest.importorskip("mediapipe", reason="MediaPipe Tasks is not installed (pip install '.[test]')")
    from mediapipe.tasks.python import BaseOptions, vision

    from edgepipe.data import materialize
    from edgepipe.verification import run_artifact

    records, out, _ = exported
    images = materialize(read_json(tiny_run.dataset_index), 32, 3).heldout.images[:12]
    labels = tiny_run.read_labels()
    tflite = [name for name, r in records.items() if r["file"].endswith(".tflite") and r["status"] != "failed"]
    assert {"tflite-fp32", "tflite-int8"} <= set(tflite)
    for name in tflite:
        path = out / records[name]["file"]
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=1)
        with vision.ImageClassifier.create_from_options(options) as classifier:
            named = [
                classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
                .classifications[0]
                .categories[0]
                .category_name
                for image in images
            ]
        expected = [labels[k] for k in run_artifact(path, name, images, threads=1).argmax(1)]
        assert named == expected, name
