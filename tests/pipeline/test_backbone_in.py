"""A backbone brought as ONNX: a run computes its features once by ONNX Runtime (cached), trains a new head, joins it
to the backbone's graph into one classifier ONNX, then exports, verifies, benches and reports it as a normal run.

The backbones are made here without PyTorch: a small Keras conv net converted by tf2onnx with an NCHW input (it
gives NHWC feature maps), and an NCHW graph written with onnx.helper that wants BGR pixels minus a mean and pools
its own features (N, C)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgepipe.cli import main
from tests.conftest import make_image_folder

CLASSES = ("a_red", "b_green", "c_blue")  # each class's dominant colour is its channel (make_image_folder)
SIZE = 32
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
FORMATS = ["onnx-fp32", "onnx-int8", "openvino-int8"]
#: a run small enough for a test: few epochs, features cached on disk, short timing
QUICK = {
    "train": {"epochs": 2, "learning_rate": 0.05, "feature_cache": "disk"},
    "export": {"calibration_size": 16},
    "bench": {"warmup": 1, "warmup_s": 0.0, "min_iterations": 3, "min_duration_s": 0.0, "memory": False},
}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), classes=CLASSES, per_class=12, size=SIZE)


@pytest.fixture(scope="module")
def keras_maps(tmp_path_factory) -> Path:
    """A Keras conv net (random weights) up to its feature maps, converted by tf2onnx with an NCHW input: the
    file takes (N, 3, 32, 32) and gives (N, 16, 16, 8) maps."""
    import keras
    import tensorflow as tf
    import tf2onnx

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="pixels"),)
    proto, _ = tf2onnx.convert.from_keras(
        keras.Model(inputs, x), input_signature=spec, opset=17, inputs_as_nchw=["pixels"]
    )
    path = tmp_path_factory.mktemp("keras-maps") / "keras_maps.onnx"
    onnx.save(proto, path)
    return path


def _pooled_graph(batch: int | str = "batch", flatten_to_one: bool = False) -> onnx.ModelProto:
    """NCHW BGR input with the declared mean taken off; a 1x1 convolution passing the colours through plus five
    channels of noise, pooled and flattened: features (N, 8). ``flatten_to_one``: the flatten is a Reshape to
    [1, -1], so the graph runs only one image at a time."""
    rng = np.random.default_rng(0)
    conv = np.concatenate([np.eye(3)[:, :, None, None], rng.normal(0, 0.05, (5, 3, 1, 1))])
    inits = [
        numpy_helper.from_array(np.asarray(conv, np.float32), "conv_w"),
        numpy_helper.from_array(np.zeros(8, np.float32), "conv_b"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "one_row"),
    ]
    flatten = (
        helper.make_node("Reshape", ["pool", "one_row"], ["features"])
        if flatten_to_one
        else helper.make_node("Flatten", ["pool"], ["features"])
    )
    nodes = [
        helper.make_node("Conv", ["data", "conv_w", "conv_b"], ["conv"], name="conv"),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        flatten,
    ]
    graph = helper.make_graph(
        nodes,
        "pooled",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error_line(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output


def _quick_config(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(QUICK))
    return path


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _pixel_flags(mean=MEAN) -> list[str]:
    return ["--scale", "255", "--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, STD)), "--channels", "rgb"]


def _check_run(run: Path, backbone_output: str) -> dict:
    """What every run on a foreign backbone must hold; its training.json."""
    built = _json(run / "build.json")
    assert built["family"] == "onnx backbone" and built["backbone"]["output"] == backbone_output
    training = _json(run / "training.json")
    check = training["join_check"]
    assert check["max_abs_diff"] <= 1e-4 and check["top1_agreement"] == 1.0 and check["images"] > 0
    records = {r["format"]: r for r in _json(run / "artifacts" / "artifacts.json")["artifacts"]}
    for name in FORMATS:
        assert records[name]["status"] == "ok", records[name]
        assert records[name]["verification"]["passed"] and records[name]["verification"]["images"] > 0
    assert records["onnx-fp32"]["verification"]["max_abs_diff"] < 1e-4
    joined = onnx.load(str(run / "model.onnx"))
    props = {p.key: p.value for p in joined.metadata_props}
    assert json.loads(props["labels"]) == list(CLASSES)
    (image,) = joined.graph.input
    assert image.name == "image" and [d.dim_value for d in image.type.tensor_type.shape.dim][1:] == [SIZE, SIZE, 3]
    assert [d.dim_value for d in joined.graph.output[0].type.tensor_type.shape.dim][1:] == [len(CLASSES)]
    results = _json(run / "results.json")
    assert results["reference_format"] == "onnx-fp32"
    measured = {r["format"]: r for r in results["records"]}
    assert set(FORMATS) <= set(measured) and all(measured[f]["top1"] is not None for f in FORMATS)
    assert (run / "report.md").is_file() and (run / "report.html").is_file()
    assert not (run / "model.keras").exists() and not (run / "model_initial.keras").exists()
    return training


def test_feature_maps_backbone_runs_end_to_end_from_the_command_line(keras_maps, images, tmp_path):
    run = tmp_path / "run"
    common = ["--model", keras_maps, "--data", images, "--input-size", SIZE, "--output", run]
    result = _invoke("run", _quick_config(tmp_path), *common, "--formats", ",".join(FORMATS), *_pixel_flags())
    assert result.exit_code == 0, result.output
    training = _check_run(run, "maps nhwc")
    assert training["features_cached"] and training["feature_cache"]["location"] == "disk"
    assert training["feature_cache"]["note"].startswith("computed")
    assert _invoke("verify", run).exit_code == 0

    # another head (more epochs): the train stage reruns on the cached features
    again = _invoke("train", _quick_config(tmp_path), *common, "--epochs", 3, *_pixel_flags())
    assert again.exit_code == 0, again.output
    reused = _json(run / "training.json")["feature_cache"]["note"]
    assert reused == "reused " + training["feature_cache"]["note"].split("features-")[1].split("-")[0], reused

    # other preprocessing: the backbone's graph changes, so do its features
    other = ["--model", keras_maps, "--data", images, "--input-size", SIZE, "--output", run, "--epochs", 3]
    for stage in ("build", "train"):
        changed = _invoke(stage, _quick_config(tmp_path), *other, *_pixel_flags(mean=(0.4, 0.4, 0.4)))
        assert changed.exit_code == 0, changed.output
    note = _json(run / "training.json")["feature_cache"]["note"]
    assert note.startswith("computed") and note != training["feature_cache"]["note"], note
    assert len(list((run / "cache").glob("features-*-train.npy"))) == 2


def test_pooled_nchw_backbone_runs_end_to_end_through_the_api(images, tmp_path):
    import edgepipe

    source = tmp_path / "pooled.onnx"
    onnx.save(_pooled_graph(), source)
    run = edgepipe.run(
        QUICK,
        model=source,
        data=str(images),
        input_size=SIZE,
        preprocessing={"channels": "bgr", "scale": 1, "mean": [100, 110, 120], "std": [1]},
        formats=FORMATS,
        output=str(tmp_path / "run"),
        echo=lambda line: None,
    )
    training = _check_run(run.path, "pooled")
    built = _json(run.path / "build.json")
    assert built["preprocessing"]["channels"] == "bgr" and built["preprocessing"]["mean"] == [100, 110, 120]
    # the joined classifier takes raw pixels: its probabilities on the held-out images give the reported top-1
    assert run.results.reference.top1 == pytest.approx(training["top1"])


@pytest.mark.parametrize("strategy", ["fine-tune", "full", "auto"])
def test_strategies_that_change_a_foreign_backbone_are_refused(strategy, keras_maps, images, tmp_path):
    run = tmp_path / "run"
    result = _invoke(
        "run", "--model", keras_maps, "--data", images, "--input-size", SIZE, "--strategy", strategy, "--output", run,
        *_pixel_flags(),
    )  # fmt: skip
    _one_error_line(result, "fine-tuning or retraining a foreign backbone's weights is out of scope")
    assert not run.exists()


@pytest.mark.parametrize(
    "case, flags, message",
    [
        ("size", ["--input-size", "64", "--preprocessing", "unit"], "differs from the 32x32 input"),
        ("undeclared", ["--input-size", SIZE, "--scale", "255"], "is not known: set channels, mean, std"),
        ("fixed batch", ["--input-size", SIZE, "--preprocessing", "unit"], "fixes its batch inside the graph"),
        ("sequence", ["--input-size", SIZE, "--preprocessing", "unit"], "a backbone gives pooled features (N, C)"),
        ("pt2", [], "a run trains a new head on a Keras model or an ONNX backbone"),
    ],
)
def test_bad_backbones_are_one_line_errors(case, flags, message, images, tmp_path):
    path = tmp_path / ("program.pt2" if case == "pt2" else "backbone.onnx")
    if case == "pt2":
        path.write_bytes(b"PK\x03\x04 not a program")
    elif case == "sequence":  # (N, 4, 2) out: tokens, not features or maps
        model = _pooled_graph()
        model.graph.node.append(
            helper.make_node("Reshape", ["features", "tokens_shape"], ["tokens"]),
        )
        model.graph.initializer.append(numpy_helper.from_array(np.array([0, 4, 2], np.int64), "tokens_shape"))
        del model.graph.output[:]
        model.graph.output.append(helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", 4, 2]))
        onnx.save(model, path)
    else:
        onnx.save(_pooled_graph(batch=1, flatten_to_one=case == "fixed batch"), path)
    run = tmp_path / "run"
    _one_error_line(_invoke("run", "--model", path, "--data", images, *flags, "--output", run), message)
    assert not run.exists()


def test_a_fixed_batch_of_one_is_made_dynamic_when_the_graph_allows_it(tmp_path):
    from edgepipe.backends.onnxruntime.backbone import read_onnx_backbone, run_graph
    from edgepipe.pixels import resolve

    path = tmp_path / "one.onnx"
    onnx.save(_pooled_graph(batch=1), path)
    backbone = read_onnx_backbone(path, resolve("unit"))
    assert backbone.describe()["batch_made_dynamic"] and backbone.width == 8
    pixels = np.random.default_rng(0).integers(0, 255, (5, SIZE, SIZE, 3)).astype(np.float32)
    features = run_graph(backbone.write(tmp_path / "features.onnx"), pixels)
    assert features.shape == (5, 8)
    expected = np.maximum(pixels.transpose(0, 3, 1, 2) / 255.0, 0).mean(axis=(2, 3))  # the colours passed through
    assert np.allclose(features[:, :3], expected, atol=1e-5)


def test_an_onnx_classifier_fixing_its_batch_inside_is_a_one_line_export_error(images, tmp_path):
    model = _pooled_graph(batch=1, flatten_to_one=True)  # its (1, 8) output read as eight class scores
    path = tmp_path / "one.onnx"
    onnx.save(model, path)
    out = tmp_path / "out"
    result = _invoke("export", path, "--preprocessing", "unit", "--format", "onnx-fp32", "--output", out)
    _one_error_line(result, "fixes its batch inside the graph")
    assert not out.exists()


def test_an_onnx_file_edgepipe_did_not_write_is_not_benched_on_images(images, tmp_path):
    path = tmp_path / "pooled.onnx"
    model = _pooled_graph()
    model.graph.node.append(helper.make_node("Softmax", ["features"], ["probabilities"], axis=-1))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 8]))
    # NHWC in, as a foreign file might take: without the check it would run on raw pixels silently
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", SIZE, SIZE, 3]))
    model.graph.node.insert(0, helper.make_node("Transpose", ["pixels"], ["data"], perm=[0, 3, 1, 2]))
    onnx.save(model, path)
    timing = ["--min-iterations", "3", "--min-duration", "0", "--warmup", "1", "--warmup-time", "0", "--no-memory"]
    out = tmp_path / "bench.json"
    _one_error_line(_invoke("bench", path, "--data", images, "--output", out, *timing), "was not written by edgepipe")
    assert not out.exists()
    alone = _invoke("bench", path, "--output", out, *timing)  # timing alone needs no preprocessing
    assert alone.exit_code == 0, alone.output
