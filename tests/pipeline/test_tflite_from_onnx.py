"""TFLite from a network that is not a Keras model: an NCHW ONNX classifier (and a PyTorch module) converted by
onnx2tf into NHWC-native TFLite files that take raw NHWC pixels like edgepipe's own, carry the MediaPipe
metadata, and are verified against the user's own network; tflite-int8 through the INT8 recipes and budget.

The ONNX classifier is written here with onnx.helper in PyTorch's layout (NCHW, a per-channel mean and std
outside the graph): three convolutions that pass each colour through (plus channels of noise), pooled, and a
Gemm that turns colour c into class c."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgepipe.backends.litert import from_onnx
from edgepipe.cli import main
from tests.conftest import make_image_folder, read_image_folder

CLASSES = ("a_red", "b_green", "c_blue")  # each class's dominant colour is its channel (make_image_folder)
SIZE = 32
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
CONVOLUTIONS = 3
#: a converter that keeps the graph's NCHW layout puts a transpose before and after each convolution; onnx2tf
#: leaves at most one where the pooled features are flattened in NCHW order
MAX_TRANSPOSES = 2


@pytest.fixture(scope="module", autouse=True)
def converter_installed():
    reason = from_onnx.unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), classes=CLASSES, per_class=12, size=SIZE)


def _nchw_classifier() -> onnx.ModelProto:
    """(N, 3, 32, 32) normalized by MEAN and STD -> 3x3 convolutions (the second with stride 2) whose first three
    channels carry the colours (a bias of mean/std undoes the normalization's offset, so ReLU keeps them) ->
    global average pool -> Gemm to logits (no Softmax); grey images fall to class 0 by its bias."""
    rng = np.random.default_rng(0)
    inits, nodes, x, channels = [], [], "input", 3
    for i in range(CONVOLUTIONS):
        weight = rng.normal(0, 0.02, (8, channels, 3, 3))
        weight[:3, :3] = 0
        weight[[0, 1, 2], [0, 1, 2], 1, 1] = 1.0  # the centre tap passes colour c on as channel c
        bias = np.zeros(8)
        bias[:3] = MEAN[0] / STD[0] if i == 0 else 0.0
        inits += [numpy_helper.from_array(weight.astype(np.float32), f"w{i}")]
        inits += [numpy_helper.from_array(bias.astype(np.float32), f"b{i}")]
        stride = 2 if i == 1 else 1
        nodes += [
            helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], strides=[stride, stride]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        x, channels = f"r{i}", 8
    fc = np.zeros((3, 8))
    fc[:, :3] = 2 * np.eye(3)
    inits += [
        numpy_helper.from_array(fc.astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.array([1.0, 0, 0], np.float32), "fc_b"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "nchw",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _coloured(pixels: np.ndarray) -> np.ndarray:
    """Which images have colour (the folder holds grey ones too, which every class's network calls class 0)."""
    return pixels.astype(int).std(axis=-1).mean(axis=(1, 2)) > 10


def _onnx_probabilities(model: onnx.ModelProto, pixels: np.ndarray) -> np.ndarray:
    """The NCHW graph's own output on raw pixels normalized here, softmaxed."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    normalized = ((pixels / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)
    logits = session.run(None, {"input": normalized})[0].astype(np.float64)
    exp = np.exp(logits - logits.max(1, keepdims=True))
    return exp / exp.sum(1, keepdims=True)


def _ops(path: Path) -> collections.Counter:
    from ai_edge_litert.interpreter import Interpreter

    return collections.Counter(op["op_name"] for op in Interpreter(model_path=str(path))._get_ops_details())


def _litert(path: Path, pixels: np.ndarray) -> tuple[np.ndarray, dict]:
    """LiteRT's outputs for raw pixels fed in the input's own type, and the input's details."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    given, produced = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(given["index"], [len(pixels), SIZE, SIZE, 3])
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], pixels.astype(given["dtype"]))
    interpreter.invoke()
    return interpreter.get_tensor(produced["index"]), given


def _records(index: Path) -> dict:
    return {r["format"]: r for r in json.loads(index.read_text())["artifacts"]}


