"""ONNX exporters: tf2onnx for FP32, then FP16 conversion and ONNX Runtime static INT8 (QDQ) on its output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgepipe.versions import __version__
from edgepipe.backends.base import FORMATS
from edgepipe.backends.context import ExportContext
from edgepipe.backends.onnxruntime.backend import FORMAT_KEY, LABELS_KEY, ONNX, PRECISION_KEY
from edgepipe.errors import EdgepipeError
from edgepipe.fileio import write_bytes
from edgepipe.quantization.budget import Attempt, within_budget
from edgepipe.quiet import native_output_suppressed

INPUT_NAME = "image"
SENSITIVE_NODES_KEPT_FLOAT = 3
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def _stamp(model_proto, ctx: ExportContext, format_name: str) -> None:
    """Record labels, preprocessing, format and precision in the model's metadata_props (replacing old values)."""
    props = {
        LABELS_KEY: json.dumps(ctx.labels),
        "preprocessing": json.dumps(ctx.preprocessing),
        "input": "raw pixels 0..255, float32, NHWC",
        "producer": f"edgepipe {__version__}",
        FORMAT_KEY: format_name,
        PRECISION_KEY: FORMATS.get(format_name).precision,
    }
    kept = [(p.key, p.value) for p in model_proto.metadata_props if p.key not in props]
    del model_proto.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def _check_and_write(model_proto, path: Path, ctx: ExportContext, format_name: str) -> None:
    import onnx

    _stamp(model_proto, ctx, format_name)
    onnx.checker.check_model(model_proto, full_check=True)
    write_bytes(path, model_proto.SerializeToString())


@ONNX.format("onnx-fp32", container="onnx", precision="fp32",
             description="ONNX (opset export.onnx.opset), float32, dynamic batch (tf2onnx); labels and preprocessing in metadata")
def export_onnx_fp32(ctx: ExportContext, path: Path) -> dict[str, Any]:
    import tensorflow as tf
    import tf2onnx

    opset = ctx.options_for("onnxruntime").opset
    shape = (None, *ctx.model.inputs[0].shape[1:])
    spec = (tf.TensorSpec(shape, tf.float32, name=INPUT_NAME),)
    with native_output_suppressed():
        model_proto, _ = tf2onnx.convert.from_keras(ctx.model, input_signature=spec, opset=opset)
    _check_and_write(model_proto, path, ctx, "onnx-fp32")
    ctx.outputs["onnx-fp32"] = path
    return {"opset": opset, "input": INPUT_NAME, "outputs": [o.name for o in model_proto.graph.output]}


@ONNX.format("onnx-fp16", container="onnx", precision="fp16", tolerance="fp16-compute",
             description="ONNX, float16 weights and activations inside, float32 input/output")
def export_onnx_fp16(ctx: ExportContext, path: Path) -> dict[str, Any]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(ctx.require("onnx-fp32")))
    half = OnnxModel(convert_float_to_float16(model, keep_io_types=True))
    half.topological_sort()  # the converter appends its output casts after their consumers
    _check_and_write(half.model, path, ctx, "onnx-fp16")
    return {"opset": ctx.options_for("onnxruntime").opset, "io_types": "float32", "converted_from": "onnx-fp32"}


class _Reader:
    """ONNX Runtime CalibrationDataReader over the shared calibration set (a thin adapter)."""

    def __new__(cls, calibration, input_name: str):
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def __init__(self):
                self._feeds = calibration.batches(input_name, batch_size=1)

            def get_next(self):
                return next(self._feeds, None)

            def rewind(self):
                self._feeds = calibration.batches(input_name, batch_size=1)

        return Reader()


def _preprocessed(ctx: ExportContext) -> Path:
    """onnx-fp32 after ONNX Runtime's quantization preprocessing (shape inference, graph optimization)."""
    out = ctx.workdir / "onnx-fp32-preprocessed.onnx"
    if not out.exists():
        from onnxruntime.quantization.shape_inference import quant_pre_process

        with native_output_suppressed():
            quant_pre_process(str(ctx.require("onnx-fp32")), str(out), skip_symbolic_shape=False)
    return out


