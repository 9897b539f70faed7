"""TFLite and ONNX converted from the Keras model's frozen graph (what `models --measure` and the search's latency
step time) hold the same operators, in the same order, on tensors of the same shapes and types as the export stage's
files (TFLite converted from a SavedModel, ONNX from the model traced again): their latency is theirs."""

from __future__ import annotations

import numpy as np
import pytest

from edgepipe.choose.measure import Network, build_network

FORMATS = ["tflite-fp32", "tflite-int8", "onnx-fp32"]


def _operators(path) -> list[tuple]:
    """(operator, its inputs' and outputs' (shape, dtype)) in execution order, read before any delegate applies."""
    from edgepipe.backends.litert.runner import open_interpreter

    interpreter = open_interpreter(path, xnnpack=False)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}

    def described(ids) -> tuple:
        return tuple((tuple(tensors[i]["shape"]), np.dtype(tensors[i]["dtype"]).name) for i in ids if i >= 0)

    return [(op["op_name"], described(op["inputs"]), described(op["outputs"])) for op in interpreter._get_ops_details()]


def _nodes(path) -> list[tuple]:
    """Every ONNX node in order: (op type, its inputs and outputs, its attributes), tensors named by their first
    appearance (the converter's counters in internal names differ); the graph's input and output with their
    shapes; each initializer's place, shape, type and values."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    ids: dict[str, int] = {}

    def named(tensors) -> tuple:
        return tuple(ids.setdefault(t, len(ids)) for t in tensors)

    def shape(value) -> tuple:
        return tuple(d.dim_value or "?" for d in value.type.tensor_type.shape.dim)

    ends = [(v.name, shape(v)) for v in (*graph.input, *graph.output)]
    nodes = [(n.op_type, named(n.input), named(n.output), tuple(str(a) for a in n.attribute)) for n in graph.node]
    weights = sorted(
        (ids.get(t.name), tuple(t.dims), t.data_type, numpy_helper.to_array(t).tobytes()) for t in graph.initializer
    )
    return [*ends, *nodes, *weights]


def _export(model, folder, frozen: bool) -> dict[str, list[tuple]]:
    from edgepipe.export_index import read_export_index
    from edgepipe.standalone.export import export_model

    calibration = np.random.default_rng(0).integers(0, 256, (8, *model.inputs[0].shape[1:]), dtype=np.uint8)
    index = export_model(
        model, FORMATS, folder, lambda line: None, calibration=calibration, isolation="none", frozen_graph=frozen
    )
    records = read_export_index(index).artifacts
    assert [r.status.value for r in records] == ["ok"] * len(FORMATS), [r.reason for r in records]
    read = {"tflite": _operators, "onnx": _nodes}
    return {r.format: read[r.format.split("-")[0]](folder / r.file) for r in records}


@pytest.mark.parametrize("arch, alpha, size", [("mobilenet_v2", 0.35, 32), ("mobilenet_v3_small", 0.75, 40)])
def test_frozen_graph_files_have_the_saved_model_files_operators(tmp_path, arch, alpha, size):
    model, _ = build_network(Network.of(arch, alpha, size, 4))
    saved = _export(model, tmp_path / "saved-model", frozen=False)
    frozen = _export(model, tmp_path / "frozen", frozen=True)
    for name in FORMATS:
        assert len(saved[name]) > 20
        assert frozen[name] == saved[name], name
    assert any(dtype == "int8" for _, inputs, _ in frozen["tflite-int8"] for _, dtype in inputs)
    ends = [entry[0] for entry in frozen["onnx-fp32"][:2]]  # the graph's input and output
    assert ends == ["image", model.output_names[0]]  # the Keras names, as the export stage's file has them