def test_nchw_onnx_becomes_nhwc_native_raw_pixel_tflite_fp32_and_int8(images, tmp_path):
    from edgepipe.backends.litert.metadata import read_metadata

    source = tmp_path / "nchw.onnx"
    onnx.save(_nchw_classifier(), source)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "export",
            str(source),
            "--scale",
            "255",
            "--mean",
            ",".join(map(str, MEAN)),
            "--std",
            ",".join(map(str, STD)),
            "--channels",
            "rgb",
            "--calibration-data",
            str(images),
            "--output",
            str(out),
            "--format",
            "tflite-fp32",
            "--format",
            "tflite-int8",
        ],
    )
    assert result.exit_code == 0, result.output
    records = _records(out / "artifacts.json")
    for name in ("tflite-fp32", "tflite-int8"):
        record = records[name]
        assert record["status"] == "ok", record
        assert record["verification"]["passed"] and record["verification"]["images"] > 0, record
        ops = _ops(out / record["file"])
        assert ops["CONV_2D"] == CONVOLUTIONS, ops  # the network really is in the file
        assert ops["TRANSPOSE"] <= MAX_TRANSPOSES, ops
        meta = read_metadata(out / record["file"])
        assert meta["labels"] == list(CLASSES) and meta["name"] == f"nchw ({name})"
        assert meta["edgepipe"]["format"] == name and meta["edgepipe"]["preprocessing"]["layout"] == "nchw"
        assert record["details"]["converted_by"]["converter"].startswith("onnx2tf ")
    assert records["tflite-fp32"]["verification"]["max_abs_diff"] < 1e-4
    budget = records["tflite-int8"]["details"]["int8_budget"]
    assert budget["met"] is True, budget

    # raw NHWC pixels in: the float file gives what the NCHW graph gives on the same pixels normalized by hand
    pixels, labels = read_image_folder(images, CLASSES, SIZE)
    probabilities, given = _litert(out / records["tflite-fp32"]["file"], pixels)
    assert list(given["shape"][1:]) == [SIZE, SIZE, 3] and given["dtype"] == np.float32
    assert np.abs(probabilities - _onnx_probabilities(_nchw_classifier(), pixels)).max() < 1e-4
    colour = _coloured(pixels)
    assert np.mean(probabilities[colour].argmax(1) == labels[colour]) == 1.0
    quantized, given = _litert(out / records["tflite-int8"]["file"], pixels)
    assert given["dtype"] == np.uint8 and list(given["shape"][1:]) == [SIZE, SIZE, 3]
    assert np.mean(quantized[colour].argmax(1) == labels[colour]) >= 0.9


@pytest.mark.parametrize("fmt", ["tflite-fp32", "tflite-int8"])
def test_mediapipe_classifies_the_converted_files_by_their_metadata(images, tmp_path, fmt):
    mp = pytest.importorskip("mediapipe", reason="MediaPipe Tasks is not installed")
    from mediapipe.tasks.python import BaseOptions, vision

    import edgepipe

    source = tmp_path / "nchw.onnx"
    onnx.save(_nchw_classifier(), source)
    exported = edgepipe.export(
        source,
        [fmt],
        calibration=images,
        output=tmp_path / "out",
        preprocessing={"channels": "rgb", "scale": 255, "mean": list(MEAN), "std": list(STD)},
        echo=lambda line: None,
    )
    assert exported[fmt].status == "ok", exported[fmt]
    pixels, labels = read_image_folder(images, CLASSES, SIZE)
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(exported.path(fmt))))
    with vision.ImageClassifier.create_from_options(options) as classifier:
        named = [
            classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(p)))
            .classifications[0]
            .categories[0]
            .category_name
            for p in pixels
        ]
    colour = _coloured(pixels)
    assert np.mean(np.array(named)[colour] == np.array(CLASSES)[labels[colour]]) >= 0.9, named


def test_a_torch_module_becomes_tflite_fp32_verified_against_the_module(images, tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'edgepipe[torch]')")
    import edgepipe

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, padding=1),
                torch.nn.BatchNorm2d(8),
                torch.nn.ReLU(),
                torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
                torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1),
            )
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.body(x).flatten(1))

    torch.manual_seed(0)
    exported = edgepipe.export(
        Net(),
        ["tflite-fp32"],
        calibration=images,
        output=tmp_path / "out",
        input_shape=(1, 3, SIZE, SIZE),
        preprocessing="torch",
        echo=lambda line: None,
    )
    record = exported["tflite-fp32"]
    assert record.status == "ok" and record.verification["passed"], record
    assert record.verification["max_abs_diff"] < 1e-4
    assert json.loads(exported.index.read_text())["source"]["reference"].startswith("the PyTorch module")
    ops = _ops(exported.path("tflite-fp32"))
    assert ops["CONV_2D"] == 2 and ops["TRANSPOSE"] <= MAX_TRANSPOSES, ops


def test_without_the_converter_the_tflite_formats_are_skipped_with_the_reason(images, tmp_path, monkeypatch):
    import edgepipe

    monkeypatch.setattr(from_onnx, "CONVERTER_MODULES", (*from_onnx.CONVERTER_MODULES, "edgepipe_absent_module"))
    source = tmp_path / "nchw.onnx"
    onnx.save(_nchw_classifier(), source)
    exported = edgepipe.export(
        source,
        ["onnx-fp32", "tflite-fp32"],
        output=tmp_path / "out",
        preprocessing={"channels": "rgb", "scale": 255, "mean": list(MEAN), "std": list(STD)},
        echo=lambda line: None,
    )
    assert exported["onnx-fp32"].status == "ok"
    record = exported["tflite-fp32"]
    assert record.status == "skipped", record
    assert "onnx2tf" in record.reason and "edgepipe_absent_module" in record.reason, record
    assert not (tmp_path / "out" / record.file).exists()
