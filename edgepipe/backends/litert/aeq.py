"""Full-integer TFLite models made by Google's AI Edge Quantizer (AEQ), and which ops to keep in float.

AEQ quantizes an already converted float TFLite model from a recipe of rules
(a regex on each op's *scope*, its output tensor names joined by ';' with a
trailing ';', plus the op type), so single ops can stay in float without
converting again. :class:`Calibrated` calibrates once and quantizes any number
of variants from that calibration (each in a fraction of a second);
:func:`rank_by_effect` measures what keeping each candidate op in float does
to the model's outputs, and :func:`fewest_kept_float` keeps the fewest of the
most effective ones that meet an accuracy test.

Four behaviours of AEQ 0.10 are handled here:

- its calibration smooths each tensor's min/max with a moving average, which on
  a calibration set ordered by class narrows ranges (the raw-pixel input came
  out [15, 226] instead of [0, 255]): the ranges are plain running min/max, as
  the TFLite converter's;
- it saturates an int32 bias that does not fit at scale input x weight (a
  near-dead channel: tiny weights, large bias), and the saturated value flips
  sign: those channels' weight ranges are widened first, as the converter does;
- an op it cannot quantize stays in float without a word: every result is
  checked for integer input/output and for float ops other than those asked for;
- it modifies the calibration statistics it is given: each variant gets a copy.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgepipe.errors import EdgepipeError, first_line
from edgepipe.quiet import native_output_suppressed

#: ops whose arithmetic is worth keeping in float: weighted ops and arithmetic (data movement ops such
#: as RESHAPE, PAD or CONCATENATION only pass their input's quantization on)
CANDIDATE_TYPES = frozenset(
    {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "FULLY_CONNECTED",
        "TRANSPOSE_CONV",
        "BATCH_MATMUL",
        "ADD",
        "SUB",
        "MUL",
        "DIV",
        "SQUARED_DIFFERENCE",
        "MEAN",
        "SUM",
        "AVERAGE_POOL_2D",
        "HARD_SWISH",
        "LOGISTIC",
        "TANH",
        "GELU",
        "RSQRT",
        "SQRT",
    }
)
#: ops with weights: the model's preprocessing is what comes before the first of them
WEIGHTED_TYPES = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"})
#: the weight axis AEQ quantizes per channel, for the ops whose int32 bias it computes
_WEIGHT_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}
#: the TFLite converter keeps |bias / (input scale x weight scale)| within 2**30; so does edgepipe
_BIAS_LIMIT = 2.0**30
_INT32_SATURATED = (np.iinfo(np.int32).min, np.iinfo(np.int32).max)
_FLOAT32 = 0  # TensorType.FLOAT32 in the TFLite schema
_TENSOR_TYPES = {0: "float32", 2: "int32", 3: "uint8", 7: "int16", 9: "int8"}  # TFLite schema TensorType codes
_PROBABILITY_FLOOR = 1e-6  # keeps log() finite where an integer output reads exactly 0


@dataclass(frozen=True)
class Op:
    """One op of the float model's main graph, as AEQ's recipe rules select it."""

    index: int
    type: str  # TFLite builtin operator name, e.g. CONV_2D
    code: int  # TFLite builtin operator code
    scope: str  # output tensor names joined by ';', with a trailing ';'

    @property
    def name(self) -> str:
        """A readable name: the first output tensor's first node name (the converter joins the names
        of the nodes it fused, e.g. convolution, batch norm and ReLU6, with ';')."""
        return self.scope.split(";")[0]

    def describe(self) -> dict[str, Any]:
        return {"op": self.name, "type": self.type, "index": self.index}


def _read(model: bytes):
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    return tfl_flatbuffer_utils.read_model(bytearray(model))


def _type_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def _ops(model) -> list[Op]:
    """Every op of a read model's main graph (subgraph 0), in execution order."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    names, graph = _type_names(), model.subgraphs[0]
    found = []
    for index, op in enumerate(graph.operators):
        opcode = model.operatorCodes[op.opcodeIndex]
        code = max(opcode.builtinCode, opcode.deprecatedBuiltinCode)  # codes above 127 live only in builtinCode
        found.append(
            Op(index, names.get(code, f"BUILTIN_{code}"), code, tfl_flatbuffer_utils.get_op_scope(op, graph.tensors))
        )
    return found


