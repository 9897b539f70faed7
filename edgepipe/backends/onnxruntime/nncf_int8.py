"""NNCF for onnx-int8: post-training quantization of the ONNX graph, and accuracy control (sensitivity by effect).

NNCF's ONNX backend quantizes the ONNX model itself and writes QDQ, as ONNX Runtime's quantizer does, and
runs NNCF's accuracy control on ONNX: groups of quantizers are ranked by what removing each does to the
validation top-1 (here with ties broken by the KL divergence from FP32), then removed greedily until the
drop is within the budget. Two settings make NNCF's
files run with integer kernels in ONNX Runtime on x86: one scale per activation tensor (QLinearConv takes
a single input scale; NNCF would give a depthwise convolution's input one per channel), and uint8
activations (NNCF writes int8 wherever a range goes below zero; the caller rewrites them exactly with
:func:`edgepipe.backends.onnxruntime.qdq.set_activation_type`).

Every candidate accuracy control tries is run here, in ONNX Runtime as edgepipe would ship it, so its
effect is measured on the real engine: top-1, agreement with the FP32 model's top-1, and the mean KL
divergence of its probabilities from FP32's; and what it runs in float is read from ONNX Runtime's
optimized model, not from the QDQ file.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.backends.context import ExportContext
from edgepipe.backends.onnxruntime.qdq import ort_kernels, set_activation_type
from edgepipe.errors import first_line
from edgepipe.quiet import native_output_suppressed

#: most revert-and-validate steps accuracy control may take: a step that does not help makes NNCF rank every
#: remaining group again, so the steps bound the export time (and the float ops bound the latency)
MAX_STEPS = 6
#: measured candidates kept in the record, best first
RANKING_SHOWN = 10
BATCH = 16
EPSILON = 1e-7  # probabilities are clipped to it in the KL divergence, so an exact zero costs a finite amount


def nncf_unavailable() -> str | None:
    """None when NNCF imports, else what to install."""
    try:
        import nncf  # noqa: F401
    except ImportError:
        return "package 'nncf' is not installed (pip install nncf)"
    return None


def _dataset(images: np.ndarray, input_name: str) -> Any:
    """``nncf.Dataset`` of image indices; NNCF's inference input for index i is image i as a float32 batch of one
    (made when read: float32 copies of every image at once would cost N x H x W x C x 4 bytes)."""
    import nncf

    return nncf.Dataset(range(len(images)), lambda i: {input_name: images[i : i + 1].astype(np.float32)})


def _settings(ctx: ExportContext, fast: bool) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """(keyword arguments shared by both NNCF calls, the advanced quantization parameters, their description)."""
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
        QuantizationParameters,
    )

    options = ctx.options_for("onnxruntime")
    symmetric = options.symmetric_activations
    preset = nncf.QuantizationPreset.PERFORMANCE if symmetric else nncf.QuantizationPreset.MIXED
    advanced = AdvancedQuantizationParameters(
        weights_quantization_params=QuantizationParameters(per_channel=options.per_channel),
        activations_quantization_params=QuantizationParameters(per_channel=False),
        # 7-bit weights (int8_reduce_range) on every convolution but depthwise ones and every matrix product
        overflow_fix=OverflowFix.ENABLE if options.int8_reduce_range else OverflowFix.DISABLE,
    )
    shared = {"preset": preset, "subset_size": len(ctx.calibration), "fast_bias_correction": fast}
    described = {
        "calibration": "NNCF min-max statistics",
        "preset": "performance" if symmetric else "mixed",
        "bias_correction": "fast" if fast else "full",
        "activations": f"{options.activations} per-tensor " + ("symmetric" if symmetric else "asymmetric"),
        "weights": options.weights_description(),
    }
    return shared, advanced, described


def quantize(ctx: ExportContext, source: Path, fast: bool | None = None) -> tuple[Any, dict[str, Any]]:
    """NNCF post-training quantization of the ONNX model at ``source``: (QDQ onnx.ModelProto, what was done).

    ``fast``: NNCF's fast bias correction; None tries full bias correction first (see :func:`_bias_corrected`).
    The activations keep NNCF's types (int8 for ranges below zero); the caller sets the export's type.
    Raises what NNCF raises (with the engine output attached as a note)."""
    import nncf
    import onnx

    def run(fast_bias_correction: bool) -> tuple[Any, dict[str, Any]]:
        shared, advanced, described = _settings(ctx, fast_bias_correction)
        with native_output_suppressed():
            model = nncf.quantize(
                onnx.load(str(source)),
                _dataset(ctx.calibration.images, _input_name(source)),
                advanced_parameters=advanced,
                **shared,
            )
        return model, {"tool": "nncf.quantize", **described}

    return _bias_corrected(run, fast)


def quantize_with_accuracy_control(
    ctx: ExportContext, source: Path, fast: bool | None = None
) -> tuple[Any, dict[str, Any]]:
    """NNCF accuracy control on the ONNX model at ``source``: quantized ops are reverted to float, the ones whose
    reversal helps the validation top-1 most first, until the drop from FP32 is within the budget (or after
    :data:`MAX_STEPS` steps). Returns (QDQ onnx.ModelProto, what was done, with the sensitivity record).

    ``fast`` as for :func:`quantize` (the PTQ it starts from is NNCF's, made again inside). Needs
    ``ctx.validation``; raises what NNCF raises.
    """
    return _bias_corrected(lambda fast_bias_correction: _accuracy_control(ctx, source, fast_bias_correction), fast)


def _accuracy_control(ctx: ExportContext, source: Path, fast: bool) -> tuple[Any, dict[str, Any]]:
    """One run of NNCF's accuracy control with the given bias correction, judged by :class:`_Judge`."""
    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    images, labels = ctx.validation
    judge = _Judge(
        images, np.asarray(labels), ctx.reference_probabilities, ctx.options_for("onnxruntime").activations, ctx.workdir
    )
    shared, advanced, described = _settings(ctx, fast)
    input_name = _input_name(source)
    with native_output_suppressed(), _steps_marked(judge):
        model = nncf.quantize_with_accuracy_control(
            onnx.load(str(source)),
            _dataset(ctx.calibration.images, input_name),
            _dataset(images, input_name),
            judge,
            max_drop=nncf_max_drop(ctx.accuracy_budget_pp, len(labels)),
            drop_type=nncf.DropType.ABSOLUTE,
            advanced_quantization_parameters=advanced,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=MAX_STEPS),
            **shared,
        )
    return model, {
        "tool": "nncf.quantize_with_accuracy_control",
        **described,
        "budget_pp": ctx.accuracy_budget_pp,
        "validation_images": len(labels),
        "sensitivity": judge.record(),
    }


