"""onnx-int8's recipes on a small ONNX classifier built here, run through real ONNX Runtime and NNCF.

One convolution is made the sensitive one: its input carries a channel about a thousand times larger than the
others (and it ignores that channel), so one scale for that tensor swamps the signal. The network also has
what makes NNCF's defaults slow in ONNX Runtime on x86: a depthwise convolution with an input of its own (NNCF
would give it one activation scale per channel) and residual branches whose ranges go below zero (NNCF writes
int8 there, and ONNX Runtime leaves such convolutions in float).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("nncf", reason="the NNCF recipes need nncf")

CLASSES = ["a", "b", "c", "d"]
CONVS = {"conv_a", "depthwise", "project", "shortcut", "expand", "depthwise_2", "project_2", "outlier", "sensitive"}
SIZE = 8


class _Builder:
    """Nodes and initializers of the test network (tf2onnx-like names: outputs end in ':0')."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def conv(self, name: str, x: str, cin: int, cout: int, k: int = 1, group: int = 1, weight=None, bias=None) -> str:
        weight = (
            self.rng.normal(0, np.sqrt(2.0 / (cin // group * k * k)), (cout, cin // group, k, k))
            if weight is None
            else weight
        )
        bias = self.rng.normal(0, 0.1, cout) if bias is None else bias
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.const(name + "_w", weight), self.const(name + "_b", bias)],
                [name + ":0"],
                name=name,
                pads=[k // 2] * 4,
                group=group,
            )
        )
        return name + ":0"

    def relu6(self, x: str) -> str:
        name = x[:-2] + "_relu6"
        self.nodes.append(
            helper.make_node(
                "Clip", [x, self.const(name + "_lo", 0.0), self.const(name + "_hi", 6.0)], [name + ":0"], name=name
            )
        )
        return name + ":0"

    def op(self, op_type: str, inputs: list[str], name: str, **attributes) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name + ":0"], name=name, **attributes))
        return name + ":0"


