"""The OpenVINO backend: IR formats exported and verified, the IR's own record read back, the engine
running IR, ONNX and full-integer TFLite files like their own engines, and its settings in force."""

import shutil

import numpy as np
import openvino as ov
import pytest

from edgepipe import config as cfg
from edgepipe.backends import containers, create_runner, engines, identify
from edgepipe.backends.openvino.export import int8_facts, write_ir
from edgepipe.data import materialize
from edgepipe.fileio import read_json
from edgepipe.harness import BenchSettings, predict
from edgepipe.pipeline.bench import engine_settings
from edgepipe.standalone.bench import bench_files
from edgepipe.pipeline.export import backend_options
from edgepipe.standalone.export import export_model
from tests.conftest import make_image_folder

FORMATS = ("openvino-fp32", "openvino-fp16", "openvino-int8")
SETTINGS = BenchSettings(batch_size=1, warmup=1, min_iterations=3, min_duration_s=0.0, warmup_s=0.0)


#: not the defaults (which tests/backends/test_formats.py exports), to show the options reach NNCF
INT8_OPTIONS = {"export.openvino.int8_preset": "mixed", "export.openvino.fast_bias_correction": False}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run):
    """The three IR formats of the tiny run's model, through the standalone 'export MODEL' path."""
    tmp = tmp_path_factory.mktemp("openvino")
    data = make_image_folder(tmp / "calib", classes=("0", "1", "2"), per_class=10, size=32)
    index = export_model(tiny_run.model, list(FORMATS), tmp / "out", lambda line: None, calibration=data,
                         calibration_size=16, options=backend_options(cfg.from_dict({}, INT8_OPTIONS)))
    records = {a["format"]: a for a in read_json(index)["artifacts"]}
    return records, {name: tmp / "out" / records[name]["file"] for name in records}


@pytest.fixture(scope="module")
def heldout(tiny_run):
    return materialize(read_json(tiny_run.dataset_index), 32, 3).heldout.images


def _artifact(tiny_run, pattern):
    return next(tiny_run.artifacts_dir.glob(pattern))


def test_ir_formats_export_and_verify_against_keras(exported):
    records, paths = exported
    assert set(records) == set(FORMATS)
    for name in ("openvino-fp32", "openvino-int8"):
        assert records[name]["status"] == "ok", records[name].get("reason")
        assert records[name]["verification"]["passed"]
    assert records["openvino-fp32"]["verification"]["max_abs_diff"] < 1e-4
    # float16 weights, float32 arithmetic: the same figures tflite-fp16 gives; this tiny model's largest
    # probability change (~0.026) can exceed the fp16 tolerance, as tflite-fp16's does
    fp16 = records["openvino-fp16"]
    assert fp16["status"] in ("ok", "failed-verification")
    assert fp16["verification"]["top1_agreement"] == 1.0 and fp16["verification"]["max_abs_diff"] < 5e-2
    for name, path in paths.items():
        assert path.is_file() and path.with_suffix(".bin").is_file(), name
        assert containers().get("openvino").companions(path) == [path.with_suffix(".bin")]
    assert not [p for p in paths["openvino-fp32"].parent.iterdir() if ".tmp." in p.name]  # no temporaries left


def test_identify_reads_the_ir_not_its_name(exported, tmp_path):
    _, paths = exported
    misleading = tmp_path / "model-openvino-fp32.xml"  # an int8 IR under an fp32 name
    shutil.copy(paths["openvino-int8"], misleading)
    shutil.copy(paths["openvino-int8"].with_suffix(".bin"), misleading.with_suffix(".bin"))
    artifact = identify(misleading)
    assert (artifact.container, artifact.format, artifact.precision) == ("openvino", "openvino-int8", "int8")
    assert artifact.labels == ("0", "1", "2")
    model = ov.Core().read_model(str(misleading))  # OpenVINO's Model API reads model_info
    assert model.get_rt_info(["model_info", "model_type"]).astype(str) == "Classification"
    assert model.get_rt_info(["model_info", "labels"]).astype(str) == "0 1 2"


def test_fp16_ir_holds_float16_weights(exported):
    _, paths = exported
    types = {op.get_output_element_type(0).get_type_name()
             for op in ov.Core().read_model(str(paths["openvino-fp16"])).get_ordered_ops() if op.get_type_name() == "Constant"}
    assert "f16" in types
    fp32_bin, fp16_bin = (paths[n].with_suffix(".bin").stat().st_size for n in ("openvino-fp32", "openvino-fp16"))
    assert fp16_bin < 0.6 * fp32_bin


