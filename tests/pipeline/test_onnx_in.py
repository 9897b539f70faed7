"""An image classifier brought as ONNX: its preprocessing folded in, exported to the ONNX and OpenVINO formats, each
artifact verified against the user's own file run by ONNX Runtime, benchmarked; bad files refused in one line.

The classifiers are made here without PyTorch: a small Keras model converted by tf2onnx with an NCHW input, and an
NCHW graph written with onnx.helper that wants BGR pixels minus a per-channel mean."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgepipe.cli import main
from tests.conftest import make_image_folder, read_image_folder

CLASSES = ("a_red", "b_green", "c_blue")  # each class's dominant colour is its channel (make_image_folder)
SIZE = 16
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
FORMATS = ["onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8", "tflite-fp32"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), classes=CLASSES, per_class=12, size=SIZE)


@pytest.fixture(scope="module")
def keras_nchw(tmp_path_factory, images) -> Path:
    """A small Keras classifier trained on (x / 255 - MEAN) / STD, converted by tf2onnx with an NCHW input."""
    import keras
    import tensorflow as tf
    import tf2onnx

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(len(CLASSES), activation="softmax")(x))
    pictures, labels = read_image_folder(images, CLASSES, SIZE)
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    model.fit((pictures / 255.0 - MEAN) / STD, labels, epochs=30, batch_size=12, verbose=0)
    spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="pixels"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, inputs_as_nchw=["pixels"])
    path = tmp_path_factory.mktemp("keras-nchw") / "keras_nchw.onnx"
    onnx.save(proto, path)
    return path


def _bgr_graph(size="S") -> onnx.ModelProto:
    """NCHW BGR input with the declared per-channel mean already taken off, and 10 more inside the graph (a Sub);
    a convolution passing the colours through plus five channels of noise, pooled; a Gemm that turns each colour
    into its class, no Softmax (logits out). ``size`` "S": a dynamic spatial size."""
    rng = np.random.default_rng(0)
    conv = np.concatenate([np.eye(3)[:, :, None, None], rng.normal(0, 0.05, (5, 3, 1, 1))])
    fc = np.zeros((8, 3))
    for c in range(3):
        fc[2 - c, c] = 0.08  # network channel 2 - c is RGB channel c after the BGR reorder
    inits = [
        numpy_helper.from_array(np.asarray(v, np.float32), n)
        for n, v in [
            ("inside_mean", np.full((1, 3, 1, 1), 10.0)),
            ("conv_w", conv),
            ("conv_b", np.zeros(8)),
            ("fc_w", fc),
            ("fc_b", np.zeros(3)),
        ]
    ]
    nodes = [
        helper.make_node("Sub", ["data", "inside_mean"], ["centred"]),
        helper.make_node("Conv", ["centred", "conv_w", "conv_b"], ["conv"], name="conv"),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc"),
    ]
    shape = ["batch", 3, size, size]
    graph = helper.make_graph(
        nodes,
        "bgr",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _records(index: Path) -> dict:
    return {r["format"]: r for r in json.loads(index.read_text())["artifacts"]}


def _check_exported(index: Path) -> dict:
    records = _records(index)
    for name in ("onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"):
        record = records[name]
        assert record["status"] == "ok", record
        assert record["verification"]["passed"] and record["verification"]["images"] > 0, record
    assert records["onnx-fp32"]["verification"]["max_abs_diff"] < 1e-4
    _check_tflite(records["tflite-fp32"])
    return records


def _check_tflite(record: dict) -> None:
    """tflite-fp32 is built by onnx2tf and verified, or, without it installed, skipped with that reason."""
    from edgepipe.backends.litert.from_onnx import unavailable

    if unavailable():
        assert record["status"] == "skipped" and record["reason"] == unavailable(), record
    else:
        assert record["status"] == "ok" and record["verification"]["passed"], record


def test_keras_born_nchw_onnx_exports_and_verifies(keras_nchw, images, tmp_path):
    out = tmp_path / "out"
    result = _invoke(
        "export",
        keras_nchw,
        "--scale",
        "255",
        "--mean",
        ",".join(map(str, MEAN)),
        "--std",
        ",".join(map(str, STD)),
        "--channels",
        "rgb",
        "--calibration-data",
        images,
        "--output",
        out,
        *[a for f in FORMATS for a in ("--format", f)],
    )
    assert result.exit_code == 0, result.output
    records = _check_exported(out / "artifacts.json")
    assert records["onnx-fp32"]["verification"]["top1_agreement"] == 1.0
    fp32 = onnx.load(str(out / records["onnx-fp32"]["file"]))
    props = {p.key: p.value for p in fp32.metadata_props}
    assert json.loads(props["labels"]) == list(CLASSES)
    assert json.loads(props["preprocessing"])["layout"] == "nchw"
    assert fp32.graph.input[0].name == "image" and [
        d.dim_value for d in fp32.graph.input[0].type.tensor_type.shape.dim
    ][1:] == [SIZE, SIZE, 3]
    index = json.loads((out / "artifacts.json").read_text())
    assert index["source"]["layout"] == "nchw" and index["source"]["softmax_added"] is False

    # the exported files take raw NHWC pixels: benchmarked alone, on the same folder
    bench = _invoke(
        "bench",
        out / records["onnx-fp32"]["file"],
        out / records["openvino-int8"]["file"],
        "--data",
        images,
        "--output",
        tmp_path / "bench.json",
        "--min-iterations",
        "3",
        "--min-duration",
        "0",
        "--warmup",
        "1",
        "--warmup-time",
        "0",
        "--no-memory",
    )
    assert bench.exit_code == 0, bench.output
    results = json.loads((tmp_path / "bench.json").read_text())
    accuracies = [r["top1"] for r in results["records"]]
    assert len(accuracies) == 2 and min(accuracies) > 0.9, accuracies

    # an ONNX file edgepipe wrote says it takes raw pixels: it exports again with nothing declared
    again = _invoke(
        "export",
        out / records["onnx-fp32"]["file"],
        "--format",
        "onnx-fp16",
        "--calibration-data",
        images,
        "--output",
        tmp_path / "again",
    )
    assert again.exit_code == 0, again.output
    assert _records(tmp_path / "again" / "artifacts.json")["onnx-fp16"]["verification"]["passed"]


def test_hand_built_bgr_graph_with_a_dynamic_size_exports_through_the_api(images, tmp_path):
    import edgepipe

    source = tmp_path / "bgr.onnx"
    onnx.save(_bgr_graph(), source)
    exported = edgepipe.export(
        source,
        FORMATS,
        calibration=images,
        output=tmp_path / "out",
        input_size=SIZE,
        preprocessing={"channels": "bgr", "scale": 1, "mean": [100, 110, 120], "std": [1]},
        echo=lambda line: None,
    )
    records = _check_exported(exported.index)
    assert records["openvino-int8"]["verification"]["top1_agreement"] >= 0.9
    index = json.loads(exported.index.read_text())
    assert index["source"]["softmax_added"] is True  # logits out: a Softmax is folded in after the graph
    pictures, labels = read_image_folder(images, CLASSES, SIZE)
    colour = pictures.astype(int).std(axis=-1).mean(axis=(1, 2)) > 10  # the folder holds grey images too
    probabilities = _run(exported.path("onnx-fp32"), pictures[colour])
    assert np.allclose(probabilities.sum(1), 1.0, atol=1e-5)
    assert np.mean(probabilities.argmax(1) == labels[colour]) == 1.0  # the BGR reorder really happens


def _run(path: Path, pixels: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": pixels.astype(np.float32)})[0]


def _two_inputs(path: Path) -> Path:
    model = _bgr_graph(SIZE)
    model.graph.input.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, [1, 3]))
    onnx.save(model, path)
    return path


def _non_image(path: Path) -> Path:
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "flat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize(
    "case, flags, message",
    [
        (
            "two inputs",
            ["--scale", "1", "--mean", "0", "--std", "1", "--channels", "rgb"],
            "has 2 inputs (data, other)",
        ),
        ("non-image", ["--scale", "1", "--mean", "0", "--std", "1", "--channels", "rgb"], "has 2 dimensions"),
        ("dynamic size", ["--scale", "1", "--mean", "0", "--std", "1", "--channels", "rgb"], "dynamic spatial size"),
        ("not onnx", [], "is not an ONNX model"),
        ("undeclared", ["--scale", "255"], "preprocessing of 'bgr.onnx' is not known: set channels, mean, std"),
    ],
)
def test_bad_onnx_inputs_are_one_line_errors(case, flags, message, images, tmp_path):
    path = {
        "two inputs": lambda p: _two_inputs(p),
        "non-image": lambda p: _non_image(p),
        "dynamic size": lambda p: (onnx.save(_bgr_graph(), p), p)[1],
        "not onnx": lambda p: (p.write_text("name: not a model\n"), p)[1],
        "undeclared": lambda p: (onnx.save(_bgr_graph(SIZE), p), p)[1],
    }[case](tmp_path / "bgr.onnx")
    out = tmp_path / "out"
    result = _invoke("export", path, *flags, "--format", "onnx-fp32", "--calibration-data", images, "--output", out)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output
    assert not out.exists()  # nothing written