def _bias_corrected(run: Callable[[bool], tuple[Any, dict[str, Any]]], fast: bool | None) -> tuple[Any, dict[str, Any]]:
    """``run(fast_bias_correction)`` as asked; with None, full bias correction, and fast bias correction when NNCF
    fails with full (its ONNX bias correction cannot cut out the subgraph of some topologies, e.g. a tensor
    feeding two convolutions as in a residual block with a projection shortcut). Full bias correction first:
    on MobileNetV2 it kept the validation top-1 where the fast variant lost an image, for a few seconds more."""
    if fast is not None:
        return run(fast)
    try:
        return run(False)
    except Exception as exc:  # noqa: BLE001  (any failure of the full variant is answered by the fast one)
        model, details = run(True)
        reason = first_line(exc)
        return model, {**details, "bias_correction": f"fast (full bias correction failed: {reason})"}


def _input_name(source: Path) -> str:
    import onnx

    return onnx.load(str(source), load_external_data=False).graph.input[0].name


def _shipped(model: Any, activations: str) -> Any:
    """A copy of an NNCF model with the export's activation type, as edgepipe would write it."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    set_activation_type(copy, activations)
    return copy


@dataclass(frozen=True)
class Measurement:
    """One model accuracy control asked about, as ONNX Runtime ran it."""

    images: int
    top1: float
    agreement: float | None  # with the FP32 model's top-1 on the same images
    kl: float | None  # mean KL divergence of its probabilities from FP32's
    quantized: bool
    float_ops: frozenset  # weighted and other quantizable ops ONNX Runtime runs in float
    step: bool  # a revert-and-validate step (else the FP32 model, the PTQ model or a ranking candidate)

    def as_dict(self, base: frozenset) -> dict[str, Any]:
        return {
            "float": sorted(self.float_ops - base),
            "images": self.images,
            "top1": round(self.top1, 4),
            "agreement": None if self.agreement is None else round(self.agreement, 4),
            "kl": None if self.kl is None else round(self.kl, 5),
        }


class _Judge:
    """NNCF's validation_fn over validation image indices (metric mode): each candidate runs in ONNX Runtime, and
    what it measured is remembered.

    The metric is the top-1 with ties broken by the mean KL divergence from FP32: a term below half an image
    (0.5 / images x KL / (1 + KL)) is subtracted, so it never reorders different top-1 values but makes NNCF
    revert, among groups that restore the same number of images, the one that restores the probabilities
    most (on a small validation split most groups tie on top-1). :func:`nncf_max_drop` makes NNCF's
    stopping rule the top-1 budget exactly despite that term.
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, reference: np.ndarray | None, activations: str, workdir: Path
    ):
        self.images, self.labels, self.reference, self.activations = images, labels, reference, activations
        self.workdir = workdir
        self.measured: list[Measurement] = []
        self.next_is_step = False  # set by :class:`_StepMarker` when NNCF announces a revert

    def __call__(self, model: Any, indices: Any) -> tuple[float, list[float]]:
        chosen = np.fromiter(indices, dtype=np.int64)
        if not len(chosen):
            return 0.0, []
        data = _shipped(model, self.activations).SerializeToString()
        probabilities = _probabilities(data, self.images, chosen)
        correct = (probabilities.argmax(1) == self.labels[chosen]).astype(np.float64)
        divergences = self._divergences(probabilities, chosen)
        kernels = ort_kernels(data, self.workdir)
        measurement = Measurement(
            len(chosen),
            float(correct.mean()),
            None
            if divergences is None
            else float(np.mean(probabilities.argmax(1) == self.reference[chosen].argmax(1))),
            None if divergences is None else float(divergences.mean()),
            any(node.op_type == "QuantizeLinear" for node in model.graph.node),
            frozenset(kernels["float"] + kernels["float_other"]),
            self.next_is_step,
        )
        self.next_is_step = False
        self.measured.append(measurement)
        if divergences is None:
            return measurement.top1, correct.tolist()
        tie = 0.5 / len(self.labels) * _bounded(measurement.kl)
        return measurement.top1 - tie, (correct - 0.5 * _bounded(divergences)).tolist()

    def _divergences(self, probabilities: np.ndarray, chosen: np.ndarray) -> np.ndarray | None:
        """Per image KL divergence of ``probabilities`` from the FP32 model's, or None without FP32 outputs."""
        if self.reference is None:
            return None
        p, q = np.clip(self.reference[chosen], EPSILON, 1.0), np.clip(probabilities, EPSILON, 1.0)
        return np.sum(p * (np.log(p) - np.log(q)), axis=1)

    def record(self) -> dict[str, Any]:
        """What accuracy control measured: the FP32 and PTQ top-1 (in ONNX Runtime), the ranking candidates best
        first (each with the ops it runs in float beyond the PTQ model's), and every revert-and-validate step in
        order (cumulative), each as measured."""
        full = len(self.labels)
        fp32 = next((m for m in self.measured if not m.quantized and m.images == full), None)
        base = next((m for m in self.measured if m.quantized and m.images == full), None)
        if base is None:
            return {}
        candidates: dict[tuple[frozenset, int], Measurement] = {}
        for m in self.measured:
            if m.quantized and m is not base and not m.step:
                candidates.setdefault((m.float_ops - base.float_ops, m.images), m)
        ranked = sorted(candidates.values(), key=lambda m: (-m.top1, m.kl if m.kl is not None else 0.0))
        return {
            "metric": "top-1 on the validation split, ties broken by the mean KL divergence from FP32; "
            "each candidate run in ONNX Runtime",
            "fp32_top1": None if fp32 is None else round(fp32.top1, 4),
            "quantized_top1": round(base.top1, 4),
            "float_in_quantized": sorted(base.float_ops),
            "candidates_measured": len(candidates),
            "ranking": [m.as_dict(base.float_ops) for m in ranked[:RANKING_SHOWN]],
            "steps": [m.as_dict(base.float_ops) for m in self.measured if m.step],
        }


