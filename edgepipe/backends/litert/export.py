"""TFLite exporters, converted through a SavedModel export of the Keras model, or of a foreign network's
raw-pixel ONNX graph made by onnx2tf (see ``from_onnx``); full-integer models also quantized from the float
TFLite model by AI Edge Quantizer, see ``aeq``.

Every file gets TFLite model metadata (image input with identity normalization,
labels as an associated file, name and version) so MediaPipe Tasks and other
TFLite Support clients can use it as it is, and edgepipe's own record of its
format and precision.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.backends.context import ExportContext
from edgepipe.backends.litert import aeq, from_onnx
from edgepipe.backends.litert.backend import LITERT
from edgepipe.calibration import CalibrationSet, draw, tflite_representative_dataset
from edgepipe.errors import EdgepipeError, first_line
from edgepipe.fileio import write_bytes
from edgepipe.quantization.budget import Attempt, Recipe, Skipped, within_budget
from edgepipe.quiet import native_output_suppressed
from edgepipe.versions import __version__

#: ops the converter's fallback recipe keeps in float (used only when AEQ cannot quantize the model)
SENSITIVE_LAYERS_KEPT_FLOAT = 3
#: at most this many ops are kept in float by the AEQ recipe; each costs a few percent of latency
MAX_KEPT_FLOAT = 8
#: validation images the effect of each candidate op is measured on (one quantization and run per op)
SENSITIVITY_IMAGES = 256
#: how much of the sensitivity ranking the export details keep
SENSITIVITY_REPORTED = 10

#: why the first tflite-int8 recipe keeps the input stem in float (export.tflite.float_stem)
STEM_REASON = (
    "the input stem: XNNPACK's int8 kernels are slower than its float ones on the image's few channels, "
    "and an integer input is converted outside XNNPACK"
)
#: why TFLite formats are skipped for a source that is not a Keras model: its converter is not installed
FROM_KERAS_ONLY = from_onnx.unavailable


def _saved_model(ctx: ExportContext) -> Path:
    """The SavedModel every TFLite format converts from: the Keras model's, or onnx2tf's of a foreign source."""
    return ctx.saved_model() if ctx.model is not None else from_onnx.saved_model(ctx)


def _converter(ctx: ExportContext):
    import tensorflow as tf

    if ctx.model is not None and ctx.frozen_graph:
        frozen, graph_def = ctx.frozen_graph_def()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        # the converter freezes the function it is given (again, though it holds no variables: 0.6 s for
        # MobileNetV2 at 144 px) before every conversion; give it the freezing this export made once, which is
        # what it would compute from the model's own concrete function (tests/backends/test_frozen_graph.py)
        inputs = [t for t in frozen.inputs if t.dtype != tf.resource]
        converter._freeze_concrete_function = lambda: (graph_def, inputs, frozen.outputs, frozen)
        return converter
    return tf.lite.TFLiteConverter.from_saved_model(str(_saved_model(ctx)))


def _convert(converter) -> bytes:
    with native_output_suppressed():
        return converter.convert()


def tensor_types(model_bytes_or_path) -> dict[str, Any]:
    """What a TFLite flatbuffer holds, read back by LiteRT: input/output dtypes and tensor dtype counts."""
    from edgepipe.backends.litert.runner import open_interpreter

    try:
        interpreter = open_interpreter(model_bytes_or_path)  # a file LiteRT cannot prepare is no artifact
    except RuntimeError as exc:
        raise EdgepipeError(f"LiteRT cannot run the converted model: {first_line(exc)}") from None
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
    problems = [
        f"{key} is {types[key]}, expected {value}"
        for key, value in expect.items()
        if key in types and types[key] != value
    ]
    if "has" in expect and not types["tensor_dtypes"].get(expect["has"]):
        problems.append(f"no {expect['has']} tensors")
    if problems:
        raise EdgepipeError("the converter's output is not what the format promises: " + "; ".join(problems))
    described = FORMATS.get(fmt)
    info = {
        "format": fmt,
        "precision": described.precision,
        "producer": f"edgepipe {__version__}",
        "preprocessing": ctx.preprocessing,
    }
    model = write_metadata(
        model,
        name=f"{ctx.model.name if ctx.model is not None else ctx.source_name} ({fmt})",
        description=described.description,
        version=__version__,
        labels=list(ctx.labels),
        edgepipe_info=info,
    )
    write_bytes(path, model)
    return types if ctx.model is not None else {**types, "converted_by": from_onnx.conversion(ctx)}


def _integer_io(ctx: ExportContext) -> str:
    return ctx.options_for("litert").int8_io


@LITERT.format(
    "tflite-fp32",
    container="tflite",
    keras_only=FROM_KERAS_ONLY,
    precision="fp32",
    description="TFLite, float32 weights and activations",
)
def export_tflite_fp32(ctx: ExportContext, path: Path) -> dict[str, Any]:
    return _write(
        ctx, "tflite-fp32", path, _convert(_converter(ctx)), {"input_dtype": "float32", "output_dtype": "float32"}
    )


@LITERT.format(
    "tflite-fp16",
    container="tflite",
    keras_only=FROM_KERAS_ONLY,
    precision="fp16",
    description="TFLite, float16 weights (dequantized to float32 at load on CPU; native fp16 on GPU delegates)",
)
def export_tflite_fp16(ctx: ExportContext, path: Path) -> dict[str, Any]:
    import tensorflow as tf

    converter = _converter(ctx)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return _write(ctx, "tflite-fp16", path, _convert(converter), {"input_dtype": "float32", "has": "float16"})


@LITERT.format(
    "tflite-dynamic",
    container="tflite",
    keras_only=FROM_KERAS_ONLY,
    precision="dynamic",
    description="TFLite dynamic range: int8 weights, float activations (no calibration)",
)
def export_tflite_dynamic(ctx: ExportContext, path: Path) -> dict[str, Any]:
    import tensorflow as tf

    converter = _converter(ctx)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return _write(
        ctx,
        "tflite-dynamic",
        path,
        _convert(converter),
        {"input_dtype": "float32", "output_dtype": "float32", "has": "int8"},
    )


def _need_calibration(ctx: ExportContext, name: str) -> CalibrationSet:
    if ctx.calibration is None or len(ctx.calibration) == 0:
        raise EdgepipeError(
            f"{name} needs calibration images", "Pass --calibration-data DIR or export from a run directory."
        )
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


def _larger_calibration(ctx: ExportContext) -> CalibrationSet | None:
    if ctx.calibration_pool is None:
        return None
    images, labels = ctx.calibration_pool
    size = min(len(labels), 4 * len(ctx.calibration))
    return draw(images, labels, size, ctx.calibration.seed) if size > len(ctx.calibration) else None


def _sensitive_nodes(ctx: ExportContext, calibration: CalibrationSet, count: int) -> list[str]:
    """The ``count`` ops whose quantization error is largest relative to their output's quantization
    step (sqrt(mean squared error) / scale), by TFLite's quantization debugger; named as
    ``denylisted_nodes`` expects them."""
    import tensorflow as tf

    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=_full_integer_converter(ctx, calibration), debug_dataset=tflite_representative_dataset(calibration)
    )
    with native_output_suppressed():
        debugger.run()
    # layer_statistics lacks the scale; the CSV dump has it, keyed by the tensor names the converter takes
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    rows = [r for r in csv.DictReader(io.StringIO(dump.getvalue())) if float(r["scale"]) > 0]
    scored = sorted(
        ((math.sqrt(float(r["mean_squared_error"])) / float(r["scale"]), r["tensor_name"]) for r in rows), reverse=True
    )
    return [name for _, name in scored[:count]]


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
        debug_dataset=tflite_representative_dataset(calibration),
        debug_options=options,
    )
    io_type = tf.uint8 if _integer_io(ctx) == "uint8" else tf.int8
    with native_output_suppressed():
        return convert.mlir_quantize(
            debugger.calibrated_model,
            disable_per_channel=False,
            input_data_type=io_type,
            output_data_type=io_type,
            denylisted_nodes=nodes,
        )


def _effect_probe(ctx: ExportContext) -> tuple[aeq.Probe, int]:
    """How an op's effect is measured, and on how many images: each variant's divergence from the FP32
    model's probabilities on at most SENSITIVITY_IMAGES validation images, evenly spread over the split
    and run in this process; without the validation images at hand, on the whole split through
    ``ctx.score``."""
    if ctx.validation is None:
        candidate = ctx.workdir / "sensitivity.tflite"

        def scored(model: bytes) -> np.ndarray:
            candidate.write_bytes(model)
            return ctx.score(candidate, "tflite-int8").probabilities

        return aeq.probe(scored, ctx.reference_probabilities), len(ctx.reference_probabilities)
    images = ctx.validation[0]
    picked = np.unique(np.linspace(0, len(images) - 1, min(len(images), SENSITIVITY_IMAGES)).round().astype(int))
    threads = getattr(ctx.score, "threads", 1)  # the scorer's own thread count, when it has one

    def run(model: bytes) -> np.ndarray:
        return aeq.predict(model, images[picked], threads)

    return aeq.probe(run, ctx.reference_probabilities[picked]), len(picked)


def _judge(ctx: ExportContext) -> Callable[[bytes], tuple[float, bool]]:
    """judge(model) -> (validation top-1, within the accuracy budget), as ``within_budget`` decides it."""
    candidate = ctx.workdir / "kept-float-step.tflite"

    def judge(model: bytes) -> tuple[float, bool]:
        candidate.write_bytes(model)
        top1 = ctx.score(candidate, "tflite-int8").top1
        return top1, (ctx.reference_top1 - top1) * 100 <= ctx.accuracy_budget_pp

    return judge


def _kept_float_details(
    ranking: tuple[aeq.Effect, list[aeq.Effect]], chosen: aeq.KeptFloat, images: int, candidates: int, seconds: float
) -> dict[str, Any]:
    baseline, ranked = ranking
    return {
        "kept_float": [e.op.name for e in chosen.kept],
        "kept_float_ops": [e.record(baseline) for e in chosen.kept],
        "kept_float_reason": "the fewest of the ops that most lower the divergence from FP32 (mean KL on validation "
        "images), alone and with those kept before them, that bring top-1 within the budget",
        "sensitivity": {
            "images": images,
            "candidates": candidates,
            "seconds": round(seconds, 2),
            "all_integer": baseline.record(),
            "ranked": [e.record(baseline) for e in ranked[:SENSITIVITY_REPORTED]],
        },
        "kept_float_steps": chosen.steps,
    }


@LITERT.format(
    "tflite-int8",
    container="tflite",
    keras_only=FROM_KERAS_ONLY,
    precision="int8",
    needs_calibration=True,
    description="TFLite, full integer: int8 weights and activations, integer input/output (calibrated)",
)
def export_tflite_int8(ctx: ExportContext, path: Path) -> dict[str, Any]:
    """Recipes in order until one is within the accuracy budget: AI Edge Quantizer (AEQ) with the input stem
    in float (``export.tflite.float_stem``, off by default); the TFLite converter; AI Edge Quantizer
    (AEQ); the converter on a larger calibration set; AEQ with the fewest ops kept in float, chosen by
    their measured effect; and, only when that AEQ recipe could not run, the converter with the ops of
    largest quantization error kept in float; last, quantization-aware fine-tuning, then the converter."""
    calibration = _need_calibration(ctx, "tflite-int8")
    io_types = {"input_dtype": _integer_io(ctx), "output_dtype": _integer_io(ctx)}
    state: dict[str, Any] = {}

    def write(p: Path, model: bytes, chosen: CalibrationSet, **details: Any) -> dict[str, Any]:
        return {
            **_write(ctx, "tflite-int8", p, model, io_types),
            "calibration_images": len(chosen),
            "calibration_sha256": chosen.digest,
            **details,
        }

    def calibrated() -> aeq.Calibrated:
        if "aeq" not in state:  # one calibration for every AEQ recipe
            state["aeq"] = aeq.Calibrated(_convert(_converter(ctx)), calibration.images, _integer_io(ctx))
        return state["aeq"]

    def aeq_details() -> dict[str, Any]:
        return {
            "quantizer": f"ai-edge-quantizer {version('ai-edge-quantizer')}",
            "calibration": "min/max",
            "bias_widened": calibrated().widened,
        }

    def aeq_float_stem():
        # quantized here, not in build: a model AEQ cannot take is a skipped recipe, not a failed export
        try:
            kept = aeq.stem(calibrated().float_model)
            model = calibrated().quantize(kept) if kept else None
        except EdgepipeError as exc:
            return Skipped(first_line(exc))
        if model is None:
            return Skipped("no convolution reads the input directly")
        return Attempt(
            f"AI Edge Quantizer, the input stem ({len(kept)} ops) kept in float, min/max calibration on "
            f"{len(calibration)} images",
            lambda p: write(
                p,
                model,
                calibration,
                **aeq_details(),
                kept_float=[op.name for op in kept],
                kept_float_reason=STEM_REASON,
            ),
        )

    def converter():
        return Attempt(
            f"TFLite converter, full-integer, min/max calibration on {len(calibration)} images",
            lambda p: write(
                p,
                _convert(_full_integer_converter(ctx, calibration)),
                calibration,
                quantizer="TFLite converter",
                calibration="min/max",
            ),
        )

    def aeq_plain():
        return Attempt(
            f"AI Edge Quantizer, full-integer, min/max calibration on {len(calibration)} images",
            lambda p: write(p, calibrated().quantize(), calibration, **aeq_details()),
        )

    def larger():
        bigger = _larger_calibration(ctx)
        if bigger is None:
            return None
        return Attempt(
            f"TFLite converter, larger calibration set: {len(bigger)} training images",
            lambda p: write(
                p,
                _convert(_full_integer_converter(ctx, bigger)),
                bigger,
                quantizer="TFLite converter",
                calibration="min/max",
            ),
        )

    def aeq_kept_float():
        if ctx.score is None or ctx.reference_probabilities is None or ctx.reference_top1 is None:
            return None  # nothing to measure effects against
        measure, images = _effect_probe(ctx)

        def build(p: Path) -> dict[str, Any]:
            start = time.perf_counter()
            candidates = aeq.candidates(calibrated().float_model)
            ranking = aeq.rank_by_effect(calibrated(), candidates, measure)
            seconds = time.perf_counter() - start
            chosen = aeq.fewest_kept_float(
                calibrated(), ranking[1], ranking[0], measure, _judge(ctx), MAX_KEPT_FLOAT, 2 * MAX_KEPT_FLOAT
            )
            state["kept_float_ran"] = True
            return write(
                p,
                chosen.model,
                calibration,
                **aeq_details(),
                **_kept_float_details(ranking, chosen, images, len(candidates), seconds),
            )

        return Attempt(
            f"AI Edge Quantizer, the fewest ops kept in float that meet the budget (up to {MAX_KEPT_FLOAT}, "
            f"ranked by their measured effect on {images} validation images)",
            build,
        )

    def converter_kept_float():
        if state.get("kept_float_ran"):
            return None
        nodes = _sensitive_nodes(ctx, calibration, SENSITIVE_LAYERS_KEPT_FLOAT)
        return Attempt(
            f"TFLite converter, the {len(nodes)} ops of largest quantization error kept in float "
            "(sqrt(mean squared error) / scale in TFLite's quantization debugger)",
            lambda p: write(
                p,
                _denylisted_model(ctx, calibration, nodes),
                calibration,
                quantizer="TFLite converter",
                calibration="min/max",
                kept_float=nodes,
                kept_float_reason="largest quantization error relative to the output's quantization step",
            ),
        )

    from edgepipe.quantization.qat import qat_recipe  # imports Keras: only when INT8 is exported

    def fine_tuned_converter(fine_tuned: ExportContext, p: Path) -> dict[str, Any]:
        return write(
            p,
            _convert(_full_integer_converter(fine_tuned, calibration)),
            calibration,
            quantizer="TFLite converter",
            calibration="learned in fine-tuning (FakeQuant ranges), min/max for the input and logits",
        )

    recipes = [
        Recipe("TFLite converter", converter),
        Recipe("AI Edge Quantizer", aeq_plain),
        Recipe("larger calibration set", larger),
        Recipe("AEQ, ops kept in float by effect", aeq_kept_float),
        Recipe("converter, ops kept in float by quantization error", converter_kept_float),
        qat_recipe(
            ctx, fine_tuned_converter, "the TFLite converter with the learned activation ranges", keep_ranges=True
        ),
    ]
    if ctx.options_for("litert").float_stem:
        recipes.insert(0, Recipe("AEQ, the input stem kept in float", aeq_float_stem))
    return within_budget(ctx, path, "tflite-int8", recipes)


@LITERT.format(
    "tflite-int16x8",
    container="tflite",
    keras_only=FROM_KERAS_ONLY,
    precision="int16x8",
    needs_calibration=True,
    description="TFLite, int16 activations and int8 weights (calibrated; float input/output)",
)
def export_tflite_int16x8(ctx: ExportContext, path: Path) -> dict[str, Any]:
    import tensorflow as tf

    calibration = _need_calibration(ctx, "tflite-int16x8")
    converter = _converter(ctx)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = tflite_representative_dataset(calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    details = _write(ctx, "tflite-int16x8", path, _convert(converter), {"has": "int16"})
    return {**details, "calibration_images": len(calibration), "calibration_sha256": calibration.digest}
