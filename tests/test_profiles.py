"""Per-op profiles: each CPU engine's own profiler on tiny models, float islands, records, report, and that
the timed numbers are taken with no profiler on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgepipe.backends import create_runner, identify
from edgepipe.harness import BenchSettings
from edgepipe.harness.profile import profile_runner
from edgepipe.profiles import (
    COMPUTE,
    CONSISTENT_RANGE,
    DEQUANTIZE,
    QUANTIZE,
    OpTime,
    Profile,
    diagnosis,
    layer_of,
    mark_float_islands,
)

SETTINGS = BenchSettings(batch_size=1, warmup=1, min_iterations=5, min_duration_s=0.0, warmup_s=0.0)
LAYERS = ("stem", "conv_wide", "dw", "project", "head")


def _model():
    """A 32x32 CNN of about 25M MACs per image: enough that ops, not per-call overhead, fill a call."""
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="stem")(inputs)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv_wide")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    x = keras.layers.Conv2D(64, 1, activation="relu", name="project")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(x))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The model saved, and exported to one INT8 and one FP32 file per CPU engine."""
    import edgepipe

    folder = tmp_path_factory.mktemp("profiled")
    model = _model()
    model.save(folder / "model.keras")
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (24, 32, 32, 3)).astype(np.uint8), rng.integers(0, 3, 24)
    index = edgepipe.export(
        folder / "model.keras",
        ["tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8", "openvino-int8"],
        calibration=(images, labels),
        labels=["a", "b", "c"],
        output=folder / "artifacts",
        accuracy_budget_pp=100.0,
        isolation="none",
        qat={"epochs": 0},
        echo=lambda line: None,
    )
    return folder, index


def _layers(folder):
    from edgepipe.pipeline.bench import model_layers

    return model_layers(folder / "model.keras")


def _profile(path, layers=None, kept=()):
    artifact = identify(path)
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    with create_runner(artifact, threads=1) as runner:
        base = Profile(str(path), artifact.format, artifact.precision, runner.engine, "cpu", 1, 1)
        return profile_runner(runner, images, base, layers=layers, kept_float=kept)


@pytest.mark.parametrize("fmt", ["tflite-int8", "tflite-fp32", "onnx-int8", "onnx-fp32", "openvino-int8"])
def test_each_cpu_engine_profiles_a_tiny_model_per_op(exported, fmt):
    folder, index = exported
    profile = _profile(index.path(fmt), _layers(folder))
    assert profile.status == "ok", profile.reason
    assert profile.profiler and profile.calls > 0
    # a consistency check, not a timing assertion: one call's per-op times (each op's median over the
    # profiled calls) against the wall time of the fastest profiled call (the profiler on). Above 1.5x, ops would
    # be counted twice or taken from warm-up calls; the wall time only grows when the machine is busy (a call
    # waits for a core), so that bound holds on any machine. Ops missing are caught below: every source
    # convolution must be found. The lower bound (0.3x) is the product's own check, which adds a note.
    low, high = CONSISTENT_RANGE
    assert profile.op_ms <= high * profile.wall_ms, (profile.op_ms, profile.wall_ms)
    assert profile.consistent == (low <= profile.op_ms / profile.wall_ms <= high)
    if not profile.consistent:
        assert any("outside the expected range" in note for note in profile.notes), profile.notes
    # every convolution of the source network is found in the ops, by name, and gets MACs and GMAC/s
    convs = {"stem", "conv_wide", "dw", "project"}
    assert convs <= {op.layer for op in profile.ops}
    rows = {row["layer"]: row for row in profile.layers}
    assert all(rows[name]["macs"] > 0 and rows[name]["gmacs_per_s"] > 0 for name in convs)
    kernels = {op.kernel for op in profile.ops if op.layer == "conv_wide"}
    assert kernels and None not in kernels
    weighted = [op for op in profile.ops if op.layer == "conv_wide" and op.role == COMPUTE]
    assert (
        weighted
        and all(op.precision == ("int8" if fmt.endswith("int8") else "fp32") for op in weighted)
        or fmt.startswith("openvino")
    )  # OpenVINO may run FP32 layers in bf16 on AMX; its INT8 is checked below
    if fmt == "openvino-int8":
        assert any(op.precision == "int8" for op in weighted)


def test_litert_names_the_ops_that_ran_outside_xnnpack(exported):
    """LiteRT's INT8 softmax and the output quantize run as built-in kernels, outside XNNPACK."""
    _, index = exported
    profile = _profile(index.path("tflite-int8"))
    outside = [op for op in profile.ops if op.delegated is False]
    inside = [op for op in profile.ops if op.delegated]
    assert inside and all(op.placement == "XNNPACK" for op in inside)
    assert all(op.kernel == "LiteRT built-in kernel" for op in outside)
    assert {op.op_type for op in outside} <= {"QUANTIZE", "DEQUANTIZE", "SOFTMAX"}  # XNNPACK takes every conv


