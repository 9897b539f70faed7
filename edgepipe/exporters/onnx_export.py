"""ONNX exporters (tf2onnx)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgepipe.exporters.base import ExportContext, register_exporter
from edgepipe.fileio import write_bytes

OPSET = 17
INPUT_NAME = "image"


def _metadata(ctx: ExportContext) -> dict[str, str]:
    return {
        "labels": json.dumps(ctx.labels),
        "preprocessing": json.dumps(ctx.preprocessing),
        "input": "raw pixels 0..255, float32, NHWC",
        "producer": "edgepipe",
    }


@register_exporter("onnx-fp32", suffix=".onnx", precision="fp32",
                   description=f"ONNX opset {OPSET}, float32, dynamic batch (tf2onnx)")
def export_onnx_fp32(ctx: ExportContext, path: Path) -> dict[str, Any]:
    import onnx
    import tensorflow as tf
    import tf2onnx

    shape = (None, *ctx.model.inputs[0].shape[1:])
    spec = (tf.TensorSpec(shape, tf.float32, name=INPUT_NAME),)
    from edgepipe.quiet import native_output_suppressed

    with native_output_suppressed():
        model_proto, _ = tf2onnx.convert.from_keras(ctx.model, input_signature=spec, opset=OPSET)
    for key, value in _metadata(ctx).items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model_proto, full_check=True)
    write_bytes(path, model_proto.SerializeToString())
    return {"opset": OPSET, "input": INPUT_NAME, "outputs": [o.name for o in model_proto.graph.output]}