def ops(float_model: bytes) -> list[Op]:
    """Every op of the float model's main graph, in execution order."""
    return _ops(_read(float_model))


def _constant(model, tensor_index: int) -> bool:
    buffer = model.buffers[model.subgraphs[0].tensors[tensor_index].buffer]
    return buffer.data is not None and len(buffer.data) > 0


def _preprocessing(model) -> set[int]:
    """Indices of the ops that only transform the graph input before any op with weights (the model's
    own preprocessing, e.g. the scaling of raw pixels)."""
    graph, found = model.subgraphs[0], set()
    derived = set(int(i) for i in graph.inputs)  # tensors computed from the input by preprocessing alone
    for op in _ops(model):
        flat = graph.operators[op.index]
        activations = [int(i) for i in flat.inputs if i >= 0 and not _constant(model, i)]
        if op.type not in WEIGHTED_TYPES and activations and all(i in derived for i in activations):
            found.add(op.index)
            derived.update(int(i) for i in flat.outputs)
    return found


def stem(float_model: bytes) -> list[Op]:
    """The model's input stem: its preprocessing ops and the first op with weights that reads the input
    through them alone (the first convolution, on the image's few channels), in execution order; empty
    when no op with weights reads the input that way."""
    model = _read(float_model)
    graph, excluded = model.subgraphs[0], _preprocessing(model)
    reached = set(int(i) for i in graph.inputs)  # the input and what preprocessing computed from it
    for op in _ops(model):
        flat = graph.operators[op.index]
        if op.index in excluded:
            reached.update(int(i) for i in flat.outputs)
            continue
        activations = [int(i) for i in flat.inputs if i >= 0 and not _constant(model, i)]
        if op.type in WEIGHTED_TYPES and activations and all(i in reached for i in activations):
            return [o for o in _ops(model) if o.index in excluded] + [op]
    return []


def candidates(float_model: bytes) -> list[Op]:
    """The ops worth trying in float: arithmetic ops (:data:`CANDIDATE_TYPES`) that are neither the
    model's preprocessing at the input nor an op producing a graph output (the final softmax)."""
    model = _read(float_model)
    graph = model.subgraphs[0]
    outputs = set(int(i) for i in graph.outputs)
    excluded = _preprocessing(model)
    return [
        op
        for op in _ops(model)
        if op.type in CANDIDATE_TYPES
        and op.index not in excluded
        and not outputs & set(int(i) for i in graph.operators[op.index].outputs)
    ]


def _min_max(old: dict | None, new: dict) -> dict:
    """Running min/max of a tensor across calibration images (AEQ's default is a moving average)."""
    if not old:
        return new
    return {"min": np.minimum(old["min"], new["min"]), "max": np.maximum(old["max"], new["max"])}


def _activation_scale(qsv: dict) -> float:
    """The scale AEQ gives an int8 activation with this min/max (asymmetric, per tensor)."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithms.uniform_quantize import uniform_quantize_tensor

    _, scale = uniform_quantize_tensor.tensor_zp_scale_from_min_max(
        np.asarray(qsv["min"]), np.asarray(qsv["max"]), 8, False, qtyping.QuantGranularity.TENSORWISE
    )
    return float(np.asarray(scale).ravel()[0])


def _bias_safe_weight_ranges(model, qsvs: dict) -> tuple[dict[str, dict], list[dict[str, Any]]]:
    """Per-channel weight ranges, for the ops whose int32 bias would not fit at AEQ's own weight scale
    (|bias| / (input scale x weight scale) above 2**30): those channels' ranges are widened until it
    fits, as the TFLite converter does. AEQ takes a weight's range from the calibration statistics
    when they have one. Returns (ranges by weight tensor name, [{op, type, channels}] widened)."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    graph, ranges, widened = model.subgraphs[0], {}, []
    for op in _ops(model):
        flat = graph.operators[op.index]
        if op.type not in _WEIGHT_AXIS or len(flat.inputs) < 3 or flat.inputs[2] < 0:
            continue
        x, w, b = (graph.tensors[i] for i in flat.inputs[:3])
        weights = tfl_flatbuffer_utils.get_tensor_data(w, model.buffers)
        bias = tfl_flatbuffer_utils.get_tensor_data(b, model.buffers)
        x_range = qsvs.get(tfl_flatbuffer_utils.get_tensor_name(x))
        w_name = tfl_flatbuffer_utils.get_tensor_name(w)
        if weights is None or bias is None or not x_range or w_name in qsvs:
            continue
        axis = _WEIGHT_AXIS[op.type]
        bound = np.max(np.abs(weights), axis=tuple(i for i in range(weights.ndim) if i != axis), keepdims=True)
        needed = np.abs(bias.astype(np.float64)).reshape(bound.shape) * 127 / (_activation_scale(x_range) * _BIAS_LIMIT)
        short = needed > bound
        if short.any():
            bound = np.maximum(bound, needed).astype(np.float32)
            ranges[w_name] = {"min": -bound, "max": bound}
            widened.append({"op": op.name, "type": op.type, "channels": int(short.sum())})
    return ranges, widened


