"""The CPU-side parts of the TensorRT path: cache keys, engine metadata and the portability check."""

import pytest

from edgepipe.errors import EdgepipeError
from edgepipe.exporters.tensorrt_export import cache_key, check_engine_compatible, engine_metadata, read_sidecar
from edgepipe.gpu import tensorrt_unavailable

FACTS = {"tensorrt": "10.13.0", "gpu_name": "NVIDIA Jetson Orin Nano", "compute_capability": "8.7",
         "cuda_driver": 12060, "cuda_runtime": 12060}


def test_cache_keys_change_with_tensorrt_gpu_model_and_calibration():
    base = cache_key("calibration", FACTS, "model-a", "calib-a")
    assert base == cache_key("calibration", dict(FACTS), "model-a", "calib-a")
    assert base != cache_key("calibration", {**FACTS, "tensorrt": "10.14.0"}, "model-a", "calib-a")
    assert base != cache_key("calibration", {**FACTS, "gpu_name": "NVIDIA A100"}, "model-a", "calib-a")
    assert base != cache_key("calibration", FACTS, "model-b", "calib-a")
    assert base != cache_key("calibration", FACTS, "model-a", "calib-b")
    assert cache_key("timing", FACTS) != cache_key("timing", {**FACTS, "compute_capability": "8.6"})


def test_engine_from_another_gpu_is_a_clear_error(tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"onnx")
    meta = engine_metadata(FACTS, onnx_file, "int8", (1,), None, "onnx-int8")
    assert meta["source_onnx_sha256"] and meta["batch_sizes"] == [1]
    check_engine_compatible(meta, FACTS)
    with pytest.raises(EdgepipeError, match="built for GPU NVIDIA Jetson Orin Nano.*rebuild"):
        check_engine_compatible(meta, {**FACTS, "gpu_name": "NVIDIA GeForce RTX 4090"})
    with pytest.raises(EdgepipeError, match="TensorRT 10.13.0"):
        check_engine_compatible(meta, {**FACTS, "tensorrt": "10.14.0"})


def test_engine_without_sidecar_is_refused(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(EdgepipeError, match="sidecar"):
        read_sidecar(engine)


def test_unavailability_names_the_missing_piece():
    reason = tensorrt_unavailable()
    if reason is None:
        pytest.skip("TensorRT and a CUDA device are present")
    assert "tensorrt" in reason or "CUDA" in reason or "cuda-python" in reason


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_tensorrt_engine_builds_runs_and_matches_onnx(tiny_run, tmp_path):
    if tensorrt_unavailable():
        pytest.skip(f"TensorRT engines cannot be built here: {tensorrt_unavailable()}")
    from edgepipe.fileio import read_json
    from edgepipe.pipeline.export import export_model_file

    index = export_model_file(tiny_run.model, ["tensorrt-fp16"], tmp_path, lambda s: None)
    record = read_json(index)["artifacts"][0]
    assert record["status"] == "ok" and (tmp_path / (record["file"] + ".json")).exists()
