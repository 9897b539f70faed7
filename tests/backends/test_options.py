"""Every backend option and engine setting in the config reaches the code it names."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgepipe import config as cfg
from edgepipe.backends import ExportContext, create_runner, engines, formats, identify
from edgepipe.calibration import draw
from edgepipe.fileio import read_json
from edgepipe.pipeline.bench import engine_settings
from edgepipe.pipeline.export import backend_options


def _config(**dotted):
    return cfg.from_dict({}, dotted)


@pytest.fixture(scope="module")
def tiny(tiny_run):
    import keras

    from edgepipe.data import materialize

    dataset = materialize(read_json(tiny_run.dataset_index), 32, 3)
    model = keras.models.load_model(tiny_run.model, compile=False)
    return model, draw(dataset.train.images, dataset.train.labels, 12, 0), tiny_run.read_labels()


def _build(tiny, format_name, config, tmp_path):
    model, calibration, labels = tiny
    ctx = ExportContext(model, labels, {}, calibration, workdir_parent=tmp_path, options=backend_options(config))
    path = tmp_path / f"out-{format_name}{formats().get(format_name).suffix}"
    try:
        formats().get(format_name).build(ctx, path)
    finally:
        ctx.close()
    return path


def test_tflite_int8_io_reaches_the_converter(tiny, tmp_path):
    from edgepipe.backends.litert.export import tensor_types

    path = _build(tiny, "tflite-int8", _config(**{"export.tflite.int8_io": "int8"}), tmp_path)
    types = tensor_types(path)
    assert types["input_dtype"] == "int8" and types["output_dtype"] == "int8"


def test_onnx_opset_reaches_tf2onnx(tiny, tmp_path):
    path = _build(tiny, "onnx-fp32", _config(**{"export.onnx.opset": 15}), tmp_path)
    assert {o.domain: o.version for o in onnx.load(path).opset_import}[""] == 15


def _scales_and_zero_points(path):
    model = onnx.load(path)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = [
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None and inits[n.input[0]].ndim == 4
    ]  # convolution kernels
    activations = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    return (
        [inits[n.input[1]] for n in weights],
        [inits[n.input[2]] for n in activations if len(n.input) > 2 and n.input[2] in inits],
    )


def test_onnx_per_channel_activation_type_and_symmetry_reach_the_quantizer(tiny, tmp_path):
    default_scales, default_zeros = _scales_and_zero_points(_build(tiny, "onnx-int8", _config(), tmp_path / "a"))
    assert any(s.size > 1 for s in default_scales)  # per-channel weight scales by default
    assert {z.dtype for z in default_zeros} == {np.dtype(np.uint8)}  # uint8 activations: integer kernels on x86
    assert len({int(z) for z in default_zeros}) > 1  # asymmetric ranges by default
    changed = _config(
        **{
            "export.onnx.per_channel": False,
            "export.onnx.symmetric_activations": True,
            "export.onnx.activations": "int8",
        }
    )
    scales, zeros = _scales_and_zero_points(_build(tiny, "onnx-int8", changed, tmp_path / "b"))
    assert scales and all(s.size == 1 for s in scales)
    assert zeros and {z.dtype for z in zeros} == {np.dtype(np.int8)} and all(np.all(z == 0) for z in zeros)


def test_tensorrt_batch_profile_dla_and_workspace_reach_the_build_plan():
    from edgepipe.backends.tensorrt.export import build_plan
    from edgepipe.errors import ConfigError

    config = _config(
        **{
            "export.tensorrt.batch": {"min": 1, "opt": 4, "max": 8},
            "export.tensorrt.dla_core": 1,
            "export.tensorrt.workspace_mb": 256,
        }
    )
    plan = build_plan(backend_options(config)["tensorrt"], (-1, 32, 32, 3))
    assert plan == {
        "profile": ((1, 32, 32, 3), (4, 32, 32, 3), (8, 32, 32, 3)),
        "workspace_bytes": 256 * 2**20,
        "dla_core": 1,
    }
    bad = _config(**{"export.tensorrt.batch": {"min": 4, "opt": 2, "max": 8}})
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        build_plan(backend_options(bad)["tensorrt"], (-1, 32, 32, 3))


def test_litert_xnnpack_setting_reaches_the_interpreter(tiny_run):
    artifact = identify(next(tiny_run.artifacts_dir.glob("*-tflite-fp32.tflite")))
    for xnnpack in (True, False):
        settings = engine_settings(_config(**{"bench.litert.xnnpack": xnnpack}), engines().get("litert"))
        with create_runner(artifact, threads=1, settings=settings) as runner:
            record = runner.settings_record()
        assert record["xnnpack"] is xnnpack and record["xnnpack_delegated"] is xnnpack


def test_onnxruntime_spinning_and_graph_optimization_reach_the_session(tiny_run):
    import onnxruntime as ort

    artifact = identify(next(tiny_run.artifacts_dir.glob("*-onnx-fp32.onnx")))
    for spinning, level, expected in (
        (True, "all", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        (False, "basic", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
    ):
        config = _config(**{"bench.onnxruntime.spinning": spinning, "bench.onnxruntime.graph_optimization": level})
        with create_runner(
            artifact, threads=2, settings=engine_settings(config, engines().get("onnxruntime"))
        ) as runner:
            options = runner.session.get_session_options()
            assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spinning else "0")
            assert options.graph_optimization_level == expected
            assert runner.settings_record()["spinning"] is spinning