def _exact(scope: str) -> str:
    return "^" + re.escape(scope) + "$"  # AEQ matches with re.search: anchored, it selects this op alone


class Calibrated:
    """A float TFLite model calibrated once (running min/max over ``images``, one thread) for AEQ.

    ``quantize(keep_float)`` makes a full-integer variant: int8 activations (asymmetric, per tensor),
    int8 weights (symmetric, per channel), input and output of type ``io`` ("uint8" or "int8"), every
    op in ``keep_float`` left in float. ``images`` are raw pixels (N, H, W, C), fed as float32 one at a
    time. Raises EdgepipeError when AEQ cannot calibrate the model.
    """

    def __init__(self, float_model: bytes, images: np.ndarray, io: str = "uint8"):
        if io not in ("uint8", "int8"):
            raise ValueError(f"integer input/output type must be uint8 or int8, not {io!r}")
        self.float_model, self.io = bytes(float_model), io
        self.ops = ops(self.float_model)
        with native_output_suppressed():
            self.statistics = self._calibrate(images)
        #: per-channel ranges of the weights whose int32 bias needs a wider scale, and [{op, type, channels}]
        self.weight_ranges, self.widened = _bias_safe_weight_ranges(_read(self.float_model), self.statistics)

    def _calibrate(self, images: np.ndarray) -> dict:
        from ai_edge_quantizer import calibrator, recipe_manager

        from edgepipe.backends.litert.runner import open_interpreter

        signatures = open_interpreter(self.float_model).get_signature_list()
        if len(signatures) != 1 or len(next(iter(signatures.values()))["inputs"]) != 1:
            raise EdgepipeError(f"AEQ calibration expects one signature with one input, the model has {signatures}")
        key, signature = next(iter(signatures.items()))
        data = {key: [{signature["inputs"][0]: image[None].astype(np.float32)} for image in images]}
        recipes = recipe_manager.RecipeManager()
        recipes.load_quantization_recipe(self._quantizer(()).get_quantization_recipe())
        try:
            calibration = calibrator.Calibrator(self.float_model, num_threads=1, qsv_update_func=_min_max)
            calibration.calibrate(data, recipes)
        except Exception as exc:  # AEQ's own errors name the op it failed on
            raise EdgepipeError(f"AEQ cannot calibrate the model: {first_line(exc)}") from exc
        return calibration.get_model_qsvs()

    def _quantizer(self, keep_float: Sequence[Op]):
        from ai_edge_quantizer import qtyping, quantizer
        from ai_edge_quantizer.utils import tfl_flatbuffer_utils

        kind = qtyping.TFLOperationName
        qt = quantizer.Quantizer(self.float_model)
        qt.add_static_config(".*", kind.ALL_SUPPORTED, activation_num_bits=8, weight_num_bits=8)
        for io_op in (kind.INPUT, kind.OUTPUT):
            qt.update_quantization_recipe(".*", io_op, _io_config(self.io))
        for op in keep_float:  # later rules win; the op type keeps a rule off the graph's INPUT/OUTPUT
            qt.update_quantization_recipe(
                _exact(op.scope),
                tfl_flatbuffer_utils.TFL_OP_CODE_TO_NAME[op.code],
                algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE,
            )
        return qt

    def quantize(self, keep_float: Sequence[Op] = ()) -> bytes:
        """The full-integer model with ``keep_float`` in float. Raises EdgepipeError when AEQ fails, or
        when its result is not what was asked (see :func:`check`)."""
        keep_float = list(keep_float)
        try:
            with native_output_suppressed():
                statistics = copy.deepcopy({**self.statistics, **self.weight_ranges})
                result = self._quantizer(keep_float).quantize(statistics, enable_progress_report=False)
        except Exception as exc:
            raise EdgepipeError(f"AEQ cannot quantize the model: {first_line(exc)}") from exc
        model = bytes(result.quantized_model)
        check(model, self.io, keep_float)
        return model


