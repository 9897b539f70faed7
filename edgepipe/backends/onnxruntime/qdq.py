"""QDQ models as ONNX Runtime runs them: which weighted ops get integer kernels, and the activation-type rewrite.

A QDQ file only says where values are quantized; what runs in integer arithmetic is decided by ONNX
Runtime when it loads the file (it fuses DequantizeLinear -> op -> QuantizeLinear into one integer
kernel where it has one, and leaves the rest in float). So edgepipe reads that decision from the
model ONNX Runtime optimizes, never from the file alone.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Union

import numpy as np

#: ops with weights, the ones whose precision matters for speed and accuracy
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: ONNX Runtime's float kernels for weighted ops (the ops themselves, or their fusions with an activation)
FLOAT_KERNELS = WEIGHTED_OPS | {"FusedConv", "FusedGemm", "FusedMatMul"}
#: ONNX Runtime's integer kernels for weighted ops (fused from QDQ groups)
INTEGER_KERNELS = frozenset(
    {
        "QLinearConv",
        "QLinearConvTranspose",
        "QGemm",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
    }
)
#: other ops ONNX Runtime has QLinear* integer kernels for: in float, they are worth naming too
OTHER_QUANTIZABLE = frozenset(
    {"Add", "Mul", "GlobalAveragePool", "AveragePool", "Concat", "Sigmoid", "LeakyRelu", "Softmax", "Where"}
)

ModelSource = Union[str, Path, bytes, Any]  # a path, serialized bytes or an onnx.ModelProto


def _serialized(model: ModelSource) -> Union[str, bytes]:
    if isinstance(model, (str, Path)):
        return str(model)
    if isinstance(model, bytes):
        return model
    return model.SerializeToString()


def ort_kernels(model: ModelSource, workdir: Path) -> dict[str, list[str]]:
    """How ONNX Runtime's CPU provider runs a model: {'integer': ops with integer kernels, 'float': weighted ops
    in float, 'float_other': other ops it has integer kernels for (Add, Mul, pooling, Softmax...) in float}.

    Read from the model ONNX Runtime writes after its extended optimizations: that is the level at
    which it fuses QDQ groups into integer kernels (node names are kept there; the 'all' level only
    adds layout changes, and renames nodes). The optimized copy is written in a temporary folder inside
    ``workdir`` and removed. Raises what ONNX Runtime raises for a model it cannot load.
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="ort-optimized-", dir=workdir) as folder:
        out = Path(folder) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(out)
        options.log_severity_level = 3
        ort.InferenceSession(_serialized(model), sess_options=options, providers=["CPUExecutionProvider"])
        nodes = onnx.load(str(out), load_external_data=False).graph.node
    return {
        "integer": [n.name for n in nodes if n.op_type in INTEGER_KERNELS or n.op_type.startswith("QLinear")],
        "float": [n.name for n in nodes if n.op_type in FLOAT_KERNELS],
        "float_other": [n.name for n in nodes if n.op_type in OTHER_QUANTIZABLE],
    }


def qdq_count(model: Any) -> int:
    """QuantizeLinear and DequantizeLinear nodes in an onnx.ModelProto."""
    return sum(1 for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear"))


def activation_zero_point_types(model: Any) -> set[str]:
    """Element types ('uint8', 'int8'...) of the zero points of a model's QuantizeLinear nodes: its activations,
    in the files edgepipe writes (their weights are stored quantized, behind a DequantizeLinear only)."""
    import onnx

    inits = {i.name: i for i in model.graph.initializer}
    return {
        onnx.helper.tensor_dtype_to_np_dtype(inits[n.input[2]].data_type).name
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits
    }


def set_activation_type(model: Any, activations: str) -> int:
    """Rewrite, in place, every activation QuantizeLinear/DequantizeLinear pair of the other 8-bit type to
    ``activations`` ('uint8' or 'int8'); returns how many pairs changed.

    The rewrite is exact: shifting the zero point by 128 with the stored integers keeps every
    representable value (value = (q - zero_point) * scale) and the rounding. It is needed because
    NNCF picks int8 for any activation range below zero, and ONNX Runtime on x86 fuses integer
    kernels for uint8 activations. Weight quantizers (a QuantizeLinear on a constant) and a QuantizeLinear
    whose output feeds anything but DequantizeLinear are left as they are.
    """
    import onnx
    from onnx import numpy_helper

    target = {"uint8": onnx.TensorProto.UINT8, "int8": onnx.TensorProto.INT8}[activations]
    source = onnx.TensorProto.INT8 if target == onnx.TensorProto.UINT8 else onnx.TensorProto.UINT8
    shift = 128 if target == onnx.TensorProto.UINT8 else -128
    inits = {i.name: i for i in model.graph.initializer}
    constants = set(inits) | {o for node in model.graph.node if node.op_type == "Constant" for o in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    changed: set[str] = set()
    replaced: set[str] = set()
    for node in list(model.graph.node):
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        if node.input[0] in constants:  # a weight kept in float behind its own Q/DQ pair: weights stay int8
            continue
        zero = inits[node.input[2]]
        readers = consumers.get(node.output[0], [])
        if zero.data_type != source or not readers or any(r.op_type != "DequantizeLinear" for r in readers):
            continue
        values = (numpy_helper.to_array(zero).astype(np.int16) + shift).astype(np.uint8 if shift > 0 else np.int8)
        name = f"{node.output[0]}_zero_point_{activations}"  # its own initializer: the old one may be shared
        replaced.add(zero.name)
        model.graph.initializer.append(numpy_helper.from_array(values, name))
        for user in (node, *readers):
            user.input[2] = name
        changed.add(node.output[0])
    for info in model.graph.value_info:  # the quantized tensors' recorded types
        if info.name in changed:
            info.type.tensor_type.elem_type = target
    _drop_unused(model, replaced)
    return len(changed)


def _drop_unused(model: Any, names: set[str]) -> None:
    """Remove the initializers in ``names`` that no node reads any more."""
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used or i.name not in names]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
