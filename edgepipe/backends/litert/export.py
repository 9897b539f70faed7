"""TFLite exporters, converted through a SavedModel export of the Keras model.

Every file gets TFLite model metadata (image input with identity normalization,
labels as an associated file, name and version) so MediaPipe Tasks and other
TFLite Support clients can use it as it is, and edgepipe's own record of its
format and precision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgepipe.versions import __version__
from edgepipe.backends.context import ExportContext
from edgepipe.backends.litert.backend import LITERT
from edgepipe.calibration import CalibrationSet, draw, tflite_representative_dataset
from edgepipe.errors import EdgepipeError
from edgepipe.fileio import write_bytes
from edgepipe.quantization.budget import Attempt, within_budget
from edgepipe.quiet import native_output_suppressed

SENSITIVE_LAYERS_KEPT_FLOAT = 3


def _converter(ctx: ExportContext):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(ctx.saved_model()))


def _convert(converter) -> bytes:
    with native_output_suppressed():
        return converter.convert()


def tensor_types(model_bytes_or_path) -> dict[str, Any]:
    """What a TFLite flatbuffer holds, read back by LiteRT: input/output dtypes and tensor dtype counts."""
    from edgepipe.backends.litert.runner import open_interpreter

    try:
        interpreter = open_interpreter(model_bytes_or_path)  # a file LiteRT cannot prepare is no artifact
    except RuntimeError as exc:
        raise EdgepipeError(f"LiteRT cannot run the converted model: {str(exc).strip().splitlines()[0][:200]}") from None
    counts: dict[str, int] = {}
    for d in interpreter.get_tensor_details():
        name = np.dtype(d["dtype"]).name
        counts[name] = counts.get(name, 0) + 1
    return {
        "input_dtype": np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
        "output_dtype": np.dtype(interpreter.get_output_details()[0]["dtype"]).name,
        "tensor_dtypes": counts,
    }


def _write(ctx: ExportContext, fmt: str, path: Path, model: bytes, expect: dict[str, Any]) -> dict[str, Any]:
    """Check the flatbuffer holds the tensor types its format name promises, add the metadata, write it."""
    from edgepipe.backends.base import FORMATS
    from edgepipe.backends.litert.metadata import write_metadata

    types = tensor_types(model)
    problems = [f"{key} is {types[key]}, expected {value}" for key, value in expect.items()
                if key in types and types[key] != value]
    if "has" in expect and not types["tensor_dtypes"].get(expect["has"]):
        problems.append(f"no {expect['has']} tensors")
    if problems:
        raise EdgepipeError("the converter's output is not what the format promises: " + "; ".join(problems))
    described = FORMATS.get(fmt)
    info = {"format": fmt, "precision": described.precision, "producer": f"edgepipe {__version__}",
            "preprocessing": ctx.preprocessing}
    model = write_metadata(model, name=f"{ctx.model.name} ({fmt})", description=described.description,
                           version=__version__, labels=list(ctx.labels), edgepipe_info=info)
    write_bytes(path, model)
    return types


def _integer_io(ctx: ExportContext) -> str:
    return ctx.options_for("litert").int8_io


@LITERT.format("tflite-fp32", container="tflite", precision="fp32", description="TFLite, float32 weights and activations")
def export_tflite_fp32(ctx: ExportContext, path: Path) -> dict[str, Any]:
    return _write(ctx, "tflite-fp32", path, _convert(_converter(ctx)), {"input_dtype": "float32", "output_dtype": "float32"})


@LITERT.format("tflite-fp16", container="tflite", precision="fp16",
               description="TFLite, float16 weights (dequantized to float32 at load on CPU; native fp16 on GPU delegates)")
def export_tflite_fp16(ctx: ExportContext, path: Path) -> dict[str, Any]:
    import tensorflow as tf

    converter = _converter(ctx)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return _write(ctx, "tflite-fp16", path, _convert(converter), {"input_dtype": "float32", "has": "float16"})


@LITERT.format("tflite-dynamic", container="tflite", precision="dynamic",
               description="TFLite dynamic range: int8 weights, float activations (no calibration)")
def export_tflite_dynamic(ctx: ExportContext, path: Path) -> dict[str, Any]:
    import tensorflow as tf

    converter = _converter(ctx)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return _write(ctx, "tflite-dynamic", path, _convert(converter),
                  {"input_dtype": "float32", "output_dtype": "float32", "has": "int8"})


def _need_calibration(ctx: ExportContext, name: str) -> CalibrationSet:
    if ctx.calibration is None or len(ctx.calibration) == 0:
        raise EdgepipeError(f"{name} needs calibration images", "Pass --calibration-data DIR or export from a run directory.")
    return ctx.calibration


def _full_integer_converter(ctx: ExportContext, calibration: CalibrationSet):
    import tensorflow as tf

    converter = _converter(ctx)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = tflite_representative_dataset(calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    io_type = tf.uint8 if _integer_io(ctx) == "uint8" else tf.int8
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
    return converter


def _larger_calibration(ctx: ExportContext) -> Optional[CalibrationSet]:
    if ctx.calibration_pool is None:
        return None
    images, labels = ctx.calibration_pool
    size = min(len(labels), 4 * len(ctx.calibration))
    return draw(images, labels, size, ctx.calibration.seed) if size > len(ctx.calibration) else None


def _sensitive_nodes(ctx: ExportContext, calibration: CalibrationSet, count: int) -> list[str]:
    """The ops whose quantization error (RMSE / scale) is largest, by TFLite's quantization debugger."""
    import tensorflow as tf

    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=_full_integer_converter(ctx, calibration),
        debug_dataset=tflite_representative_dataset(calibration))
    with native_output_suppressed():
        debugger.run()
    stats = [(s.get("rmse/scale", 0.0), name) for name, s in debugger.layer_statistics.items()]
    return [_tensor_name(name) for _, name in sorted(stats, reverse=True)[:count]]


