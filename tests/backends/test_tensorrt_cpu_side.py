"""The CPU-side parts of the TensorRT path: cache keys, engine metadata and the portability check."""

import pytest

from edgepipe.backends.tensorrt.backend import read_sidecar, tensorrt_unavailable
from edgepipe.backends.tensorrt.engine_info import check_engine_compatible, engine_metadata, timing_cache_key
from edgepipe.errors import EdgepipeError

FACTS = {
    "tensorrt": "10.13.0",
    "gpu_name": "NVIDIA Jetson Orin Nano",
    "compute_capability": "8.7",
    "cuda_driver": 12060,
    "cuda_runtime": 12060,
}


def test_timing_cache_keys_change_with_tensorrt_and_gpu_model():
    base = timing_cache_key(FACTS)
    assert base == timing_cache_key(dict(FACTS))
    assert base != timing_cache_key({**FACTS, "tensorrt": "10.14.0"})
    assert base != timing_cache_key({**FACTS, "gpu_name": "NVIDIA A100"})
    assert base != timing_cache_key({**FACTS, "compute_capability": "8.6"})


def test_engine_from_another_gpu_is_a_clear_error(tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"onnx")
    meta = engine_metadata(FACTS, onnx_file, "tensorrt-int8", "int8", (1, 1, 1), None, "onnx-int8")
    assert meta["source_onnx_sha256"] and meta["batch_profile"] == {"min": 1, "opt": 1, "max": 1}
    assert meta["format"] == "tensorrt-int8" and meta["precision"] == "int8"
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
    from edgepipe.standalone.export import export_model

    index = export_model(tiny_run.model, ["tensorrt-fp16"], tmp_path, lambda s: None)
    record = read_json(index)["artifacts"][0]
    assert record["status"] == "ok" and (tmp_path / (record["file"] + ".json")).exists()