class _StepMarker(logging.Handler):
    """Tells the judge that NNCF's next validation is a revert-and-validate step: NNCF logs "Reverted N
    operations..." right before it validates the new scope. (Should NNCF word it otherwise, the steps are not
    told apart from ranking candidates, and the record lists no steps; nothing else changes.)"""

    def __init__(self, judge: _Judge):
        super().__init__(logging.INFO)
        self.judge = judge

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Reverted "):
            self.judge.next_is_step = True


@contextlib.contextmanager
def _steps_marked(judge: _Judge) -> Iterator[None]:
    """NNCF's logger reports to ``judge`` (at INFO level, whatever level it had) for the duration."""
    logger = logging.getLogger("nncf")
    marker, level = _StepMarker(judge), logger.level
    logger.addHandler(marker)
    logger.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(marker)
        logger.setLevel(level)


def _bounded(kl: Any) -> Any:
    """KL / (1 + KL): order-preserving, in [0, 1)."""
    return kl / (1.0 + kl)


def nncf_max_drop(budget_pp: float, images: int) -> float:
    """The max_drop that makes NNCF accept exactly the candidates losing at most ``budget_pp`` top-1 points on
    ``images`` images, with :class:`_Judge`'s tie-break term (below half an image) in its metric: halfway
    between the most images the budget allows and one more."""
    allowed = int(np.floor(budget_pp / 100 * images + 1e-9))
    return (allowed + 0.5) / images


def _probabilities(data: bytes, images: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Outputs of the serialized model for ``images[chosen]`` (at least one) in ONNX Runtime (CPU, all graph
    optimizations, as edgepipe's runner loads it), in batches."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = [
        session.run(None, {name: images[chosen[i : i + BATCH]].astype(np.float32)})[0]
        for i in range(0, len(chosen), BATCH)
    ]
    return np.concatenate(outputs)
