"""Exporting in bounded memory: each format converted in a child process, its peak memory recorded."""

from __future__ import annotations

import numpy as np

from edgepipe.data import materialize
from edgepipe.fileio import read_json
from edgepipe.standalone.export import export_model


def test_formats_converted_in_child_processes_match_and_record_their_peak(tiny_run, tmp_path):
    # calibrated and verified on the digits the model was trained for: on images it was not made for (coloured
    # squares) its INT8 agreement is left to chance
    dataset = materialize(read_json(tiny_run.dataset_index), 32, 3)
    data = (
        np.concatenate([dataset.train.images, dataset.heldout.images]),
        np.concatenate([dataset.train.labels, dataset.heldout.labels]),
    )
    formats = ["onnx-fp32", "onnx-int8"]
    index = export_model(
        tiny_run.model,
        formats,
        tmp_path / "child",
        lambda s: None,
        calibration=data,
        class_names=tiny_run.read_labels(),
        calibration_size=12,
        isolation="process",
    )
    records = {a["format"]: a for a in read_json(index)["artifacts"]}
    assert set(records) == set(formats)
    for record in records.values():
        assert record["status"] == "ok", record
        assert record["export_process"] == "a child process" and record["peak_rss_mb"] > 100  # TensorFlow was there
        assert record["verification"]["passed"]
    assert records["onnx-int8"]["details"]["int8_budget"]["attempts"]  # the budget ran in the child
    same = export_model(
        tiny_run.model,
        ["onnx-fp32"],
        tmp_path / "here",
        lambda s: None,
        calibration=data,
        class_names=tiny_run.read_labels(),
        calibration_size=12,
        isolation="none",
    )
    (here,) = read_json(same)["artifacts"]
    assert here["export_process"] == "this process" and here["peak_rss_mb"] > 0
    # the same model, wherever it was converted (tf2onnx's node names depend on the process, its outputs do not)

    from edgepipe.verification import run_artifact

    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    np.testing.assert_allclose(
        run_artifact(tmp_path / "here" / here["file"], "onnx-fp32", images, 1),
        run_artifact(tmp_path / "child" / records["onnx-fp32"]["file"], "onnx-fp32", images, 1),
        atol=1e-6,
    )
    assert not (tmp_path / "child" / ".edgepipe-tmp").exists()
