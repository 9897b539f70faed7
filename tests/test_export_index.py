"""The export index (artifacts.json): one typed record per format, one versioned reader and writer."""

from __future__ import annotations

import json

import pytest

from edgepipe.errors import EdgepipeError
from edgepipe.export_index import SCHEMA, ExportIndex, read_export_index, write_export_index
from edgepipe.pipeline.bench import recorded_kept_float
from edgepipe.results import Int8Budget, Status

#: artifacts.json as edgepipe wrote it before the file had a schema key
TODAY = """{
  "source_model": "model.keras",
  "source_sha256": "ab12",
  "calibration": {"images": 8, "sha256": "cd34"},
  "artifacts": [
    {"format": "tflite-fp32", "precision": "fp32", "container": "tflite", "file": "lenet5-tflite-fp32.tflite",
     "description": "TFLite FP32", "status": "ok", "size_mb": 0.25, "sha256": "ef56", "export_seconds": 1.5,
     "details": {}, "export_process": "this process", "peak_rss_mb": 900.0,
     "verification": {"images": 30, "passed": true, "problems": []}},
    {"format": "tflite-int8", "precision": "int8", "container": "tflite", "file": "lenet5-tflite-int8.tflite",
     "description": "TFLite INT8", "status": "failed-verification", "reason": "top-1 agreement 80% < 95%",
     "size_mb": 0.07, "sha256": "0789", "export_seconds": 3.0,
     "details": {"quantizer": "TFLite converter",
                 "int8_budget": {"budget_pp": 1.0, "met": false, "chosen_attempt": 2,
                                 "attempts": [{"attempt": 1, "recipe": "a"}, {"attempt": 2, "recipe": "b"}],
                                 "reference_top1": 0.9, "validation_images": 30, "note": "no recipe stayed within",
                                 "kept_higher_precision": ["conv_1"], "significance": null}},
     "export_process": "this process", "peak_rss_mb": 950.0,
     "verification": {"images": 30, "passed": false, "problems": ["top-1 agreement 80% < 95%"]}},
    {"format": "onnx-fp16", "precision": "fp16", "container": "onnx", "file": "lenet5-onnx-fp16.onnx",
     "description": "ONNX FP16", "status": "skipped", "reason": "onnxconverter-common is not installed",
     "export_process": "this process", "peak_rss_mb": 800.0}
  ]
}"""


def test_an_index_written_before_the_schema_key_reads_as_typed_records(tmp_path):
    path = tmp_path / "artifacts.json"
    path.write_text(TODAY)
    index = read_export_index(path)
    assert index.source_model == "model.keras" and index.calibration == {"images": 8, "sha256": "cd34"}
    fp32, int8, fp16 = index.artifacts
    assert fp32.status is Status.OK and fp32.verification["passed"] and fp32.int8_budget is None
    assert int8.status is Status.FAILED_VERIFICATION and int8.reason == "top-1 agreement 80% < 95%"
    assert isinstance(int8.int8_budget, Int8Budget) and int8.int8_budget.kept_higher_precision == ["conv_1"]
    assert int8.details == {"quantizer": "TFLite converter"}  # the budget is typed, not left in the details
    assert fp16.status is Status.SKIPPED and fp16.size_mb is None and index.get("onnx-fp16") is fp16
    # the bench stage's reader of the kept-float ops reads it too
    assert recorded_kept_float(tmp_path / "lenet5-tflite-int8.tflite") == ["conv_1"]


def test_the_writer_adds_the_schema_and_keeps_every_entry_as_it_was(tmp_path):
    old = json.loads(TODAY)
    path = tmp_path / "artifacts.json"
    path.write_text(TODAY)
    write_export_index(tmp_path / "again.json", read_export_index(path))
    again = json.loads((tmp_path / "again.json").read_text())
    assert again.pop("schema") == SCHEMA == "edgepipe.artifacts/1"
    assert again == old  # nothing lost, nothing added: readers of the raw file see what they saw


def test_an_index_of_a_later_schema_is_refused_in_one_line(tmp_path):
    path = tmp_path / "artifacts.json"
    path.write_text(json.dumps({**json.loads(TODAY), "schema": "edgepipe.artifacts/2"}))
    with pytest.raises(EdgepipeError) as caught:
        read_export_index(path)
    assert "newer than this edgepipe reads" in str(caught.value) and "\n" not in str(caught.value)
    assert "Upgrade edgepipe" in caught.value.hint
    assert recorded_kept_float(tmp_path / "lenet5-tflite-int8.tflite") == []  # unreadable: nothing known


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"schema": "edgepipe.results/2", "artifacts": []}, "is not an edgepipe export index"),
        ({"source_model": "m.keras"}, "has no list of artifact records"),
        ({"artifacts": [{"format": "x", "file": "x", "status": "exploded"}]}, "unknown record status"),
        ({"artifacts": [{"format": "x", "file": "x", "status": "ok", "details": [1]}]}, "malformed artifact records"),
        ([1, 2], "is not an edgepipe export index (a JSON list)"),
    ],
)
def test_a_foreign_or_damaged_index_is_refused_in_one_line(tmp_path, content, expected):
    path = tmp_path / "artifacts.json"
    path.write_text(json.dumps(content))
    with pytest.raises(EdgepipeError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_export_index(path)


def test_a_missing_index_is_refused_in_one_line(tmp_path):
    with pytest.raises(EdgepipeError, match="export index .* does not exist"):
        read_export_index(tmp_path / "artifacts.json")
    assert ExportIndex.from_dict({"artifacts": []}).artifacts == []
