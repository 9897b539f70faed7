"""The OpenVINO backend: IR formats exported and verified, the IR's own record read back, the engine
running IR, ONNX and full-integer TFLite files like their own engines, and its settings in force."""

import os
import shutil
from collections import Counter

import numpy as np
import openvino as ov
import pytest

from edgepipe import config as cfg
from edgepipe.backends import containers, create_runner, engines, identify
from edgepipe.backends.openvino.export import int8_facts, write_ir
from edgepipe.data import materialize
from edgepipe.device import fingerprint
from edgepipe.fileio import read_json
from edgepipe.harness import BenchSettings, predict
from edgepipe.pipeline.bench import engine_settings
from edgepipe.pipeline.export import backend_options
from edgepipe.standalone.bench import bench_files
from edgepipe.standalone.export import export_model

FORMATS = ("openvino-fp32", "openvino-fp16", "openvino-int8")
SETTINGS = BenchSettings(batch_size=1, warmup=1, min_iterations=3, min_duration_s=0.0, warmup_s=0.0)


#: not the defaults (which tests/backends/test_formats.py exports), to show the options reach NNCF
INT8_OPTIONS = {"export.openvino.int8_preset": "mixed", "export.openvino.fast_bias_correction": False}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run):
    """The three IR formats of the tiny run's model, through the standalone 'export MODEL' path.

    Calibrated and verified on the digits the model was trained for (its training and held-out images,
    197: 39 held out to verify, 64 of the rest to calibrate), where its top-1 classes are clear (logit
    margin above 2 for 95% of the images). Images it was not made for (coloured squares: 84% called
    '1', 10% with a margin below 0.8) leave INT8 agreement to chance on any CPU (88% over 240 of them).
    """
    tmp = tmp_path_factory.mktemp("openvino")
    dataset = materialize(read_json(tiny_run.dataset_index), 32, 3)
    digits = (
        np.concatenate([dataset.train.images, dataset.heldout.images]),
        np.concatenate([dataset.train.labels, dataset.heldout.labels]),
    )
    index = export_model(
        tiny_run.model,
        list(FORMATS),
        tmp / "out",
        lambda line: None,
        calibration=digits,
        class_names=tiny_run.read_labels(),
        calibration_size=64,
        options=backend_options(cfg.from_dict({}, INT8_OPTIONS)),
    )
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
        assert records[name]["verification"]["passed"] and records[name]["verification"]["images"] >= 30
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
    types = {
        op.get_output_element_type(0).get_type_name()
        for op in ov.Core().read_model(str(paths["openvino-fp16"])).get_ordered_ops()
        if op.get_type_name() == "Constant"
    }
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
    assert model.inputs[0].get_partial_shape()[0].is_dynamic  # quantized for a batch of one, written for any
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    precisions = {
        (op.get_rt_info()["layerType"].astype(str), op.get_rt_info()["runtimePrecision"].astype(str))
        for op in compiled.get_runtime_model().get_ordered_ops()
    }
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
    # without VNNI (AVX2 or AVX-512 only) OpenVINO adds pairs of uint8 x int8 products in 16 bits, which the
    # file's 8-bit weights (TFLite's quantizer uses the full int8 range) can saturate: on an AMD EPYC with AVX2
    # 87% of these images kept LiteRT's class (mean absolute difference 0.079), on VNNI and AMX CPUs at least 90%
    vnni = any("vnni" in f or f.startswith("amx") for f in fingerprint()["isa_features"])
    agreement, error = np.mean(ours.argmax(1) == expected.argmax(1)), np.abs(ours - expected).mean()
    assert agreement >= (0.9 if vnni else 0.8), (agreement, error)
    assert error < (0.05 if vnni else 0.1), (agreement, error)


def test_bench_records_the_default_engine_and_openvino(tiny_run, exported):
    files = [_artifact(tiny_run, "*-onnx-fp32.onnx"), exported[1]["openvino-int8"]]
    results = bench_files(files, lambda s: None, settings=SETTINGS, engines=("openvino",))
    assert [(r.format, r.engine) for r in results.records] == [
        ("onnx-fp32", "onnxruntime"),
        ("onnx-fp32", "openvino"),
        ("openvino-int8", "openvino"),
    ]
    for record in results.records:
        assert record.status == "ok", record.reason
        assert record.latency_ms["iterations"] >= 3
    for record in (r for r in results.records if r.engine == "openvino"):
        assert record.settings["threads"] == 1 and record.settings["inference_precision"] == "f32"
        assert record.settings["performance_hint"] == "LATENCY" and record.settings["num_streams"] == 1
        assert record.engine_versions["openvino"]


