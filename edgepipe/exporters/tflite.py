"""TFLite exporters, converted through a SavedModel export of the Keras model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepipe.calibration import tflite_representative_dataset
from edgepipe.errors import EdgepipeError
from edgepipe.exporters.base import ExportContext, register_exporter
from edgepipe.fileio import write_bytes
from edgepipe.quiet import native_output_suppressed


def _converter(ctx: ExportContext):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(ctx.saved_model()))


def tensor_types(model_bytes_or_path) -> dict[str, Any]:
    """Types of a TFLite model's tensors: input/output dtypes and the float tensors it holds."""
    from ai_edge_litert.interpreter import Interpreter

    kwargs = {"model_path": str(model_bytes_or_path)} if isinstance(model_bytes_or_path, (str, Path)) else {"model_content": model_bytes_or_path}
    with native_output_suppressed():
        interpreter = Interpreter(**kwargs)
    details = interpreter.get_tensor_details()
    float_tensors = [d["name"] for d in details if str(d["dtype"].__name__) == "float32"]
    return {
        "input_dtype": interpreter.get_input_details()[0]["dtype"].__name__,
        "output_dtype": interpreter.get_output_details()[0]["dtype"].__name__,
        "tensors": len(details),
        "float32_tensors": float_tensors,
    }


def _convert(converter) -> bytes:
    with native_output_suppressed():
        return converter.convert()


def _write(path: Path, model: bytes) -> dict[str, Any]:
    write_bytes(path, model)
    types = tensor_types(model)
    return {"input_dtype": types["input_dtype"], "output_dtype": types["output_dtype"], "tensors": types["tensors"],
            "float32_tensors": len(types["float32_tensors"])}


@register_exporter("tflite-fp32", suffix=".tflite", precision="fp32", description="TFLite, float32 weights and activations")
def export_tflite_fp32(ctx: ExportContext, path: Path) -> dict[str, Any]:
    return _write(path, _convert(_converter(ctx)))


@register_exporter(
    "tflite-int8", suffix=".tflite", precision="int8", needs_calibration=True,
    description="TFLite, full integer: int8 weights and activations, integer input/output (calibrated)",
)
def export_tflite_int8(ctx: ExportContext, path: Path) -> dict[str, Any]:
    import tensorflow as tf

    if ctx.calibration is None or len(ctx.calibration) == 0:
        raise EdgepipeError("tflite-int8 needs calibration images", "Pass --calibration-data DIR or export from a run directory.")
    converter = _converter(ctx)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = tflite_representative_dataset(ctx.calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    io_type = tf.uint8 if ctx.int8_io == "uint8" else tf.int8
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
    details = _write(path, _convert(converter))
    if details["input_dtype"] != ctx.int8_io or details["output_dtype"] != ctx.int8_io:
        path.unlink()
        raise EdgepipeError(
            f"the converter produced {details['input_dtype']} input / {details['output_dtype']} output, not {ctx.int8_io}"
        )
    details["calibration_sha256"] = ctx.calibration.digest
    details["calibration_images"] = len(ctx.calibration)
    return details
