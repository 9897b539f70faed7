"""The graph tensorrt-int8 hands TensorRT's ONNX parser, made on the CPU: int8 symmetric Q/DQ everywhere (TensorRT
accepts zero point 0 only), weights int8 per output channel, for a Keras-born network and a foreign ONNX one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepipe.backends import ExportContext, formats
from edgepipe.backends.tensorrt.qdq import tensorrt_int8_graph, tensorrt_qdq_problems
from edgepipe.calibration import CalibrationSet

SIZE = 16


def _calibration(count: int = 24) -> CalibrationSet:
    rng = np.random.default_rng(0)
    return CalibrationSet(rng.integers(0, 256, (count, SIZE, SIZE, 3)).astype(np.uint8), np.zeros(count, np.int64), 0)


def _keras_model():
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(12, 1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def _foreign_fp32(path: Path) -> Path:
    """An NHWC-raw-pixel ONNX around an NCHW convolution network made with onnx.helper (as a foreign network
    reaches onnx-fp32: a transpose, its normalization, then its own graph)."""
    rng = np.random.default_rng(1)

    def init(name, value):
        return numpy_helper.from_array(np.asarray(value, np.float32), name)

    inits = [
        init("scale", 1 / 255),
        init("w1", rng.normal(0, 0.3, (6, 3, 3, 3))),
        init("b1", rng.normal(0, 0.1, 6)),
        init("w2", rng.normal(0, 0.3, (4, 6, 1, 1))),
        init("fc_w", rng.normal(0, 0.5, (4, 3))),
        init("fc_b", np.zeros(3)),
    ]
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["nchw", "scale"], ["x"]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "foreign",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _check_graph(path: Path) -> None:
    """Every QuantizeLinear and DequantizeLinear int8 with zero point 0; every Conv/Gemm weight int8 with one
    scale per output channel; biases in float."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    quantizers = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert sum(n.op_type == "QuantizeLinear" for n in quantizers) >= 3
    for node in quantizers:
        zero = inits[node.input[2]]
        assert zero.data_type == TensorProto.INT8 and not numpy_helper.to_array(zero).any(), node.name
    dequantized = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    weighted = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(weighted) >= 3
    for op in weighted:
        dq = dequantized[op.input[1]]
        weight, scale = inits[dq.input[0]], numpy_helper.to_array(inits[dq.input[1]])
        transposed = op.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in op.attribute)
        channels = weight.dims[1 if transposed else 0]
        assert weight.data_type == TensorProto.INT8 and scale.size == channels > 1, op.name
        if len(op.input) > 2:
            assert op.input[2] in inits and inits[op.input[2]].data_type == TensorProto.FLOAT, op.name
    assert tensorrt_qdq_problems(model) == []


def test_keras_born_network_reaches_tensorrt_as_symmetric_int8_qdq(tmp_path):
    ctx = ExportContext(_keras_model(), ["a", "b", "c"], {}, _calibration(), workdir_parent=tmp_path)
    try:
        _check_graph(tensorrt_int8_graph(ctx))
        assert "onnx-int8" not in ctx.outputs  # built from onnx-fp32, not from the ONNX Runtime artifact
    finally:
        ctx.close()


def test_foreign_onnx_network_reaches_tensorrt_as_symmetric_int8_qdq(tmp_path):
    ctx = ExportContext(None, ["a", "b", "c"], {}, _calibration(), workdir_parent=tmp_path)
    ctx.outputs["onnx-fp32"] = _foreign_fp32(tmp_path / "foreign-onnx-fp32.onnx")
    try:
        _check_graph(tensorrt_int8_graph(ctx))
    finally:
        ctx.close()


def test_the_check_refuses_what_tensorrt_refuses(tmp_path):
    """onnx-int8 (uint8 asymmetric activations, what ONNX Runtime on x86 runs fastest) is what TensorRT refuses."""
    ctx = ExportContext(None, ["a", "b", "c"], {}, _calibration(), workdir_parent=tmp_path)
    ctx.outputs["onnx-fp32"] = _foreign_fp32(tmp_path / "foreign-onnx-fp32.onnx")
    try:
        formats().get("onnx-int8").build(ctx, tmp_path / "foreign-onnx-int8.onnx")
        problems = tensorrt_qdq_problems(onnx.load(str(tmp_path / "foreign-onnx-int8.onnx")))
    finally:
        ctx.close()
    assert any("zero point type UINT8" in p for p in problems), problems


def test_per_tensor_weights_and_missing_zero_points_are_named():
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.int8), "w_q")
    inits = [w, numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
        helper.make_node("DequantizeLinear", ["w_q", "s", "z"], ["w"], name="wdq"),
        helper.make_node("Conv", ["xd", "w"], ["y"], name="conv"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    problems = tensorrt_qdq_problems(helper.make_model(graph))
    assert any("QuantizeLinear q has zero point type none" in p for p in problems), problems
    assert any("not quantized per output channel" in p for p in problems), problems


@pytest.mark.parametrize("name", ["tensorrt-int8"])
def test_the_format_says_what_tensorrt_gets(name):
    assert "symmetric" in formats().get(name).description