def _io_config(io: str):
    from ai_edge_quantizer import qtyping

    tensor = qtyping.TensorQuantizationConfig
    return qtyping.OpQuantizationConfig(
        activation_tensor_config=tensor(
            num_bits=8,
            symmetric=False,
            dtype=(qtyping.TensorDataType.UINT if io == "uint8" else qtyping.TensorDataType.INT),
        ),
        # unused by INPUT/OUTPUT, but AEQ 0.10 cannot load a recipe with an op config that lacks one
        weight_tensor_config=tensor(num_bits=8, symmetric=True, granularity=qtyping.QuantGranularity.CHANNELWISE),
        compute_precision=qtyping.ComputePrecision.INTEGER,
    )


def check(model: bytes, io: str, keep_float: Sequence[Op] = ()) -> None:
    """Raise EdgepipeError unless the quantized ``model`` has input and output of type ``io``, no op
    touching a float32 tensor besides QUANTIZE/DEQUANTIZE and the ops in ``keep_float`` (same type and
    scope), and no saturated int32 bias."""
    read = _read(model)
    problems = [*_io_problems(read, io), *_float_problems(read, keep_float), *_bias_problems(read)]
    if problems:
        raise EdgepipeError("AEQ's model is not what was asked: " + "; ".join(problems))


def _io_problems(model, io: str) -> list[str]:
    graph, problems = model.subgraphs[0], []
    for role, indices in (("input", graph.inputs), ("output", graph.outputs)):
        code = graph.tensors[indices[0]].type
        if _TENSOR_TYPES.get(code, str(code)) != io:
            problems.append(f"the {role} is {_TENSOR_TYPES.get(code, code)}, not {io}")
    return problems


def _float_problems(model, keep_float: Sequence[Op]) -> list[str]:
    graph, allowed = model.subgraphs[0], {(op.type, op.scope) for op in keep_float}
    stray = [
        op.name
        for op in _ops(model)
        if op.type not in ("QUANTIZE", "DEQUANTIZE")
        and (op.type, op.scope) not in allowed
        and _touches_float(graph, op.index)
    ]
    return [f"{len(stray)} op(s) left in float: {', '.join(stray[:5])}"] if stray else []


def _touches_float(graph, index: int) -> bool:
    flat = graph.operators[index]
    return any(graph.tensors[i].type == _FLOAT32 for i in [*flat.inputs, *flat.outputs] if i >= 0)


def _bias_problems(model) -> list[str]:
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    graph, problems = model.subgraphs[0], []
    for op in _ops(model):
        flat = graph.operators[op.index]
        if op.type in _WEIGHT_AXIS and len(flat.inputs) > 2 and flat.inputs[2] >= 0:
            bias = tfl_flatbuffer_utils.get_tensor_data(graph.tensors[flat.inputs[2]], model.buffers)
            if bias is not None and bias.dtype == np.int32 and np.isin(bias, _INT32_SATURATED).any():
                problems.append(f"the int32 bias of {op.name} overflows")
    return problems


def predict(model: bytes, images: np.ndarray, threads: int = 1) -> np.ndarray:
    """Probabilities of a TFLite model (bytes) for raw-pixel ``images``, one image at a time, with LiteRT."""
    from edgepipe.backends.litert.runner import _quantize, open_interpreter

    interpreter = open_interpreter(model, threads)
    source, sink = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = sink["quantization"] if sink["dtype"] != np.float32 else (1.0, 0)
    outputs = []
    for image in images:
        interpreter.set_tensor(source["index"], _quantize(image[None].astype(np.float32), source))
        interpreter.invoke()
        outputs.append((interpreter.get_tensor(sink["index"])[0].astype(np.float32) - zero_point) * scale)
    return np.stack(outputs)