def _settings_in_force(tiny_run, threads=1, **dotted):
    settings = engine_settings(cfg.from_dict({}, dotted), engines().get("openvino"))
    with create_runner(
        _artifact(tiny_run, "*-onnx-fp32.onnx"), threads=threads, engine="openvino", settings=settings
    ) as runner:
        return runner.settings_record()


def test_engine_settings_from_the_config_reach_the_compiled_model(tiny_run):
    record = _settings_in_force(
        tiny_run,
        threads=2,
        **{
            "bench.openvino.performance_hint": "throughput",
            "bench.openvino.num_streams": 2,
            "bench.openvino.cpu_pinning": False,
        },
    )
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
    assert {(c.threads, c.engine_settings.cpu_pinning) for c in candidates} == {
        (1, None),
        (1, False),
        (2, None),
        (2, False),
    }
    assert {c.engine_settings.inference_precision for c in candidates} == {"f32"}


def test_int8_export_options_reach_nncf(exported):
    """NNCF records in the IR the preset and bias correction it quantized with."""
    records, paths = exported
    model = ov.Core().read_model(str(paths["openvino-int8"]))
    used = {
        key: model.get_rt_info(["nncf", "quantization", key]).astype(str) for key in ("preset", "fast_bias_correction")
    }
    assert used == {"preset": "mixed", "fast_bias_correction": "False"}
    advanced = model.get_rt_info(["nncf", "quantization", "advanced_parameters"]).astype(str)
    assert "'overflow_fix': 'enable'" in advanced and "'disable_bias_correction': False" in advanced
    details = records["openvino-int8"]["details"]
    assert (details["preset"], details["fast_bias_correction"], details["overflow_fix"]) == ("mixed", False, "all")
    assert details["bias_correction"] is True


def test_a_file_made_only_to_be_timed_goes_without_bias_correction(tmp_path):
    """models --measure and a search's latency step: bias correction changes bias values, not the compiled
    graph, so their IRs are quantized without it."""
    from edgepipe.choose.measure import Conditions, Network, prepare

    network = Network("mobilenet_v2", 0.35, 32, 3, 4)
    made = prepare(network, ["openvino-int8"], Conditions(threads=1, calibration_images=4), tmp_path, print)
    (record,) = made.exported
    assert record["status"] == "ok", record
    model = ov.Core().read_model(str(tmp_path / record["file"]))
    advanced = model.get_rt_info(["nncf", "quantization", "advanced_parameters"]).astype(str)
    assert "'disable_bias_correction': True" in advanced


def _compiled_layers(xml) -> Counter:
    """How many runtime operations of each type and precision OpenVINO's CPU plugin compiles an IR to."""
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": 1})
    info = [op.get_rt_info() for op in compiled.get_runtime_model().get_ordered_ops()]
    return Counter((i["layerType"].astype(str), i["runtimePrecision"].astype(str)) for i in info)


def _timing_ir(model, network, folder):
    from edgepipe.choose.measure import Conditions, _export

    (record,) = _export(model, network, ["openvino-int8"], Conditions(threads=1, calibration_images=4), folder, print)
    assert record["status"] == "ok", record
    return folder / record["file"]


TIMED = ("mobilenet_v2", 0.35, 32, 3, 4)