def _qdq_model_with_a_float_op(path):
    """input -> Q -> DQ -> Conv (int8 weights behind a DQ) -> Q -> DQ -> Exp -> Q -> DQ -> output: ONNX Runtime
    fuses the convolution into an integer kernel and has none for Exp, which stays in float between a
    DequantizeLinear and a QuantizeLinear."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.integers(-100, 100, (32, 3, 3, 3)).astype(np.int8), "w_q"),
        numpy_helper.from_array(np.full(32, 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(32, np.int8), "w_zero"),
        numpy_helper.from_array(np.array(0.02, np.float32), "scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["x_q"], name="x_quantize"),
        helper.make_node("DequantizeLinear", ["x_q", "scale", "zero"], ["x_dq"], name="x_dequantize"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], name="w_dequantize", axis=0),
        helper.make_node("Conv", ["x_dq", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "scale", "zero"], ["c_q"], name="conv_quantize"),
        helper.make_node("DequantizeLinear", ["c_q", "scale", "zero"], ["c_dq"], name="conv_dequantize"),
        helper.make_node("Exp", ["c_dq"], ["e"], name="kept_exp"),
        helper.make_node("QuantizeLinear", ["e", "scale", "zero"], ["e_q"], name="exp_quantize"),
        helper.make_node("DequantizeLinear", ["e_q", "scale", "zero"], ["y"], name="y_dequantize"),
    ]
    graph = helper.make_graph(
        nodes,
        "float_kept",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 64, 64])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def test_an_op_kept_in_float_is_a_float_island_of_the_int8_file(tmp_path):
    from edgepipe.backends import Artifact

    path = _qdq_model_with_a_float_op(tmp_path / "kept.onnx")
    artifact = Artifact(path, "onnx", "onnx-int8", "int8")  # what the export would record
    with create_runner(artifact, threads=1) as runner:
        base = Profile(str(path), "onnx-int8", "int8", "onnxruntime", "cpu", 1, 1)
        measured = runner.profile(np.zeros((1, 3, 64, 64), np.float32), 5)
    from edgepipe.harness.profile import join

    base.ops, base.wall_ms, base.calls, base.profiler = (
        measured.ops,
        measured.wall_ms,
        measured.calls,
        measured.profiler,
    )
    profile = join(base, kept_float=["kept_exp"])
    ops = {op.name: op for op in profile.ops}
    exp = ops["kept_exp"]
    assert exp.precision == "fp32" and exp.float_island and exp.kept_float
    conv = next(op for op in profile.ops if op.op_type == "QLinearConv")
    assert conv.precision == "int8" and not conv.float_island and not conv.kept_float
    assert [op.name for op in profile.ops if op.float_island] == ["kept_exp"]


def test_float_island_rule_needs_integer_on_both_sides():
    def op(name, role, precision, inputs, outputs):
        return OpTime(name, name, 1.0, precision=precision, role=role, inputs=inputs, outputs=outputs)

    ops = [
        op("q", QUANTIZE, "fp32", ("x",), ("a",)),
        op("conv", COMPUTE, "int8", ("a",), ("b",)),
        op("dq", DEQUANTIZE, "int8", ("b",), ("c",)),
        op("mean", COMPUTE, "fp32", ("c",), ("d",)),
        op("q2", QUANTIZE, "fp32", ("d",), ("e",)),
        op("fc", COMPUTE, "int8", ("e",), ("f",)),
        op("dq2", DEQUANTIZE, "int8", ("f",), ("g",)),
        op("softmax", COMPUTE, "fp32", ("g",), ("y",)),
    ]
    mark_float_islands(ops)
    assert [o.name for o in ops if o.float_island] == ["mean"]  # the softmax after the last dequantize is a tail


def test_ops_map_to_source_layers_by_name_where_names_allow():
    layers = ["conv_a", "dw_b", "fc"]
    assert layer_of(["functional_1/conv_a_1/Relu;functional_1/conv_a_1/convolution"], layers) == "conv_a"
    assert layer_of(["model/dw_b/depthwise"], layers) == "dw_b"
    assert layer_of(["ReorderOutput"], layers) is None
    assert layer_of(["x", "fc/MatMul"], layers) == "fc"  # from an alias


def test_diagnosis_names_the_largest_avoidable_cost():
    ops = [
        OpTime("a", "Conv", 5.8, precision="int8"),
        OpTime("b", "Exp", 2.1, precision="fp32", kept_float=True),
        OpTime("c", "Exp", 1.0, precision="fp32", kept_float=True, float_island=True),
        OpTime("d", "Mul", 1.1, precision="fp32", kept_float=True),
    ]
    profile = Profile("m.onnx", "onnx-int8", "int8", "onnxruntime", "cpu", 1, 1, ops=ops)
    assert diagnosis(profile) == "42% of the time in 3 op(s) kept in float by the INT8 budget"
    for op in ops[1:]:
        op.kept_float = False
    assert diagnosis(profile) == "10% of the time in 1 op(s) running in float between dequantize and quantize"
    ops[2].float_island = False
    assert diagnosis(profile) is None


def test_profiles_round_trip_through_results_json_and_older_files_still_read(tmp_path):
    from edgepipe.results import Results, read_results, write_results_json

    profile = Profile(
        "m.tflite",
        "tflite-int8",
        "int8",
        "litert",
        "cpu",
        1,
        1,
        profiler="p",
        calls=3,
        wall_ms=1.0,
        ops=[OpTime("conv", "CONV_2D", 0.5, kernel="k", precision="int8", layer="stem", float_island=True)],
        layers=[{"layer": "stem", "kind": "Conv2D", "macs": 10, "time_ms": 0.5}],
    )
    results = Results(device={"cpu_model": "x"}, conditions={}, records=[], profiles=[profile])
    write_results_json(tmp_path / "r.json", results)
    again = read_results(tmp_path / "r.json")
    assert again.profiles[0].to_dict() == profile.to_dict()
    older = results.to_dict()
    del older["profiles"]
    (tmp_path / "old.json").write_text(json.dumps(older))
    assert read_results(tmp_path / "old.json").profiles == []


def test_profiling_leaves_the_timed_session_and_records_unchanged(exported):
    """The timed session has no profiler on, and a bench with profiling has the same timed record fields
    plus profiles as separate records."""
    from edgepipe.standalone.bench import bench_files

    _, index = exported
    path = index.path("onnx-int8")
    with create_runner(path, threads=1) as runner:
        assert runner.options.enable_profiling is False
        runner.profile(np.zeros((1, 32, 32, 3), np.float32), 2)
        assert runner.options.enable_profiling is False  # profiled in a session of its own
    plain = bench_files([path], lambda s: None, settings=SETTINGS, memory=False)
    profiled = bench_files([path], lambda s: None, settings=SETTINGS, memory=False, profile=True)
    assert plain.profiles == [] and len(profiled.profiles) == 1
    assert set(plain.records[0].to_dict()) == set(profiled.records[0].to_dict())
    assert profiled.profiles[0].status == "ok" and profiled.profiles[0].artifact == str(path)


def test_report_says_where_the_time_goes(exported, tmp_path):
    from edgepipe.report import write_reports
    from edgepipe.standalone.bench import bench_files

    _, index = exported
    results = bench_files(
        [index.path("tflite-int8"), index.path("tflite-fp32")],
        lambda s: None,
        settings=SETTINGS,
        memory=False,
        profile=True,
    )
    write_reports(results, tmp_path)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## Where the time goes" in text
    assert text.count("Top 10 ops by time") == 2 and "Time per op type" in text
    assert "INT8 against FP32 per op family" in text and "| litert | conv |" in text
    assert "Where the time goes" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_the_profile_command(exported, tmp_path):
    from click.testing import CliRunner

    from edgepipe.cli import main

    folder, index = exported
    out = tmp_path / "profile.json"
    result = CliRunner().invoke(
        main, ["profile", str(index.path("tflite-int8")), "--model", str(folder / "model.keras"), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Top 10 ops by time" in result.output
    written = json.loads(out.read_text())
    assert written["status"] == "ok" and written["layers"]
    missing = CliRunner().invoke(main, ["profile", str(tmp_path / "nope.tflite")])
    assert missing.exit_code == 2 and missing.output.count("\n") == 1 and "does not exist" in missing.output
    keras_file = CliRunner().invoke(main, ["profile", str(folder / "model.keras"), "--output", str(out)])
    assert keras_file.exit_code == 1 and "no per-op profiler" in keras_file.output
    (tmp_path / "mine.json").write_text("{}")
    refused = CliRunner().invoke(
        main, ["profile", str(index.path("tflite-int8")), "--output", str(tmp_path / "mine.json")]
    )
    assert refused.exit_code == 2 and (tmp_path / "mine.json").read_text() == "{}"


@pytest.mark.gpu
def test_tensorrt_layer_profiler(tiny_run):
    engine = next(tiny_run.artifacts_dir.glob("*-tensorrt-fp16.engine"))
    artifact = identify(engine)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    with create_runner(artifact, threads=1, device="cuda") as runner:
        base = Profile(str(engine), artifact.format, artifact.precision, "tensorrt", "cuda", 1, 1)
        profile = profile_runner(runner, images, base)
    assert profile.status == "ok", profile.reason
    assert profile.ops and all(op.time_ms >= 0 for op in profile.ops)
    assert profile.consistent