@dataclass(frozen=True)
class Effect:
    """What one variant does to the outputs against the FP32 model's on the same images."""

    op: Op | None  # the op kept in float; None for the all-integer model
    kl: float  # mean KL divergence of the variant's probabilities from the FP32 model's
    agreement: float  # fraction of images with the FP32 model's top-1 class

    def record(self, baseline: Effect | None = None) -> dict[str, Any]:
        """The effect for reports: the op (if any), KL, agreement, and how much lower its KL is than ``baseline``'s."""
        out = {
            **(self.op.describe() if self.op else {}),
            "kl": round(self.kl, 6),
            "agreement": round(self.agreement, 4),
        }
        if baseline is not None:
            out["kl_reduction"] = round(baseline.kl - self.kl, 6)
        return out


def divergence(probabilities: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(mean KL(reference || probabilities), top-1 agreement) over images (rows)."""
    p = np.clip(reference.astype(np.float64), _PROBABILITY_FLOOR, 1.0)
    q = np.clip(probabilities.astype(np.float64), _PROBABILITY_FLOOR, 1.0)
    kl = float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))
    return kl, float(np.mean(probabilities.argmax(1) == reference.argmax(1)))


#: probe(model) -> (mean KL divergence from the FP32 model, top-1 agreement with it) on a fixed set of images
Probe = Callable[[bytes], tuple[float, float]]


def probe(run: Callable[[bytes], np.ndarray], reference: np.ndarray) -> Probe:
    """A probe from ``run(model) -> probabilities`` and the FP32 model's probabilities on the same images."""
    return lambda model: divergence(run(model), reference)


def rank_by_effect(calibrated: Calibrated, candidates: Sequence[Op], measure: Probe) -> tuple[Effect, list[Effect]]:
    """The all-integer model's effect, and each candidate's when it alone is kept in float, most
    helpful first: lowest divergence from the FP32 model, ties broken by higher top-1 agreement. One
    quantization and one probe per candidate, all from the same calibration."""
    baseline = Effect(None, *measure(calibrated.quantize()))
    effects = [Effect(op, *measure(calibrated.quantize([op]))) for op in candidates]
    return baseline, sorted(effects, key=lambda e: (e.kl, -e.agreement))


@dataclass
class KeptFloat:
    """The model chosen by :func:`fewest_kept_float`: the ops it keeps in float, each with its effect alone,
    and every step tried."""

    model: bytes
    kept: list[Effect]
    steps: list[dict[str, Any]]
    met: bool


def fewest_kept_float(
    calibrated: Calibrated,
    ranked: Sequence[Effect],
    baseline: Effect,
    measure: Probe,
    judge: Callable[[bytes], tuple[float, bool]],
    limit: int = 8,
    tries: int = 16,
) -> KeptFloat:
    """Keep ops in float one more at a time, in ``ranked`` order (only ops that lower the divergence on
    their own, at most ``tries`` of them), each only if it also lowers the divergence of the model with
    the ops kept before it (single-op effects do not add up: two ops that each help alone can undo each
    other); judge each kept step by ``judge(model) -> (top-1, acceptable)`` and stop at the first
    acceptable one or at ``limit`` ops. Without an acceptable one, the most accurate step (the fewest ops
    among equals). Raises EdgepipeError when no op lowers the divergence."""
    helpful = [e for e in ranked if e.kl < baseline.kl][:tries]
    if not helpful:
        raise EdgepipeError("no op brings the outputs closer to the FP32 model when kept in float")
    kept: list[Effect] = []
    current, steps = baseline.kl, []
    best: tuple[float, int, bytes] | None = None  # (top-1, ops kept, model)
    for effect in helpful:
        model = calibrated.quantize([e.op for e in kept] + [effect.op])
        kl, agreement = measure(model)
        step: dict[str, Any] = {"op": effect.op.name, "kl": round(kl, 6), "agreement": round(agreement, 4)}
        if kl >= current:
            steps.append({**step, "skipped": "does not lower the divergence with the ops kept before it"})
            continue
        kept.append(effect)
        current = kl
        top1, met = judge(model)
        steps.append({**step, "kept": len(kept), "top1": top1, "within_budget": met})
        if met:
            return KeptFloat(model, kept, steps, True)
        if best is None or top1 > best[0]:
            best = (top1, len(kept), model)
        if len(kept) == limit:
            break
    assert best is not None  # the first helpful op lowers the divergence of the all-integer model
    return KeptFloat(best[2], kept[: best[1]], steps, False)