def test_a_random_network_for_timing_keeps_the_biases_openvino_would_fold(tmp_path):
    """models --measure draws a random network's batch-norm statistics and biases: with the zeros and ones of a
    fresh initialisation, OpenVINO folds the biases away and the INT8 file times faster than a trained one's."""
    from edgepipe.architectures import build_classifier
    from edgepipe.choose.measure import Network, build_network

    network = Network(*TIMED)
    fresh = build_classifier(network.arch, network.classes, network.input_size, alpha=network.alpha, weights="none")
    drawn, _ = build_network(network)
    fresh_layers = _compiled_layers(_timing_ir(fresh, network, tmp_path / "fresh"))
    drawn_layers = _compiled_layers(_timing_ir(drawn, network, tmp_path / "drawn"))
    assert sum(drawn_layers.values()) > 1.5 * sum(fresh_layers.values()), (fresh_layers, drawn_layers)
    again, _ = build_network(network)  # seeded: the same values each time
    assert all(np.array_equal(a, b) for a, b in zip(drawn.get_weights(), again.get_weights(), strict=True))


def test_a_random_network_for_timing_compiles_as_the_imagenet_network_does(tmp_path, monkeypatch):
    """The same runtime operations, of the same types and precisions, as the network of genuine ImageNet
    weights (MobileNetV2 alpha 0.35)."""
    import keras.src.backend.config as keras_config

    from edgepipe.architectures import build_classifier
    from edgepipe.choose.measure import Network, build_network
    from tests.conftest import SHARED_WEIGHTS

    file = SHARED_WEIGHTS / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    if not file.is_file():
        pytest.skip(f"genuine Keras ImageNet weights not found: {file}")
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / file.name).symlink_to(file)
    network = Network(*TIMED)
    imagenet = build_classifier(network.arch, network.classes, network.input_size, alpha=network.alpha)
    drawn, _ = build_network(network)
    assert _compiled_layers(_timing_ir(drawn, network, tmp_path / "drawn")) == _compiled_layers(
        _timing_ir(imagenet, network, tmp_path / "imagenet")
    )


#: a child process running an IR with the CPU kernels of a CPU that has AVX2 only: OpenVINO's CPU plugin
#: honours oneDNN's ONEDNN_MAX_CPU_ISA (its compiled graph names the kernels: jit_avx2_I8, ...)
_AVX2_CHILD = """
import sys, numpy as np, openvino as ov
model = ov.Core().read_model(sys.argv[1]); model.reshape([1, 32, 32, 3])
compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
kernels = {op.get_rt_info()["primitiveType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()
           if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
assert kernels and all("avx2" in k and "vnni" not in k.lower() for k in kernels), kernels
request, images = compiled.create_infer_request(), np.load(sys.argv[2]).astype(np.float32)
np.save(sys.argv[3], np.concatenate([request.infer({0: image[None]})[0] for image in images]))
"""