def _network(head=None, seed: int = 0, features_only: bool = False) -> onnx.ModelProto:
    """Raw pixels (NHWC, 0..255) in, softmax out, preprocessing inside, like an edgepipe onnx-fp32."""
    b = _Builder(seed)
    x = b.op("Mul", ["image", b.const("scale", 1 / 127.5)], "preprocess/mul")
    x = b.op("Add", [x, b.const("offset", -1.0)], "preprocess/add")
    x = b.op("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2])
    a = b.relu6(b.conv("conv_a", x, 3, 8, k=3))
    d = b.relu6(b.conv("depthwise", a, 8, 8, k=3, group=8))
    r = b.op("Add", [b.conv("project", d, 8, 8), b.conv("shortcut", a, 8, 8)], "residual_add")
    e = b.relu6(b.conv("expand", r, 8, 16))
    d2 = b.relu6(b.conv("depthwise_2", e, 16, 16, k=3, group=16))  # its input feeds nothing else
    r2 = b.op("Add", [b.conv("project_2", d2, 16, 8), r], "residual_add_2")
    weight, bias = b.rng.normal(0, 0.5, (8, 8, 1, 1)), b.rng.normal(0, 0.1, 8)
    weight[0], bias[0] = 0.0, 1000.0  # one channel far above the others: one scale for the tensor swamps them
    o = b.conv("outlier", r2, 8, 8, weight=weight, bias=bias)
    weight = b.rng.normal(0, 0.5, (8, 8, 1, 1))
    weight[:, 0] = 0.0  # the sensitive convolution ignores that channel: its signal is in the small ones
    c = b.conv("sensitive", o, 8, 8, weight=weight)
    features = b.op("Flatten", [b.op("GlobalAveragePool", [c], "pool")], "flatten")
    outputs = [helper.make_tensor_value_info(features, TensorProto.FLOAT, None)]
    if not features_only:
        w, bias = head
        logits = b.op("Gemm", [features, b.const("fc_w", w), b.const("fc_b", bias)], "classifier")
        b.nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], name="softmax", axis=-1))
        outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(CLASSES)])]
    graph = helper.make_graph(
        b.nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        outputs,
        b.inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _images(count: int, seed: int) -> np.ndarray:
    """One random colour per image plus noise: the features differ from image to image."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 256, (count, 1, 1, 3))
    return np.clip(colour + rng.integers(-20, 21, (count, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


def _run(model: onnx.ModelProto | Path, images: np.ndarray, level: str = "ORT_ENABLE_ALL") -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    return session.run(None, {"image": images.astype(np.float32)})[0]


def _classifier() -> onnx.ModelProto:
    """The network with a head that spreads its predictions over the classes (centred features)."""
    features = _run(_network(features_only=True), _images(256, seed=99))
    w = np.random.default_rng(1).normal(0, 1, (features.shape[1], len(CLASSES)))
    return _network(head=(3 * w, -3 * features.mean(0) @ w))


def _optimized(path: Path, level: str, tmp: Path) -> list:
    """The nodes of the model ONNX Runtime optimizes from ``path`` at ``level`` (SessionOptions.optimized_model_filepath)."""
    import onnxruntime as ort

    out = tmp / f"{path.stem}-{level}.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return list(onnx.load(str(out)).graph.node)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """onnx-int8 of the classifier through the recipe list, judged on 60 images the FP32 model classifies with a
    clear margin (so 8-bit noise alone flips none): (details, folder, context with its work folder)."""
    from edgepipe.backends import ExportContext, formats
    from edgepipe.calibration import CalibrationSet
    from edgepipe.verification import ArtifactScorer

    tmp = tmp_path_factory.mktemp("onnx-int8")
    fp32 = tmp / "tiny-onnx-fp32.onnx"
    onnx.save(_classifier(), fp32)
    pool = _images(600, seed=3)
    probabilities = _run(fp32, pool)
    confident = np.flatnonzero(probabilities.max(1) > 0.9)[:60]
    images, reference = pool[confident], probabilities[confident]
    calibration = _images(128, seed=2)
    ctx = ExportContext(
        None, CLASSES, {}, CalibrationSet(calibration, np.zeros(len(calibration), np.int64), 0), workdir_parent=tmp
    )
    ctx.outputs["onnx-fp32"] = fp32
    ctx.score = ArtifactScorer(images, reference.argmax(1), 1)
    ctx.reference_top1, ctx.validation, ctx.reference_probabilities = 1.0, (images, reference.argmax(1)), reference
    details = formats().get("onnx-int8").build(ctx, tmp / "tiny-onnx-int8.onnx")
    yield details, tmp, ctx
    ctx.close()


def _attempt(details: dict, number: int) -> dict:
    return next(a for a in details["int8_budget"].attempts if a["attempt"] == number)


def test_budget_record_lists_every_recipe_with_its_top1_and_time(exported):
    details, _, _ = exported
    budget = details["int8_budget"]
    tools = [a.get("tool") for a in budget.attempts]
    assert tools == ["onnxruntime.quantization.quantize_static", "nncf.quantize", "nncf.quantize_with_accuracy_control"]
    assert budget.attempts[0]["calibration_method"] == "minmax"
    for attempt in budget.attempts:
        assert 0.0 <= attempt["top1"] <= 1.0 and attempt["seconds"] > 0, attempt
        assert attempt["within_budget"] is (attempt["attempt"] == 3)  # only accuracy control keeps this model's top-1
    assert budget.met is True and budget.chosen_attempt == 3


def test_nncf_recipe_writes_uint8_qdq_that_onnx_runtime_runs_with_integer_kernels(exported):
    details, _, ctx = exported
    path = next(ctx.workdir.glob("attempt2-*.onnx"))
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert {p.key: p.value for p in model.metadata_props}["edgepipe.format"] == "onnx-int8"
    inits = {i.name: i for i in model.graph.initializer}
    zero_points = [inits[n.input[2]].data_type for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and set(zero_points) == {TensorProto.UINT8}
    extended = _optimized(path, "ORT_ENABLE_EXTENDED", ctx.workdir)
    assert {n.name for n in extended if n.op_type == "QLinearConv"} == CONVS  # every convolution in integer
    assert {n.name for n in extended if n.op_type == "QLinearAdd"} == {"residual_add", "residual_add_2"}
    full = _optimized(path, "ORT_ENABLE_ALL", ctx.workdir)  # the level edgepipe's runner loads with
    assert sum(n.op_type == "QLinearConv" for n in full) == len(CONVS)
    assert not [n for n in full if n.op_type in ("Conv", "FusedConv")]
    assert _attempt(details, 2)["integer_ops"] == len(CONVS) + 3  # and the two residual adds and the pooling


def test_nodes_reported_in_float_really_run_in_float(exported):
    details, tmp, ctx = exported
    path = tmp / "tiny-onnx-int8.onnx"  # the kept artifact: accuracy control's
    kept = set(details["int8_budget"].kept_higher_precision)
    assert "sensitive" in kept and kept == set(_attempt(details, 3)["kept_float"])
    kept_convs = kept & CONVS
    extended = _optimized(path, "ORT_ENABLE_EXTENDED", ctx.workdir)
    kinds = {n.name: n.op_type for n in extended}
    for name in kept:
        assert kinds[name] in ("Conv", "FusedConv", "Gemm"), (name, kinds.get(name))
    assert {n for n, kind in kinds.items() if kind == "QLinearConv"} == CONVS - kept_convs
    full = _optimized(path, "ORT_ENABLE_ALL", ctx.workdir)
    assert not [n.name for n in full if n.op_type == "QLinearConv" and n.name.split("_token")[0] in kept]
    assert sum(n.op_type == "QLinearConv" for n in full) == len(CONVS - kept_convs)


def test_sensitivity_ranking_is_by_measured_effect(exported):
    details, _, _ = exported
    chosen = _attempt(details, 3)
    sensitivity = chosen["sensitivity"]
    ranking = sensitivity["ranking"]
    assert sensitivity["fp32_top1"] == 1.0 and sensitivity["quantized_top1"] < 0.9
    assert "sensitive" in ranking[0]["float"]  # the layer made sensitive ranks first, by its measured effect
    assert ranking[0]["top1"] == 1.0 and all(r["top1"] < 0.9 for r in ranking[1:])
    assert ranking == sorted(ranking, key=lambda r: (-r["top1"], r["kl"]))
    assert all(0 <= r["agreement"] <= 1 and r["kl"] >= 0 and r["images"] == 60 for r in ranking)
    steps = sensitivity["steps"]
    assert steps[0]["float"] == ranking[0]["float"]  # greedy: the best-ranked group is reverted first
    assert steps[-1]["top1"] == chosen["top1"]  # the last step measured what the kept artifact scores in the runner


def test_activation_type_rewrite_is_exact(exported):
    from edgepipe.backends.onnxruntime import nncf_int8
    from edgepipe.backends.onnxruntime.qdq import activation_zero_point_types, set_activation_type

    _, tmp, ctx = exported
    model, _ = nncf_int8.quantize(ctx, tmp / "tiny-onnx-fp32.onnx", fast=True)
    assert activation_zero_point_types(model) == {"int8", "uint8"}  # NNCF: int8 where a range goes below zero
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert set_activation_type(rewritten, "uint8") > 0
    assert activation_zero_point_types(rewritten) == {"uint8"}
    images = ctx.validation[0]
    before, after = (_run(m, images, "ORT_DISABLE_ALL") for m in (model, rewritten))  # the QDQ arithmetic as written
    np.testing.assert_array_equal(before, after)


def test_nncf_stops_exactly_at_the_budget():
    from edgepipe.backends.onnxruntime.nncf_int8 import nncf_max_drop

    for budget_pp, images, allowed in ((1.0, 60, 0), (1.0, 100, 1), (1.0, 1000, 10), (2.5, 99, 2), (0.0, 50, 0)):
        max_drop = nncf_max_drop(budget_pp, images)
        # the tie-break term stays below half an image: k images lost pass if and only if k is allowed
        assert allowed / images + 0.499 / images <= max_drop < (allowed + 1) / images


def _weight_ranges(path: Path, depthwise: bool = True) -> list[tuple[int, int]]:
    """(lowest, highest) quantized value of each convolution's int8 kernel a DequantizeLinear reads (without
    depthwise kernels, one input channel per group, when ``depthwise`` is off)."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            values = numpy_helper.to_array(inits[node.input[0]])
            if values.dtype == np.int8 and values.ndim == 4 and (depthwise or values.shape[1] > 1):
                out.append((int(values.min()), int(values.max())))
    return out


