"""Timing and memory results are typed: figures, or an error field for the runner that could not be measured."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest

from edgepipe.backends import create_runner, identify
from edgepipe.harness import BenchSettings, Timing, measure_interleaved
from edgepipe.harness.memory import MemoryResult, measure_memory
from edgepipe.results import Record, Status
from tests.conftest import write_onnx_classifier

SETTINGS = BenchSettings(batch_size=1, warmup=1, warmup_s=0.0, min_iterations=3, min_duration_s=0.0)


def test_a_runner_that_raises_has_an_error_and_the_others_are_timed(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype(np.uint8)
    good, bad = (
        write_onnx_classifier(tmp_path / "good.onnx", 8),
        write_onnx_classifier(tmp_path / "bad.onnx", 4),
    )  # bad takes 4x4
    with contextlib.ExitStack() as stack:
        runners = {
            name: stack.enter_context(create_runner(identify(p), threads=1))
            for name, p in [("good", good), ("bad", bad)]
        }
        measured = measure_interleaved(runners, images, SETTINGS, rounds=2)
    assert isinstance(measured["good"], Timing) and not measured["good"].failed and measured["good"].error is None
    assert measured["good"].latency_ms["p50"] > 0 and measured["good"].rounds["count"] == 2
    assert measured["bad"].failed and measured["bad"].error and measured["bad"].latency_ms is None


def test_memory_that_cannot_be_measured_is_an_error_and_results_keep_its_shape(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    result = measure_memory(identify(broken), "onnxruntime", "cpu", 1, None, 1, (1, 8, 8, 3), iterations=1)
    assert isinstance(result, MemoryResult) and result.figures is None and result.error
    record = Record("broken.onnx", "onnx-fp32", "fp32", Status.OK, memory=result.as_record())
    assert record.to_dict()["memory"] == {"error": result.error}  # results.json as before: {"error": ...}
    good = measure_memory(
        identify(write_onnx_classifier(tmp_path / "good.onnx", 8)),
        "onnxruntime",
        "cpu",
        1,
        None,
        1,
        (1, 8, 8, 3),
        iterations=2,
    )
    assert good.error is None and good.as_record()["peak_rss_mb"] > 0 and "error" not in good.as_record()


def test_an_artifact_with_a_non_square_input_is_probed_and_timed_at_its_own_height_and_width(tmp_path):
    """A file whose reader declares no shapes (ONNX) is probed by one inference: at its own height and width."""
    from edgepipe.errors import EdgepipeError
    from edgepipe.standalone.bench import bench_files, bench_images, probe

    wide = write_onnx_classifier(tmp_path / "wide.onnx", 12, width=20)
    assert probe(identify(wide)) == ((None, 12, 20, 3), 2)
    images, labels = bench_images(None, None, (None, 12, 20, 3), 0)
    assert images.shape[1:] == (12, 20, 3) and labels is None
    results = bench_files([wide], lambda line: None, threads=(1,), settings=SETTINGS, memory=False)
    (record,) = results.records
    assert record.status == Status.OK and record.latency_ms["p50"] > 0, record
    with pytest.raises(EdgepipeError, match="12x20"):
        bench_images(tmp_path, None, (None, 12, 20, 3), 0)


def _tflite_classifier(path, height: int, width: int):
    import keras
    import tensorflow as tf

    inputs = keras.Input((height, width, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs)))
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def test_with_image_folders_a_non_square_artifact_is_skipped_with_its_reason_and_the_others_measured(tmp_path):
    from edgepipe.standalone.bench import bench_files
    from tests.conftest import make_image_folder

    folder = make_image_folder(tmp_path / "images", ("a", "b"), per_class=2, size=16)
    wide, square = (
        _tflite_classifier(tmp_path / "wide.tflite", 12, 20),
        _tflite_classifier(tmp_path / "sq.tflite", 12, 12),
    )
    results = bench_files([wide, square], lambda line: None, data_dir=folder, settings=SETTINGS, memory=False)
    records = {Path(r.artifact).name: r for r in results.records}
    assert records["wide.tflite"].status == Status.SKIPPED and "12x20" in records["wide.tflite"].reason
    assert records["sq.tflite"].status == Status.OK and records["sq.tflite"].top1 is not None
