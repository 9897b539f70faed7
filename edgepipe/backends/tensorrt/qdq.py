"""The QDQ graph TensorRT builds its INT8 engines from, made and checked on the CPU.

TensorRT quantizes symmetrically: its parser accepts a QuantizeLinear only with an int8 zero point of 0,
so the ``onnx-int8`` artifact (uint8, asymmetric activations: what ONNX Runtime on x86 runs fastest) cannot
be handed to it. This graph is ``onnx-fp32`` quantized again by ONNX Runtime's quantizer with int8 symmetric
activations, int8 symmetric per-channel weights (stored int8 behind a DequantizeLinear, as TensorRT's
pre-quantized weights are) and biases left in float (TensorRT quantizes no bias). It is the same for a
Keras-born network and a foreign ONNX one: both reach here as ``onnx-fp32``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.backends.context import ExportContext
from edgepipe.errors import EdgepipeError

#: weighted ops and the axis of their weight that holds the output channels (Gemm: transB decides)
WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1}


def tensorrt_int8_graph(ctx: ExportContext) -> Path:
    """The QDQ ONNX file TensorRT's parser gets for ``tensorrt-int8``, made once per export in the work folder
    from ``onnx-fp32`` and the calibration set (the export's calibration method).

    Raises EdgepipeError when there are no calibration images, or when the graph breaks a rule
    :func:`tensorrt_qdq_problems` checks (nothing is handed to TensorRT then).
    """
    import onnx

    from edgepipe.backends.onnxruntime.export import static_qdq

    if ctx.calibration is None or len(ctx.calibration) == 0:
        raise EdgepipeError(
            "tensorrt-int8 needs calibration images", "Pass --calibration-data DIR or export from a run directory."
        )
    out = ctx.workdir / "tensorrt-int8-qdq.onnx"
    if not out.exists():
        made = ctx.workdir / "tensorrt-int8-qdq-unchecked.onnx"
        static_qdq(
            ctx,
            ctx.calibration_method,
            made,
            activations="int8",
            symmetric_activations=True,
            per_channel=True,
            quantize_bias=False,
        )
        problems = tensorrt_qdq_problems(onnx.load(str(made)))
        if problems:
            raise EdgepipeError("the QDQ graph for TensorRT breaks its rules: " + "; ".join(problems[:3]))
        made.replace(out)
    return out


def _zero_point(node: Any, inits: dict[str, Any]) -> tuple[int, np.ndarray] | None:
    """(element type, values) of a Q/DQ node's zero point, or None when it has none (ONNX's default: uint8)."""
    from onnx import numpy_helper

    if len(node.input) < 3 or not node.input[2]:
        return None
    zero = inits.get(node.input[2])
    return None if zero is None else (zero.data_type, numpy_helper.to_array(zero))


def _weight_problem(dq: Any, inits: dict[str, Any], readers: list[Any]) -> str | None:
    """Why the DequantizeLinear ``dq`` of a stored weight is not int8 per-channel for its op, or None."""
    import onnx

    weight, scale = inits[dq.input[0]], inits.get(dq.input[1])
    if weight.data_type != onnx.TensorProto.INT8:
        return f"weight {dq.input[0]} is stored as {onnx.TensorProto.DataType.Name(weight.data_type)}, not INT8"
    op = next((r for r in readers if r.op_type in (*WEIGHT_AXIS, "Gemm")), None)
    if op is None or list(op.input).index(dq.output[0]) != 1:
        return None  # not the weight input of a weighted op (TensorRT takes per-tensor there)
    axis = WEIGHT_AXIS.get(op.op_type)
    if op.op_type == "Gemm":
        axis = 0 if any(a.name == "transB" and a.i == 1 for a in op.attribute) else 1
    channels = weight.dims[axis] if axis < len(weight.dims) else 1
    per_channel = scale is not None and int(np.prod(scale.dims)) == channels
    attribute_axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if not per_channel or (channels > 1 and attribute_axis % len(weight.dims) != axis):
        return f"weight {dq.input[0]} of {op.op_type} {op.name} is not quantized per output channel"
    return None


def tensorrt_qdq_problems(model: Any) -> list[str]:
    """What in a QDQ onnx.ModelProto TensorRT's explicit quantization would refuse or not get: a
    QuantizeLinear or DequantizeLinear whose zero point is missing (uint8), not int8 or not 0; a stored weight
    not int8, or a Conv/Gemm/MatMul weight quantized per tensor; no QuantizeLinear at all. Empty: none."""
    import onnx

    inits = {i.name: i for i in model.graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    problems = []
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    if not quantizers:
        problems.append("it holds no QuantizeLinear node")
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zero = _zero_point(node, inits)
        if zero is None or zero[0] != onnx.TensorProto.INT8:
            kind = "none (uint8)" if zero is None else onnx.TensorProto.DataType.Name(zero[0])
            problems.append(f"{node.op_type} {node.name} has zero point type {kind}, not INT8")
        elif np.any(zero[1] != 0):
            problems.append(f"{node.op_type} {node.name} has a zero point other than 0 (asymmetric)")
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            problem = _weight_problem(node, inits, readers.get(node.output[0], []))
            if problem:
                problems.append(problem)
    return problems