def _quantize(ctx: ExportContext, path: Path, method: str, exclude: list[str]) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    options = ctx.options_for("onnxruntime")
    symmetric, per_channel = options.symmetric_activations, options.per_channel
    raw = ctx.workdir / f"quantized-{path.name}"
    with native_output_suppressed():
        quantize_static(
            str(_preprocessed(ctx)), str(raw), _Reader(ctx.calibration, INPUT_NAME),
            quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8 if options.activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, METHODS[method]),
            nodes_to_exclude=exclude or None,
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
        )
    model = onnx.load(str(raw))
    qdq = sum(1 for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear"))
    if qdq == 0:
        raise EdgepipeError("ONNX Runtime produced no QuantizeLinear/DequantizeLinear nodes")
    _check_and_write(model, path, ctx, "onnx-int8")
    return {"format": "QDQ", "per_channel": per_channel, "activations": options.activations + (" symmetric" if symmetric else ""),
            "weights": "int8 symmetric", "calibration_method": method, "qdq_nodes": qdq,
            "calibration_images": len(ctx.calibration), "calibration_sha256": ctx.calibration.digest,
            "kept_float": exclude}


def _sensitive_nodes(ctx: ExportContext, quantized: Path, count: int) -> list[str]:
    """Nodes whose outputs lose most signal to quantization (lowest SQNR of QDQ against float activations),
    by ONNX Runtime's qdq_loss_debug tools."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    float_path, qdq_path = ctx.workdir / "debug-float.onnx", ctx.workdir / "debug-qdq.onnx"
    with native_output_suppressed():
        modify_model_output_intermediate_tensors(str(_preprocessed(ctx)), str(float_path))
        modify_model_output_intermediate_tensors(str(quantized), str(qdq_path))
        float_acts = collect_activations(str(float_path), _Reader(ctx.calibration, INPUT_NAME))
        qdq_acts = collect_activations(str(qdq_path), _Reader(ctx.calibration, INPUT_NAME))
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    producer = {out: node.name for node in onnx.load(str(_preprocessed(ctx))).graph.node for out in node.output}
    ranked = sorted((e.get("qdq_err", float("inf")), t) for t, e in errors.items() if t in producer)
    nodes: list[str] = []
    for _, tensor in ranked:
        if producer[tensor] not in nodes:
            nodes.append(producer[tensor])
        if len(nodes) == count:
            break
    return nodes


@ONNX.format("onnx-int8", container="onnx", precision="int8", needs_calibration=True,
             description="ONNX, static INT8 in QDQ format (ONNX Runtime), per-channel weights, calibrated")
def export_onnx_int8(ctx: ExportContext, path: Path) -> dict[str, Any]:
    if ctx.calibration is None or len(ctx.calibration) == 0:
        raise EdgepipeError("onnx-int8 needs calibration images", "Pass --calibration-data DIR or export from a run directory.")
    first_method = ctx.calibration_method
    others = [m for m in ("percentile", "entropy") if m != first_method]
    state: dict[str, Path] = {}

    def recipe(method: str):
        def factory():
            def build(p: Path):
                details = _quantize(ctx, p, method, [])
                state.setdefault("first", p)
                return details
            return Attempt(f"static QDQ, {method} calibration on {len(ctx.calibration)} images", build)
        factory.__name__ = f"{method} calibration"
        return factory

    def keep_sensitive_float():
        nodes = _sensitive_nodes(ctx, state["first"], SENSITIVE_NODES_KEPT_FLOAT)
        return Attempt(f"{first_method} calibration with the {len(nodes)} most sensitive nodes kept in float "
                       "(lowest SQNR against the float model)",
                       lambda p: {**_quantize(ctx, p, first_method, nodes),
                                  "kept_float_reason": "lowest SQNR of quantized against float activations"})
    keep_sensitive_float.__name__ = "sensitive nodes kept in float"

    return within_budget(ctx, path, "onnx-int8", [recipe(first_method), *[recipe(m) for m in others], keep_sensitive_float])