def _tensor_name(numeric_verify_name: str) -> str:
    """The quantized op's output tensor name that ``denylisted_nodes`` expects, from the debugger's
    statistics key ``NumericVerify/<tensor name><digit>:<index>`` (as its CSV dump maps them)."""
    name = numeric_verify_name.rsplit(":", 1)[0]
    name = name[len("NumericVerify/"):] if name.startswith("NumericVerify/") else name
    return name[:-1] if name and name[-1].isdigit() else name


def _denylisted_model(ctx: ExportContext, calibration: CalibrationSet, nodes: list[str]) -> bytes:
    """Full-integer model with ``nodes`` left in float and integer input/output as the format promises.

    The debugger calibrates; its own ``get_nondebug_quantized_model`` would leave the model's
    input and output in float32, so the calibrated model is quantized here the way the
    converter itself does it (the MLIR quantizer with the integer input/output types).
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert

    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=_full_integer_converter(ctx, calibration),
        debug_dataset=tflite_representative_dataset(calibration), debug_options=options)
    io_type = tf.uint8 if _integer_io(ctx) == "uint8" else tf.int8
    with native_output_suppressed():
        return convert.mlir_quantize(debugger.calibrated_model, disable_per_channel=False, input_data_type=io_type,
                                     output_data_type=io_type, denylisted_nodes=nodes)


@LITERT.format("tflite-int8", container="tflite", precision="int8", needs_calibration=True,
               description="TFLite, full integer: int8 weights and activations, integer input/output (calibrated)")
def export_tflite_int8(ctx: ExportContext, path: Path) -> dict[str, Any]:
    calibration = _need_calibration(ctx, "tflite-int8")
    io = {"input_dtype": _integer_io(ctx), "output_dtype": _integer_io(ctx)}
    state: dict[str, Any] = {}

    def write(p: Path, model: bytes, chosen: CalibrationSet) -> dict[str, Any]:
        return {**_write(ctx, "tflite-int8", p, model, io), "calibration_images": len(chosen),
                "calibration_sha256": chosen.digest}

    def first():
        return Attempt(f"post-training full-integer quantization, min-max calibration on {len(calibration)} images",
                       lambda p: write(p, _convert(_full_integer_converter(ctx, calibration)), calibration))

    def larger():
        bigger = _larger_calibration(ctx)
        if bigger is None:
            return None
        state["calibration"] = bigger
        return Attempt(f"larger calibration set: {len(bigger)} training images",
                       lambda p: write(p, _convert(_full_integer_converter(ctx, bigger)), bigger))

    def keep_sensitive_float():
        chosen = state.get("calibration", calibration)
        nodes = _sensitive_nodes(ctx, chosen, SENSITIVE_LAYERS_KEPT_FLOAT)
        return Attempt(f"{len(nodes)} most sensitive ops kept in float (largest RMSE/scale in TFLite's quantization debugger)",
                       lambda p: {**write(p, _denylisted_model(ctx, chosen, nodes), chosen), "kept_float": nodes,
                                  "kept_float_reason": "largest quantization error (RMSE / scale) per op"})

    return within_budget(ctx, path, "tflite-int8", [first, larger, keep_sensitive_float])


@LITERT.format("tflite-int16x8", container="tflite", precision="int16x8", needs_calibration=True,
               description="TFLite, int16 activations and int8 weights (calibrated; float input/output)")
def export_tflite_int16x8(ctx: ExportContext, path: Path) -> dict[str, Any]:
    import tensorflow as tf

    calibration = _need_calibration(ctx, "tflite-int16x8")
    converter = _converter(ctx)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = tflite_representative_dataset(calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    details = _write(ctx, "tflite-int16x8", path, _convert(converter), {"has": "int16"})
    return {**details, "calibration_images": len(calibration), "calibration_sha256": calibration.digest}
