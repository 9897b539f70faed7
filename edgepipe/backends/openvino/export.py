"""OpenVINO exporters: ``openvino.convert_model`` on the ONNX backend's onnx-fp32 for FP32, FP16-compressed
weights at save time, and NNCF post-training quantization (under the INT8 accuracy budget) for INT8.

Every IR records in its rt_info edgepipe's format, precision, labels, preprocessing and producer
(section ``edgepipe``), and the Model API's ``model_info`` (model type and labels), so OpenVINO's own
tools read the classes too. An IR is two files; :func:`write_ir` never leaves a mismatched pair under
the final name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.backends.base import FORMATS
from edgepipe.backends.context import ExportContext
from edgepipe.backends.openvino.backend import (
    MODEL_INFO,
    OPENVINO,
    SECTION,
    nncf_unavailable,
    openvino_unavailable,
    weights_path,
)
from edgepipe.errors import EdgepipeError
from edgepipe.fileio import atomic_path
from edgepipe.quantization.budget import Attempt, Recipe, within_budget
from edgepipe.quiet import native_output_suppressed
from edgepipe.versions import __version__

#: ops whose weights NNCF quantizes (what "kept in higher precision" is counted over)
WEIGHTED_OPS = ("Convolution", "GroupConvolution", "MatMul")
#: ops between a weight constant (or a FakeQuantize) and the op using it, in NNCF's and the frontends' graphs
PASS_THROUGH = ("Convert", "Multiply", "Subtract", "Reshape", "Transpose", "Squeeze", "Unsqueeze")


# -- writing ------------------------------------------------------------------------------------------


def write_ir(path: Path, save: Callable[[Path], None]) -> None:
    """Write an IR pair at ``path`` (.xml) and its .bin: ``save(tmp_xml)`` writes both beside the final
    place under temporary names; the .bin is renamed first, then the .xml.

    An old .xml at ``path`` is removed before the new .bin takes its place, so an .xml never sits beside a
    .bin it was not written with: a crash leaves either the new pair, or no .xml (at worst an orphan .bin).
    On error the temporaries are removed. EdgepipeError when OpenVINO wrote no .bin.
    """
    with atomic_path(path, suffix=".xml") as tmp_xml:
        tmp_bin = weights_path(tmp_xml)
        try:
            save(tmp_xml)
            if not tmp_bin.is_file():
                raise EdgepipeError(f"OpenVINO wrote no weights file beside {path.name}")
            if weights_path(path).is_dir():
                raise EdgepipeError(
                    f"'{weights_path(path)}' is a folder, where edgepipe would write the IR's weights",
                    "Choose another path; edgepipe never replaces a folder with a file.",
                )
            if path.is_file():
                path.unlink()
            os.replace(tmp_bin, weights_path(path))
        finally:
            if tmp_bin.exists():
                tmp_bin.unlink()


def save_model(model: Any, path: Path, compress_to_fp16: bool = False) -> None:
    """``openvino.save_model`` through :func:`write_ir` (float32 weights unless ``compress_to_fp16``)."""
    import openvino as ov

    write_ir(path, lambda tmp: ov.save_model(model, str(tmp), compress_to_fp16=compress_to_fp16))


def copy_ir(source: Path, path: Path) -> None:
    """Copy the IR pair at ``source`` to ``path`` through :func:`write_ir`."""

    def save(tmp: Path) -> None:
        shutil.copyfile(weights_path(source), weights_path(tmp))
        shutil.copyfile(source, tmp)

    write_ir(path, save)


def model_api_labels(labels: list[str]) -> str:
    """Labels as OpenVINO's Model API reads ``model_info/labels``: one whitespace-separated list, so
    whitespace inside a label becomes '_' (edgepipe's own JSON list keeps them exact)."""
    return " ".join(re.sub(r"\s+", "_", label.strip()) or "_" for label in labels)


def stamp(model: Any, ctx: ExportContext, format_name: str) -> None:
    """Record format, precision, labels, preprocessing and producer in the model's rt_info (replacing old
    values), and the Model API's model type and labels."""
    entries = {
        "format": format_name,
        "precision": FORMATS.get(format_name).precision,
        "labels": json.dumps(ctx.labels),
        "preprocessing": json.dumps(ctx.preprocessing),
        "input": "raw pixels 0..255, float32, NHWC",
        "producer": f"edgepipe {__version__}",
    }
    for key, value in entries.items():
        model.set_rt_info(value, [SECTION, key])
    model.set_rt_info("Classification", [MODEL_INFO, "model_type"])
    model.set_rt_info(model_api_labels(ctx.labels), [MODEL_INFO, "labels"])


# -- reading the graph ---------------------------------------------------------------------------------


def _upstream(node: Any) -> Any:
    """The first node at or above ``node`` (through first inputs) that is not a pass-through op."""
    while node.get_type_name() in PASS_THROUGH and node.get_input_size():
        node = node.input_value(0).get_node()
    return node


def _quantized_inputs(op: Any) -> tuple[bool, bool]:
    """(activations quantized, weights quantized) of a weighted op: its data input comes from a
    FakeQuantize; its weights from an int8 constant (NNCF's compressed weights) or a FakeQuantize."""
    data = _upstream(op.input_value(0).get_node())
    weights = _upstream(op.input_value(1).get_node())
    int8_weights = weights.get_type_name() == "FakeQuantize" or (
        weights.get_type_name() == "Constant" and weights.get_output_element_type(0).get_type_name() in ("i8", "u8")
    )
    return data.get_type_name() == "FakeQuantize", int8_weights


def int8_facts(model: Any) -> dict[str, Any]:
    """What an IR holds, read from its graph: FakeQuantize ops, int8 weight constants, and the weighted
    ops left in float (activations or weights not quantized)."""
    ops = list(model.get_ordered_ops())
    weighted = [op for op in ops if op.get_type_name() in WEIGHTED_OPS]
    kept_float = [op.get_friendly_name() for op in weighted if not all(_quantized_inputs(op))]
    return {
        "fake_quantize_ops": sum(op.get_type_name() == "FakeQuantize" for op in ops),
        "int8_weight_constants": sum(
            op.get_type_name() == "Constant" and op.get_output_element_type(0).get_type_name() in ("i8", "u8")
            for op in ops
        ),
        "quantized_ops": len(weighted) - len(kept_float),
        "weighted_ops": len(weighted),
        "kept_float": kept_float,
    }


def _read(path: Path) -> Any:
    import openvino as ov

    return ov.Core().read_model(str(path))


def _batch_of_one(path: Path) -> Any:
    """The IR at ``path`` compiled-to-be for one image at a time: what NNCF is given to quantize.

    NNCF compiles the model it is given as it is. With a dynamic batch, OpenVINO's CPU plugin (2026.4)
    runs int8 layers through its dynamic-shape kernels, which on CPUs with AMX compute other values than
    its static kernels (on the tiny test model: probabilities up to 0.97 apart, 2 of 40 top-1 classes
    changed; with AVX-512 VNNI the two agree exactly) and crash on IRs of the 'mixed' preset. So NNCF's
    statistics, bias correction and accuracy-control candidates run with a fixed batch of one, as NNCF
    feeds them and as the runner compiles every IR.
    """
    model = _read(path)
    dims = list(model.inputs[0].get_partial_shape())
    model.reshape({model.inputs[0]: [1, *dims[1:]]})
    return model


def _dynamic_batch(model: Any) -> None:
    """Make the first input's batch dimension dynamic again (as in openvino-fp32), in place."""
    import openvino as ov

    dims = list(model.inputs[0].get_partial_shape())
    model.reshape({model.inputs[0]: ov.PartialShape([ov.Dimension(), *dims[1:]])})


# -- formats -------------------------------------------------------------------------------------------


def _converted(ctx: ExportContext) -> Any:
    """The Keras model as an ``openvino.Model``, converted from the ONNX backend's onnx-fp32.

    Why ONNX and not the SavedModel: on MobileNetV2 both give the same compiled graph (the runtime
    models differ by a Squeeze; latency is equal within run-to-run spread), but the ONNX route keeps
    the Keras names (input 'image', output 'classifier' rather than 'output_0'), reuses a file the
    ONNX backend has already checked, and needs no SavedModel export when no TFLite format is asked.
    The batch dimension stays dynamic, as in onnx-fp32; the engine fixes it when it compiles.
    """
    import openvino as ov

    with native_output_suppressed():
        model = ov.convert_model(str(ctx.require("onnx-fp32")))
    # the converter copies the ONNX file's metadata (its own format and precision) into rt_info 'framework',
    # where it would contradict the IR's record; the IR's origin is in its export details
    rt_info = model.get_rt_info()
    if "framework" in rt_info.keys():
        del rt_info["framework"]
    return model


@OPENVINO.format(
    "openvino-fp32",
    container="openvino",
    precision="fp32",
    available=openvino_unavailable,
    description="OpenVINO IR, float32 (converted from onnx-fp32), dynamic batch; labels in rt_info",
)
def export_openvino_fp32(ctx: ExportContext, path: Path) -> dict[str, Any]:
    model = _converted(ctx)
    stamp(model, ctx, "openvino-fp32")
    save_model(model, path)
    return {"converted_from": "onnx-fp32", "weights": "float32", "files": [path.name, weights_path(path).name]}


@OPENVINO.format(
    "openvino-fp16",
    container="openvino",
    precision="fp16",
    tolerance="fp16",
    available=openvino_unavailable,
    description="OpenVINO IR, float16-compressed weights (decompressed to the inference precision at load)",
)
def export_openvino_fp16(ctx: ExportContext, path: Path) -> dict[str, Any]:
    model = _read(ctx.require("openvino-fp32"))
    stamp(model, ctx, "openvino-fp16")
    save_model(model, path, compress_to_fp16=True)
    return {
        "converted_from": "openvino-fp32",
        "weights": "float16 (compress_to_fp16)",
        "files": [path.name, weights_path(path).name],
    }


def _need_calibration(ctx: ExportContext) -> None:
    if ctx.calibration is None or len(ctx.calibration) == 0:
        raise EdgepipeError(
            "openvino-int8 needs calibration images", "Pass --calibration-data DIR or export from a run directory."
        )


class _OnDemand:
    """A sized, re-iterable source whose items are made as they are read: NNCF iterates its datasets
    several times, and float32 copies of every image at once would cost N x H x W x C x 4 bytes."""

    def __init__(self, length: int, items: Callable[[], Any]):
        self.length, self.items = length, items

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return iter(self.items())


def _calibration_dataset(ctx: ExportContext, input_name: str) -> Any:
    """``nncf.Dataset`` over the shared calibration set (one float32 image per item): a thin adapter."""
    import nncf

    feeds = _OnDemand(len(ctx.calibration), lambda: ctx.calibration.batches(input_name, batch_size=1))
    return nncf.Dataset(feeds, lambda feed: feed[input_name])


def _validation_dataset(images: np.ndarray, labels: np.ndarray) -> Any:
    """``nncf.Dataset`` of (float32 image batch of one, label) items; NNCF infers item[0]."""
    import nncf

    items = _OnDemand(
        len(labels), lambda: ((images[i : i + 1].astype(np.float32), int(labels[i])) for i in range(len(labels)))
    )
    return nncf.Dataset(items, lambda item: item[0])


def _validation_split(ctx: ExportContext) -> tuple[np.ndarray, np.ndarray] | None:
    """The validation images and labels, or None.

    NNCF's accuracy control runs its candidates itself (in memory, image by image), so it needs the
    images, not only ``ctx.score``.
    """
    if ctx.validation is None or len(ctx.validation[1]) == 0:
        return None
    return ctx.validation[0], np.asarray(ctx.validation[1])


def _top1(compiled: Any, items: Any) -> tuple[float, list[float]]:
    """NNCF validation_fn: (top-1, per-image correctness) of a compiled candidate on (image, label) items."""
    request = compiled.create_infer_request()
    correct = [float(np.argmax(request.infer({0: image})[0]) == label) for image, label in items]
    return (float(np.mean(correct)) if correct else 0.0), correct


#: export option -> NNCF's OverflowFix member. With 'first_layer' (NNCF's default), an IR of the tiny test
#: model agreed with Keras on 95% of 537 digits with VNNI or AMX kernels and on 83% with AVX2 ones; with
#: 'all', on 96% with both (the same outputs)
OVERFLOW_FIX = {"all": "ENABLE", "first_layer": "FIRST_LAYER", "none": "DISABLE"}


def _nncf_options(ctx: ExportContext) -> dict[str, Any]:
    import nncf

    options = ctx.options_for("openvino")
    preset = (
        nncf.QuantizationPreset.PERFORMANCE if options.int8_preset == "performance" else nncf.QuantizationPreset.MIXED
    )
    return {"preset": preset, "subset_size": len(ctx.calibration), "fast_bias_correction": options.fast_bias_correction}


def _advanced(ctx: ExportContext) -> Any:
    """NNCF's advanced quantization parameters for the export options (the overflow fix, bias correction)."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    options = ctx.options_for("openvino")
    return AdvancedQuantizationParameters(
        overflow_fix=OverflowFix[OVERFLOW_FIX[options.int8_overflow_fix]],
        disable_bias_correction=not options.int8_bias_correction,
    )


def _write_int8(ctx: ExportContext, model: Any, p: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    """Check the quantized model holds int8, stamp it and write it at ``p`` with a dynamic batch; its details."""
    _dynamic_batch(model)
    facts = int8_facts(model)
    if facts["fake_quantize_ops"] == 0 or facts["quantized_ops"] == 0:
        raise EdgepipeError("NNCF produced no quantized operations (no FakeQuantize with int8 weights in the IR)")
    stamp(model, ctx, "openvino-int8")
    save_model(model, p)
    options = ctx.options_for("openvino")
    return {
        **recipe,
        "preset": options.int8_preset,
        "overflow_fix": options.int8_overflow_fix,
        "fast_bias_correction": options.fast_bias_correction,
        "bias_correction": options.int8_bias_correction,
        "converted_from": "openvino-fp32",
        "calibration_images": len(ctx.calibration),
        "calibration_sha256": ctx.calibration.digest,
        **facts,
    }


@OPENVINO.format(
    "openvino-int8",
    container="openvino",
    precision="int8",
    needs_calibration=True,
    available=nncf_unavailable,
    description="OpenVINO IR, INT8 by NNCF post-training quantization (FakeQuantize, int8 weights), calibrated",
)
def export_openvino_int8(ctx: ExportContext, path: Path) -> dict[str, Any]:
    import nncf

    _need_calibration(ctx)
    source = ctx.require("openvino-fp32")
    input_name = _read(source).inputs[0].get_any_name()
    candidates: dict[int, Path] = {}  # attempt number (the recipe's place in the list below) -> its IR

    def quantize():
        def build(p: Path) -> dict[str, Any]:
            candidates[1] = p
            with native_output_suppressed():
                model = nncf.quantize(
                    _batch_of_one(source),
                    _calibration_dataset(ctx, input_name),
                    advanced_parameters=_advanced(ctx),
                    **_nncf_options(ctx),
                )
            return _write_int8(ctx, model, p, {"algorithm": "nncf.quantize"})

        return Attempt(f"NNCF post-training quantization on {len(ctx.calibration)} calibration images", build)

    def accuracy_control():
        split = _validation_split(ctx)
        if split is None:  # nothing to judge candidates on
            return None
        images, labels = split
        max_drop = ctx.accuracy_budget_pp / 100

        def build(p: Path) -> dict[str, Any]:
            candidates[2] = p
            with native_output_suppressed():
                model = nncf.quantize_with_accuracy_control(
                    _batch_of_one(source),
                    _calibration_dataset(ctx, input_name),
                    _validation_dataset(images, labels),
                    _top1,
                    max_drop=max_drop,
                    drop_type=nncf.DropType.ABSOLUTE,
                    advanced_quantization_parameters=_advanced(ctx),
                    **_nncf_options(ctx),
                )
            details = _write_int8(
                ctx,
                model,
                p,
                {
                    "algorithm": "nncf.quantize_with_accuracy_control",
                    "max_drop": max_drop,
                    "validation_images": len(labels),
                },
            )
            return {
                **details,
                "kept_float_reason": "reverted to float by NNCF's accuracy control (largest accuracy "
                "contribution on the validation split)",
            }

        return Attempt(
            f"NNCF accuracy control: quantized ops reverted to float until the top-1 drop is at most "
            f"{ctx.accuracy_budget_pp} pp on {len(labels)} validation images",
            build,
        )

    # within_budget copies only the chosen .xml to the path it is given: give it one in the work folder,
    # then install the chosen candidate's .xml and .bin together
    recipes = [Recipe("NNCF post-training quantization", quantize), Recipe("NNCF accuracy control", accuracy_control)]
    details = within_budget(ctx, ctx.workdir / f"budget-{path.name}", "openvino-int8", recipes)
    copy_ir(candidates[details["int8_budget"].chosen_attempt], path)
    return details