def test_int8_ir_really_holds_int8(exported):
    """FakeQuantize ops and int8 weight constants in the file, and int8 kernels in the compiled CPU graph."""
    records, paths = exported
    model = ov.Core().read_model(str(paths["openvino-int8"]))
    facts = int8_facts(model)
    assert facts["fake_quantize_ops"] > 0 and facts["int8_weight_constants"] > 0 and facts["quantized_ops"] > 0
    assert records["openvino-int8"]["details"]["fake_quantize_ops"] == facts["fake_quantize_ops"]
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    precisions = {(op.get_rt_info()["layerType"].astype(str), op.get_rt_info()["runtimePrecision"].astype(str))
                  for op in compiled.get_runtime_model().get_ordered_ops()}
    assert ("Convolution", "u8") in precisions or ("Convolution", "i8") in precisions
    fp32_facts = int8_facts(ov.Core().read_model(str(paths["openvino-fp32"])))
    assert fp32_facts["fake_quantize_ops"] == 0 and fp32_facts["int8_weight_constants"] == 0  # the check can fail


def test_int8_budget_is_reported(exported):
    budget = exported[0]["openvino-int8"]["details"]["int8_budget"]
    assert budget["attempts"][0]["recipe"].startswith("NNCF post-training quantization")
    assert "top1" in budget["attempts"][0] and isinstance(budget["met"], bool)


def test_onnx_file_runs_like_onnx_runtime(tiny_run, heldout):
    onnx = identify(_artifact(tiny_run, "*-onnx-fp32.onnx"))
    with create_runner(onnx, threads=1) as ort_runner:
        expected = predict(ort_runner, heldout)
    with create_runner(onnx, threads=1, engine="openvino") as runner:
        ours = predict(runner, heldout)
        assert runner.input_spec().shape == (None, 32, 32, 3)
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_full_integer_tflite_runs_like_litert(tiny_run, heldout):
    """OpenVINO keeps the file's uint8 input and output: the runner quantizes raw pixels and dequantizes
    with the file's own scale, as LiteRT does. OpenVINO computes some layers differently from LiteRT's
    integer kernels, so the outputs agree closely but not bit for bit."""
    tflite = identify(_artifact(tiny_run, "*-tflite-int8.tflite"))
    with create_runner(tflite, threads=1) as litert:
        expected = predict(litert, heldout)
    with create_runner(tflite, threads=1, engine="openvino") as runner:
        assert runner.input_spec().dtype == "uint8"
        ours = predict(runner, heldout)
    steps = ours * 256  # the file's output scale is 1/256: every probability is a whole number of steps
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    assert ours.min() >= 0 and ours.max() <= 1 and np.allclose(ours.sum(1), 1, atol=0.05)
    assert np.mean(ours.argmax(1) == expected.argmax(1)) >= 0.9
    assert np.abs(ours - expected).mean() < 0.05


def test_bench_records_the_default_engine_and_openvino(tiny_run, exported):
    files = [_artifact(tiny_run, "*-onnx-fp32.onnx"), exported[1]["openvino-int8"]]
    results = bench_files(files, lambda s: None, settings=SETTINGS, engines=("openvino",))
    assert [(r.format, r.engine) for r in results.records] == [
        ("onnx-fp32", "onnxruntime"), ("onnx-fp32", "openvino"), ("openvino-int8", "openvino")]
    for record in results.records:
        assert record.status == "ok", record.reason
        assert record.latency_ms["iterations"] >= 3
    for record in (r for r in results.records if r.engine == "openvino"):
        assert record.settings["threads"] == 1 and record.settings["inference_precision"] == "f32"
        assert record.settings["performance_hint"] == "LATENCY" and record.settings["num_streams"] == 1
        assert record.engine_versions["openvino"]


def _settings_in_force(tiny_run, threads=1, **dotted):
    settings = engine_settings(cfg.from_dict({}, dotted), engines().get("openvino"))
    with create_runner(_artifact(tiny_run, "*-onnx-fp32.onnx"), threads=threads, engine="openvino", settings=settings) as runner:
        return runner.settings_record()