def test_weights_are_quantized_to_7_bits_so_cpus_without_vnni_do_not_saturate(exported):
    """export.onnx.int8_reduce_range (default on): ONNX Runtime's and NNCF's recipes both keep the kernels' int8
    weights within 7 bits, where a CPU without VNNI adds two uint8 x int8 products in 16 bits without saturating
    (on such a CPU, an AMD EPYC with AVX2, 8-bit files of the tiny models failed verification): ONNX Runtime's
    every kernel, NNCF's all but the depthwise ones (its overflow fix leaves those out); each file says so."""
    details, _, ctx = exported
    for number in (1, 2):
        # the recipe's own file, not ONNX Runtime's optimized copies the other tests write beside it (_optimized)
        (path,) = [p for p in ctx.workdir.glob(f"attempt{number}-*.onnx") if "ORT_ENABLE" not in p.name]
        ranges = _weight_ranges(path, depthwise=number == 1)
        assert ranges and all(-64 <= low and high <= 64 for low, high in ranges), (path.name, ranges)
        assert "7-bit" in _attempt(details, number)["weights"]


def test_with_reduce_range_off_the_weights_use_8_bits(tmp_path):
    from edgepipe.backends import ExportContext
    from edgepipe.backends.onnxruntime.export import static_qdq
    from edgepipe.calibration import CalibrationSet

    fp32 = tmp_path / "tiny-onnx-fp32.onnx"
    onnx.save(_classifier(), fp32)
    calibration = _images(16, seed=2)
    ctx = ExportContext(
        None, CLASSES, {}, CalibrationSet(calibration, np.zeros(16, np.int64), 0), workdir_parent=tmp_path
    )
    try:
        ctx.outputs["onnx-fp32"] = fp32
        for reduce_range in (False, True):
            out = tmp_path / f"qdq-{reduce_range}.onnx"
            static_qdq(ctx, "minmax", out, "uint8", False, True, reduce_range=reduce_range)
            widest = max(max(-low, high) for low, high in _weight_ranges(out))
            assert widest > 64 if not reduce_range else widest <= 64, (reduce_range, widest)
    finally:
        ctx.close()