def test_int8_ir_computes_the_same_on_cpus_without_vnni(exported, heldout, tmp_path):
    """7-bit weights (NNCF's overflow fix on every layer): where a CPU has no VNNI, its int8 kernels sum
    pairs of 8-bit products in 16 bits, which saturate with 8-bit weights (NNCF's default fixes the first
    layer only: 88% agreement with the same IR's AMX outputs on the tiny model's digits, flipping images
    Keras is certain of). With the fix the AVX2 kernels give what VNNI and AMX ones give."""
    import subprocess
    import sys

    _, paths = exported
    np.save(tmp_path / "images.npy", heldout)
    subprocess.run(
        [
            sys.executable,
            "-c",
            _AVX2_CHILD,
            str(paths["openvino-int8"]),
            str(tmp_path / "images.npy"),
            str(tmp_path / "avx2.npy"),
        ],
        env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"},
        check=True,
        timeout=600,
    )
    with create_runner(identify(paths["openvino-int8"]), threads=1) as runner:
        here = predict(runner, heldout)
    avx2 = np.load(tmp_path / "avx2.npy")
    assert np.mean(avx2.argmax(1) == here.argmax(1)) == 1.0
    assert np.abs(avx2 - here).max() < 0.02


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
def test_accuracy_control_reverts_ops_when_the_first_recipe_misses(tiny_run, tmp_path, monkeypatch):
    """NNCF's accuracy control runs as the second recipe and the IR it keeps lists the ops left in float.

    Its candidates are compiled for a fixed batch: with a dynamic one, OpenVINO's CPU plugin crashes
    on 'mixed'-preset IRs on CPUs with AMX (and computes other values than its static kernels with any
    preset there). The IR written keeps a dynamic batch."""
    import keras

    from edgepipe.backends import ExportContext, formats
    from edgepipe.backends.openvino import export as openvino_export
    from edgepipe.backends.openvino.backend import OpenVINOExportOptions
    from edgepipe.calibration import draw
    from edgepipe.verification import ArtifactScorer

    judged_batches = set()
    top1 = openvino_export._top1

    def recording_top1(compiled, items):
        judged_batches.add(str(compiled.inputs[0].get_partial_shape()[0]))
        return top1(compiled, items)

    monkeypatch.setattr(openvino_export, "_top1", recording_top1)
    dataset = materialize(read_json(tiny_run.dataset_index), 32, 3)
    val = dataset.splits["val"]
    images, labels = val.images[:40], val.labels[:40]
    model = keras.models.load_model(tiny_run.model, compile=False)
    ctx = ExportContext(
        model,
        tiny_run.read_labels(),
        {},
        draw(dataset.train.images, dataset.train.labels, 16, 0),
        workdir_parent=tmp_path,
        score=ArtifactScorer(images, labels, 1),
        validation=(images, labels),
        reference_top1=1.01,  # unreachable: attempt 1 must miss
        options={"openvino": OpenVINOExportOptions(int8_preset="mixed")},
    )
    ctx.outputs["onnx-fp32"] = _artifact(tiny_run, "*-onnx-fp32.onnx")
    try:
        details = formats().get("openvino-int8").build(ctx, tmp_path / "out" / "m.xml")
    finally:
        ctx.close()
    budget = details["int8_budget"]
    attempts = budget.attempts
    assert [a["attempt"] for a in attempts] == [1, 2] and attempts[1][
        "algorithm"
    ] == "nncf.quantize_with_accuracy_control"
    assert budget.met is False
    chosen = attempts[budget.chosen_attempt - 1]
    assert budget.kept_higher_precision == chosen["kept_float"]
    written = ov.Core().read_model(str(tmp_path / "out" / "m.xml"))
    assert int8_facts(written)["kept_float"] == chosen["kept_float"]
    assert judged_batches == {"1"}
    assert written.inputs[0].get_partial_shape()[0].is_dynamic


def test_a_runner_compiles_each_batch_size_once_while_it_keeps_it(exported):
    compiled: list[int] = []
    with create_runner(identify(exported[1]["openvino-fp32"]), threads=1) as runner:
        original = runner.compile_for
        runner.compile_for = lambda batch, extra=None: compiled.append(batch) or original(batch, extra)
        images = np.zeros((32, *runner.input_spec().shape[1:]), np.float32)
        first = runner.infer(images[:1])
        runner.infer(images)  # a bench's scoring batch
        again = runner.infer(images[:1])  # then its timing at batch 1: the compiled model kept from activation
        for batch in (2, 3, 4):
            runner.infer(images[:batch])
        runner.infer(images[:1])  # batch 1 was pushed out by three others: compiled again
        runner.release_other_sizes()  # as the memory child does: only batch 1 is kept
        runner.infer(images[:4])
    assert compiled == [32, 2, 3, 4, 1, 4]
    np.testing.assert_array_equal(first, again)


def test_probe_reads_an_ir_and_a_tflite_file_without_compiling_them(exported, tiny_run, monkeypatch):
    from edgepipe.backends.openvino.runner import OpenVINORunner
    from edgepipe.standalone.bench import probe

    def run_once(path) -> tuple:
        """What one inference says: the runner's input shape, the output's class count."""
        with create_runner(identify(path), threads=1) as runner:
            shape = runner.input_spec().shape
            return shape, runner.infer(np.zeros((1, *shape[1:]), np.float32)).shape[1]

    files = [exported[1]["openvino-int8"], _artifact(tiny_run, "*-tflite-int8.tflite")]
    expected = [run_once(path) for path in files]

    def no_compile(*args, **kwargs):
        raise AssertionError("probe compiled the model")

    monkeypatch.setattr(OpenVINORunner, "compile_for", no_compile)
    monkeypatch.setattr("edgepipe.standalone.bench.create_runner", no_compile)  # neither file is run either
    assert [probe(identify(path)) for path in files] == expected
    assert expected[0] == ((None, 32, 32, 3), len(tiny_run.read_labels()))
