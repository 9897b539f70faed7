"""Runner selection by artifact and device; engine-only timing; GPU providers where a GPU exists."""

import numpy as np
import pytest

from edgepipe.backends import create_runner, devices_for, engines, engines_for, identify
from edgepipe.errors import EdgepipeError
from edgepipe.harness import BenchSettings, measure_interleaved
from edgepipe.standalone.bench import bench_files

SETTINGS = BenchSettings(batch_size=1, warmup=1, min_iterations=5, min_duration_s=0.0, warmup_s=0.0)


def test_devices_follow_what_each_engine_can_use(tiny_run):
    onnx = identify(next(tiny_run.artifacts_dir.glob("*-onnx-fp32.onnx")))
    tflite = identify(next(tiny_run.artifacts_dir.glob("*-tflite-int8.tflite")))
    (ort,) = engines_for(onnx)
    (litert,) = engines_for(tflite)
    assert devices_for(ort, ("cpu", "cuda", "tensorrt")) == ("cpu", "cuda", "tensorrt")
    assert devices_for(litert, ("cuda",)) == ("cpu",)  # LiteRT runs on the CPU only
    assert devices_for(engines().get("tensorrt"), ("cpu",)) == ("cuda",)  # an engine runs on its GPU
    with pytest.raises(EdgepipeError, match="litert does not run on 'cuda'"):
        create_runner(tflite, threads=1, device="cuda")


def test_format_and_precision_come_from_the_file_not_its_name(tiny_run, tmp_path):
    import shutil

    renamed = tmp_path / "renamed-onnx-fp16.onnx"  # a misleading name
    shutil.copy(next(tiny_run.artifacts_dir.glob("*-onnx-fp32.onnx")), renamed)
    artifact = identify(renamed)
    assert (artifact.format, artifact.precision) == ("onnx-fp32", "fp32")
    assert artifact.labels == ("0", "1", "2")
    tflite = tmp_path / "model.tflite"
    shutil.copy(next(tiny_run.artifacts_dir.glob("*-tflite-int8.tflite")), tflite)
    assert (identify(tflite).format, identify(tflite).precision) == ("tflite-int8", "int8")


def test_missing_execution_provider_is_a_skipped_record_with_the_reason(tiny_run):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has ONNX Runtime's CUDA provider")
    onnx = next(tiny_run.artifacts_dir.glob("*-onnx-fp32.onnx"))
    results = bench_files(
        [onnx], lambda s: None, threads=(1,), batches=(1,), settings=SETTINGS, devices=("cpu", "cuda")
    )
    cpu, cuda = results.records
    assert cpu.status == "ok" and cpu.device == "cpu"
    assert cuda.status == "skipped" and "no cuda execution provider" in cuda.reason


@pytest.mark.parametrize("pattern", ["*-tflite-int8.tflite", "*-onnx-fp32.onnx"])
def test_engine_only_time_is_recorded_beside_end_to_end(tiny_run, pattern):
    artifact = next(tiny_run.artifacts_dir.glob(pattern))
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    with create_runner(artifact, threads=1) as runner:
        measured = measure_interleaved({"one": runner}, images, SETTINGS, rounds=1)["one"]
    assert measured.compute_ms["iterations"] == measured.latency_ms["iterations"]
    assert measured.compute_ms["p50"] <= measured.latency_ms["p50"]
    assert measured.warmup_calls >= 1


def test_litert_fast_input_path_matches_plain_quantization(tiny_run):
    """uint8 input with scale 1: rounding straight into the input buffer gives what set_tensor gives."""
    from ai_edge_litert.interpreter import Interpreter

    artifact = next(tiny_run.artifacts_dir.glob("*-tflite-int8.tflite"))
    images = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    pixels = np.round(images).astype(np.uint8)
    with create_runner(artifact, threads=1) as runner:
        assert runner._in_identity and runner.pixel_dtype() == np.uint8
        ours = np.concatenate([runner.infer(images[i : i + 1]) for i in range(3)])
        as_they_are = np.concatenate([runner.infer(pixels[i : i + 1]) for i in range(3)])  # no conversion at all
    np.testing.assert_array_equal(as_they_are, ours)
    from edgepipe.harness.latency import runner_batches

    with create_runner(artifact, threads=1) as runner:
        assert runner_batches(runner, pixels, 1)[0].dtype == np.uint8
        assert runner_batches(runner, images, 1)[0].dtype == np.float32
    with create_runner(next(tiny_run.artifacts_dir.glob("*-onnx-fp32.onnx")), threads=1) as runner:
        assert runner.pixel_dtype() == np.float32 and runner_batches(runner, pixels, 1)[0].dtype == np.float32
    plain = Interpreter(model_path=str(artifact), num_threads=1)
    plain.allocate_tensors()
    inp, out = plain.get_input_details()[0], plain.get_output_details()[0]
    expected = []
    for i in range(3):
        plain.set_tensor(inp["index"], np.clip(np.round(images[i : i + 1]), 0, 255).astype(np.uint8))
        plain.invoke()
        scale, zero = out["quantization"]
        expected.append((plain.get_tensor(out["index"]).astype(np.float32) - zero) * scale)
    np.testing.assert_array_equal(ours, np.concatenate(expected))


@pytest.mark.gpu
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_onnx_runtime_gpu_providers(tiny_run, device):
    onnx = next(tiny_run.artifacts_dir.glob("*-onnx-fp32.onnx"))
    results = bench_files([onnx], lambda s: None, threads=(1,), batches=(1,), settings=SETTINGS, devices=(device,))
    (record,) = results.records
    assert record.status == "ok", record
    expected = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[device]
    assert expected in record.engine_versions["providers"]


@pytest.mark.gpu
def test_keras_on_the_gpu(tiny_run):
    images = np.zeros((2, 32, 32, 3), np.float32)
    with create_runner(tiny_run.model, threads=1, device="cuda") as runner:
        assert runner.infer(images).shape == (2, 3)


def test_tune_sweeps_threads_and_engine_settings_and_keeps_the_fastest(tiny_run):
    from edgepipe.report.table import analyse, recommendation_line

    onnx = next(tiny_run.artifacts_dir.glob("*-onnx-fp32.onnx"))
    results = bench_files(
        [onnx], lambda s: None, threads=(2,), batches=(1,), settings=SETTINGS, memory=False, tune=True
    )
    (record,) = results.records
    tuning = record.tuning
    candidates = tuning["candidates"]
    assert {(c["threads"], c["spinning"], c["graph_optimization"]) for c in candidates} == {
        (t, s, g) for t in (1, 2) for s in (True, False) for g in ("all", "extended")
    }
    fastest = min(c["p50_ms"] for c in candidates if "p50_ms" in c)
    assert tuning["best"]["p50_ms"] == fastest
    assert (tuning["default"]["threads"], tuning["default"]["spinning"]) == (2, True)
    best = tuning["best"]
    assert record.threads == best["threads"]
    assert (record.settings["spinning"], record.settings["graph_optimization"]) == (
        best["spinning"],
        best["graph_optimization"],
    )
    assert [t["batch_size"] for t in tuning["throughput"]] == [1, 2, 4, 8]
    _, verdicts = analyse(results)
    (verdict,) = verdicts.values()
    assert f"spinning {best['spinning']}" in recommendation_line("here", verdict)