def test_engine_settings_from_the_config_reach_the_compiled_model(tiny_run):
    record = _settings_in_force(tiny_run, threads=2, **{"bench.openvino.performance_hint": "throughput",
                                                         "bench.openvino.num_streams": 2, "bench.openvino.cpu_pinning": False})
    assert record["performance_hint"] == "THROUGHPUT" and record["num_streams"] == 2 and record["threads"] == 2
    assert record["cpu_pinning"] is False
    assert record["inference_precision"] == "f32"  # measured as exported unless asked otherwise
    # 'default' leaves the precision to the device (bf16 on CPUs with AVX512_BF16 or AMX): recorded as it is
    record = _settings_in_force(tiny_run, **{"bench.openvino.inference_precision": "default"})
    assert record["inference_precision"] == ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    assert _settings_in_force(tiny_run)["performance_hint"] == "LATENCY"


def test_tuning_sweeps_pinning_and_never_the_precision(tiny_run):
    from edgepipe.pipeline.measure import Setting, tune_candidates

    engine = engines().get("openvino")
    candidates = tune_candidates(Setting(engine, "cpu", 2, 1, engine.settings()), 2)
    assert {(c.threads, c.engine_settings.cpu_pinning) for c in candidates} == {(1, None), (1, False), (2, None), (2, False)}
    assert {c.engine_settings.inference_precision for c in candidates} == {"f32"}


def test_int8_export_options_reach_nncf(exported):
    """NNCF records in the IR the preset and bias correction it quantized with."""
    records, paths = exported
    model = ov.Core().read_model(str(paths["openvino-int8"]))
    used = {key: model.get_rt_info(["nncf", "quantization", key]).astype(str) for key in ("preset", "fast_bias_correction")}
    assert used == {"preset": "mixed", "fast_bias_correction": "False"}
    details = records["openvino-int8"]["details"]
    assert (details["preset"], details["fast_bias_correction"]) == ("mixed", False)


def test_a_device_openvino_does_not_see_is_a_skipped_record(tiny_run):
    if any(d.startswith("NPU") for d in ov.Core().available_devices):
        pytest.skip("this machine has an NPU")
    onnx = _artifact(tiny_run, "*-onnx-fp32.onnx")
    results = bench_files([onnx], lambda s: None, settings=SETTINGS, engines=("openvino",), devices=("npu",))
    by_engine_device = {(r.engine, r.device): r for r in results.records}
    assert by_engine_device[("onnxruntime", "cpu")].status == "ok"  # ONNX Runtime has no npu: its own device
    skipped = by_engine_device[("openvino", "npu")]
    assert skipped.status == "skipped" and "no NPU device" in skipped.reason


def test_an_ir_pair_is_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "m.xml"

    def save(text):
        def write(tmp):
            tmp.with_suffix(".bin").write_text(text + " weights")
            tmp.write_text(text)
        return write

    write_ir(path, save("old"))

    def broken(tmp):
        save("new")(tmp)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_ir(path, broken)
    assert path.read_text() == "old" and path.with_suffix(".bin").read_text() == "old weights"
    write_ir(path, save("new"))
    assert path.read_text() == "new" and path.with_suffix(".bin").read_text() == "new weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]  # no temporaries left


@pytest.mark.slow
def test_accuracy_control_reverts_ops_when_the_first_recipe_misses(tiny_run, tmp_path):
    """NNCF's accuracy control runs as the second recipe and the IR it keeps lists the ops left in float."""
    import keras

    from edgepipe.backends import ExportContext, formats
    from edgepipe.calibration import draw
    from edgepipe.verification import Evaluator

    dataset = materialize(read_json(tiny_run.dataset_index), 32, 3)
    val = dataset.splits["val"]
    model = keras.models.load_model(tiny_run.model, compile=False)
    ctx = ExportContext(model, tiny_run.read_labels(), {}, draw(dataset.train.images, dataset.train.labels, 16, 0),
                        workdir_parent=tmp_path, evaluate=Evaluator(val.images, val.labels, 1),
                        reference_top1=1.01, validation_labels=val.labels)  # unreachable: attempt 1 must miss
    ctx.outputs["onnx-fp32"] = _artifact(tiny_run, "*-onnx-fp32.onnx")
    try:
        details = formats().get("openvino-int8").build(ctx, tmp_path / "out" / "m.xml")
    finally:
        ctx.close()
    attempts = details["int8_budget"]["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2] and attempts[1]["algorithm"] == "nncf.quantize_with_accuracy_control"
    assert details["int8_budget"]["met"] is False
    chosen = attempts[details["int8_budget"]["chosen_attempt"] - 1]
    assert details["int8_budget"]["kept_higher_precision"] == chosen["kept_float"]
    assert int8_facts(ov.Core().read_model(str(tmp_path / "out" / "m.xml")))["kept_float"] == chosen["kept_float"]
