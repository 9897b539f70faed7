"""ONNX exporters: tf2onnx for FP32, then FP16 conversion and static INT8 (QDQ) on its output: ONNX Runtime's
quantizer first, NNCF's post-training quantization and accuracy control when those lose too much accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgepipe.backends.base import FORMATS
from edgepipe.backends.context import ExportContext
from edgepipe.backends.onnxruntime import nncf_int8
from edgepipe.backends.onnxruntime.backend import FORMAT_KEY, LABELS_KEY, ONNX, PRECISION_KEY, RAW_INPUT
from edgepipe.backends.onnxruntime.qdq import ort_kernels, qdq_count, set_activation_type
from edgepipe.errors import EdgepipeError
from edgepipe.fileio import write_bytes
from edgepipe.quantization.budget import Attempt, Recipe, within_budget
from edgepipe.quiet import native_output_suppressed
from edgepipe.versions import __version__

INPUT_NAME = "image"
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def _stamp(model_proto, ctx: ExportContext, format_name: str) -> None:
    """Record labels, preprocessing, format and precision in the model's metadata_props (replacing old values)."""
    props = {
        LABELS_KEY: json.dumps(ctx.labels),
        "preprocessing": json.dumps(ctx.preprocessing),
        "input": RAW_INPUT,
        "producer": f"edgepipe {__version__}",
        FORMAT_KEY: format_name,
        PRECISION_KEY: FORMATS.get(format_name).precision,
    }
    kept = [(p.key, p.value) for p in model_proto.metadata_props if p.key not in props]
    del model_proto.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def _basic_optimized(model_proto, workdir: Path):
    """The graph after ONNX Runtime's basic optimizations (constant folding, transpose and redundant-node
    elimination, Conv/BatchNormalization/Add fusion): standard ONNX operators only, so any engine reads it.
    Opset imports the optimizer adds but no node uses are dropped."""
    import onnx
    import onnxruntime as ort

    raw, optimized = workdir / "tf2onnx-raw.onnx", workdir / "tf2onnx-basic.onnx"
    onnx.save(model_proto, str(raw))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(optimized)
    options.log_severity_level = 3
    ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
    model = onnx.load(str(optimized))
    used = {node.domain for node in model.graph.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def _check_and_write(model_proto, path: Path, ctx: ExportContext, format_name: str) -> None:
    import onnx

    _stamp(model_proto, ctx, format_name)
    onnx.checker.check_model(model_proto, full_check=True)
    write_bytes(path, model_proto.SerializeToString())


@ONNX.format(
    "onnx-fp32",
    container="onnx",
    precision="fp32",
    description="ONNX (opset export.onnx.opset), float32, dynamic batch (tf2onnx); labels and preprocessing in metadata",
)
def export_onnx_fp32(ctx: ExportContext, path: Path) -> dict[str, Any]:
    if ctx.source_onnx is not None:
        return _onnx_fp32_from_onnx(ctx, path)
    import tensorflow as tf
    import tf2onnx

    opset = ctx.options_for("onnxruntime").opset
    shape = (None, *ctx.model.inputs[0].shape[1:])
    spec = (tf.TensorSpec(shape, tf.float32, name=INPUT_NAME),)
    with native_output_suppressed():
        # tf2onnx's own graph optimizers copy every weight many times over: ResNet50 (98 MB of weights) peaked at
        # 7.0 GB with them and 2.8 GB without; ONNX Runtime's basic (standard-op) optimizations then fold the
        # layout transposes and constants just as well, in a fraction of the memory
        if ctx.frozen_graph:
            model_proto = _from_frozen_graph(ctx, opset)
        else:
            model_proto, _ = tf2onnx.convert.from_keras(ctx.model, input_signature=spec, opset=opset, optimizers={})
    model_proto = _basic_optimized(model_proto, ctx.workdir)
    _check_and_write(model_proto, path, ctx, "onnx-fp32")
    ctx.outputs["onnx-fp32"] = path
    return {"opset": opset, "input": INPUT_NAME, "outputs": [o.name for o in model_proto.graph.output]}


def _from_frozen_graph(ctx: ExportContext, opset: int):
    """The ONNX graph tf2onnx makes of the Keras model, from the frozen graph the TFLite formats of this export
    were converted from (ExportContext.frozen_function) instead of tracing and freezing the model again: what
    ``from_keras`` does after that, step for step (grappler, then the conversion, tensors renamed to the Keras
    input and output names). The same nodes in the same order (tests/backends/test_frozen_graph.py), in a
    third of the time; for files made to be timed."""
    import tensorflow as tf
    from tf2onnx import convert, tf_loader

    frozen = ctx.frozen_function()
    inputs, outputs = [t.name for t in frozen.inputs], [t.name for t in frozen.outputs]
    with tf.Graph().as_default():
        graph_def = tf_loader.tf_optimize(inputs, outputs, frozen.graph.as_graph_def())
    names = {inputs[0]: INPUT_NAME, **dict(zip(outputs, ctx.model.output_names))}
    with tf.device("/cpu:0"):
        model_proto, _ = convert._convert_common(
            graph_def,
            name=ctx.model.name,
            continue_on_error=True,
            opset=opset,
            optimizers={},
            input_names=inputs,
            output_names=outputs,
            tensors_to_rename=names,
        )
    return model_proto


def _onnx_fp32_from_onnx(ctx: ExportContext, path: Path) -> dict[str, Any]:
    """onnx-fp32 of an ONNX source: its raw-pixel graph after ONNX Runtime's basic optimizations (which fold the
    preprocessing's transpose into the first convolution's neighbours where they can), in its own opset."""
    import onnx

    model_proto = _basic_optimized(onnx.load(str(ctx.source_onnx)), ctx.workdir)
    _check_and_write(model_proto, path, ctx, "onnx-fp32")
    ctx.outputs["onnx-fp32"] = path
    opset = next((o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "opset": opset,
        "input": INPUT_NAME,
        "outputs": [o.name for o in model_proto.graph.output],
        "converted_from": "the source ONNX model, its preprocessing folded in",
    }


@ONNX.format(
    "onnx-fp16",
    container="onnx",
    precision="fp16",
    tolerance="fp16-compute",
    description="ONNX, float16 weights and activations inside, float32 input/output",
)
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


def static_qdq(
    ctx: ExportContext,
    method: str,
    out: Path,
    activations: str,
    symmetric_activations: bool,
    per_channel: bool,
    quantize_bias: bool = True,
    reduce_range: bool = False,
) -> None:
    """ONNX Runtime's static QDQ quantization of the preprocessed onnx-fp32, written at ``out``: ``activations``
    ('uint8' or 'int8') per tensor, symmetric (zero point 0) or not; weights int8 symmetric, per output channel
    or per tensor, in 7 bits with ``reduce_range``; biases int32 behind a DequantizeLinear, or (``quantize_bias``
    off) left in float. Calibrated with ``method`` (minmax, entropy, percentile) on the export's calibration
    set."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with native_output_suppressed():
        quantize_static(
            str(_preprocessed(ctx)),
            str(out),
            _Reader(ctx.calibration, INPUT_NAME),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, METHODS[method]),
            extra_options={
                "ActivationSymmetric": symmetric_activations,
                "WeightSymmetric": True,
                "QuantizeBias": quantize_bias,
            },
        )


def _quantize(ctx: ExportContext, method: str) -> tuple[Any, dict[str, Any]]:
    """ONNX Runtime's static QDQ quantization of the preprocessed onnx-fp32 with ``method`` calibration and the
    export's onnx options: (onnx.ModelProto, what was done)."""
    import onnx

    options = ctx.options_for("onnxruntime")
    symmetric, per_channel = options.symmetric_activations, options.per_channel
    raw = ctx.workdir / f"quantized-{method}.onnx"
    static_qdq(ctx, method, raw, options.activations, symmetric, per_channel, reduce_range=options.int8_reduce_range)
    return onnx.load(str(raw)), {
        "tool": "onnxruntime.quantization.quantize_static",
        "calibration_method": method,
        "activations": f"{options.activations} per-tensor " + ("symmetric" if symmetric else "asymmetric"),
        "weights": options.weights_description(),
    }


def _write_int8(ctx: ExportContext, model, details: dict[str, Any], path: Path) -> dict[str, Any]:
    """Give the QDQ model the export's activation type, read what ONNX Runtime runs in float, stamp, check and
    write it at ``path``; its details. EdgepipeError when the model holds no QDQ nodes."""
    set_activation_type(model, ctx.options_for("onnxruntime").activations)  # NNCF writes int8 below zero
    qdq = qdq_count(model)
    if qdq == 0:
        raise EdgepipeError("the quantizer produced no QuantizeLinear/DequantizeLinear nodes")
    kernels = ort_kernels(model, ctx.workdir)
    _check_and_write(model, path, ctx, "onnx-int8")
    return {
        "format": "QDQ",
        **details,
        "qdq_nodes": qdq,
        "integer_ops": len(kernels["integer"]),
        "calibration_images": len(ctx.calibration),
        "calibration_sha256": ctx.calibration.digest,
        # what ONNX Runtime runs in float, read from its optimized model (not from the file's QDQ nodes)
        "kept_float": kernels["float"],
        "float_other_ops": kernels["float_other"],
        **(
            {"kept_float_reason": "ONNX Runtime fuses no integer kernel for them as quantized here"}
            if kernels["float"]
            else {}
        ),
    }


def _ort_recipe(ctx: ExportContext, method: str) -> Recipe:
    def factory() -> Attempt:
        return Attempt(
            f"ONNX Runtime static QDQ, {method} calibration on {len(ctx.calibration)} images",
            lambda p: _write_int8(ctx, *_quantize(ctx, method), p),
        )

    return Recipe(f"{method} calibration", factory)


def _nncf_recipe(ctx: ExportContext, learned: dict[str, Any]) -> Recipe:
    """NNCF post-training quantization; records in ``learned`` whether full bias correction worked here."""

    def factory() -> Attempt:
        _require_nncf()

        def build(p: Path) -> dict[str, Any]:
            model, details = nncf_int8.quantize(ctx, _preprocessed(ctx))
            learned["fast_bias_correction"] = details["bias_correction"] != "full"
            return _write_int8(ctx, model, details, p)

        return Attempt(f"NNCF post-training quantization (bias correction) on {len(ctx.calibration)} images", build)

    return Recipe("NNCF post-training quantization", factory)


def _accuracy_control_recipe(ctx: ExportContext, learned: dict[str, Any]) -> Recipe:
    """NNCF accuracy control, from the same bias correction as the NNCF recipe (when it ran)."""

    def factory() -> Attempt | None:
        if ctx.validation is None or len(ctx.validation[1]) == 0:
            return None  # nothing to measure effects on
        _require_nncf()

        def build(p: Path) -> dict[str, Any]:
            quantized = nncf_int8.quantize_with_accuracy_control(
                ctx, _preprocessed(ctx), learned.get("fast_bias_correction")
            )
            details = _write_int8(ctx, *quantized, p)
            return {
                **details,
                "kept_float_reason": "reverted to float by NNCF's accuracy control (largest measured "
                "top-1 effect on the validation split), or left in float by NNCF",
            }

        return Attempt(
            f"sensitivity by effect: NNCF accuracy control reverts quantized ops to float until the top-1 "
            f"drop is at most {ctx.accuracy_budget_pp} pp on {len(ctx.validation[1])} validation images",
            build,
        )

    return Recipe("NNCF accuracy control", factory)


def _qat_recipe(ctx: ExportContext, **overrides: Any) -> Recipe:
    """Quantization-aware fine-tuning, then ONNX Runtime's QDQ of the fine-tuned model (its weights already on
    the int8 grid; activations re-calibrated, as ONNX Runtime's quantizer takes no FakeQuant ranges)."""
    from edgepipe.quantization.budget import Skipped
    from edgepipe.quantization.qat import NOT_KERAS, qat_recipe  # imports Keras: only when INT8 is exported

    if ctx.model is None:
        return Recipe("quantization-aware fine-tuning", lambda: Skipped(NOT_KERAS))
    if not ctx.options_for("onnxruntime").per_channel:
        reason = "export.onnx.per_channel is off: the fine-tuning simulates per-channel weights"
        return Recipe("quantization-aware fine-tuning", lambda: Skipped(reason))
    method = ctx.calibration_method
    return qat_recipe(
        ctx,
        lambda fine_tuned, p: _write_int8(fine_tuned, *_quantize(fine_tuned, method), p),
        f"ONNX Runtime static QDQ ({method} calibration)",
        **overrides,
    )


def _require_nncf() -> None:
    reason = nncf_int8.nncf_unavailable()
    if reason:
        raise EdgepipeError(reason)


@ONNX.format(
    "onnx-int8",
    container="onnx",
    precision="int8",
    needs_calibration=True,
    description="ONNX, static INT8 in QDQ format (ONNX Runtime's quantizer, else NNCF), uint8 activations, "
    "per-channel weights, calibrated",
)
def export_onnx_int8(ctx: ExportContext, path: Path) -> dict[str, Any]:
    """Recipes in order until one is within the accuracy budget (else the most accurate): ONNX Runtime's static
    QDQ with the configured calibration method, NNCF's post-training quantization, NNCF's accuracy control
    (sensitivity by effect), then quantization-aware fine-tuning and ONNX Runtime's QDQ of the fine-tuned model.

    ONNX Runtime's other calibration methods are not tried in turn: on MobileNetV2 (ImageNet weights, photos,
    at 224 and 112) percentile and entropy calibration never changed the validation top-1 of min-max, where
    NNCF's quantization recovered it, and at 224 they cost half a minute each.
    """
    if ctx.calibration is None or len(ctx.calibration) == 0:
        raise EdgepipeError(
            "onnx-int8 needs calibration images", "Pass --calibration-data DIR or export from a run directory."
        )
    learned: dict[str, Any] = {}
    recipes = [
        _ort_recipe(ctx, ctx.calibration_method),
        _nncf_recipe(ctx, learned),
        _accuracy_control_recipe(ctx, learned),
        _qat_recipe(ctx),
    ]
    return within_budget(ctx, path, "onnx-int8", recipes)
