"""Report rows, the Pareto frontier and the recommendation, on hand-made results."""

import pytest

from edgepipe.report.table import pareto, recommendation_line, rows, to_csv
from edgepipe.results import SCHEMA, Results


def _record(fmt, precision, top1, p50, status="ok", verification="passed", size=1.0):
    record = {"format": fmt, "precision": precision, "artifact": f"m-{fmt}", "status": status, "threads": 2,
              "engine": "test-engine", "device": "cpu",
              "batch_size": 1, "size_mb": size, "top1": top1,
              "verification": None if verification is None else {"passed": verification == "passed"}}
    if p50 is not None:
        record["latency_ms"] = {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3, "images_per_s": 1000 / p50}
    return record


RESULTS = Results.from_dict({
    "schema": SCHEMA,
    "reference_format": "keras-fp32",
    "device": {"cpu_model": "Test CPU", "hostname": "box"},
    "records": [
        _record("keras-fp32", "fp32", 0.900, 10.0, verification=None),
        _record("tflite-fp32", "fp32", 0.900, 3.0),
        _record("tflite-int8", "int8", 0.895, 2.0, size=0.3),
        _record("onnx-int8", "int8", 0.850, 1.5),
        _record("tflite-fp16", "fp16", 0.990, 0.5, verification="failed"),  # fast and "accurate", but failed

        _record("tensorrt-fp16", "fp16", None, None, status="skipped"),
    ],
})


def test_frontier_and_recommendation_within_budget():
    table = rows(RESULTS)
    verdicts = pareto(table, budget_pp=1.0)
    by = {r["format"]: r for r in table}
    assert [f for f, r in by.items() if r["frontier"]] == ["tflite-fp32", "tflite-int8", "onnx-int8"]
    (verdict,) = verdicts.values()
    assert verdict["recommended"]["format"] == "tflite-int8"  # 0.5 pp below FP32, faster than tflite-fp32
    assert by["tflite-int8"]["speedup_vs_keras"] == pytest.approx(5.0)
    assert by["tflite-fp16"]["verification"] == "failed" and not by["tflite-fp16"]["frontier"]
    assert by["keras-fp32"]["verification"] == "reference" and by["tflite-fp32"]["verification"] == "passed"
    line = recommendation_line(next(iter(verdicts)), verdict)
    assert "`tflite-int8`" in line and "5.0x the Keras FP32 model" in line and "Test CPU (box)" in line


def test_tighter_budget_recommends_the_fp32_export():
    verdict = next(iter(pareto(rows(RESULTS), budget_pp=0.1).values()))
    assert verdict["recommended"]["format"] == "tflite-fp32"


def test_csv_has_a_line_per_record_and_units_in_its_header():
    import csv
    import io

    table = list(csv.DictReader(io.StringIO(to_csv(rows(RESULTS)))))
    assert len(table) == len(RESULTS.records)
    assert table[2]["format"] == "tflite-int8" and float(table[2]["p50_ms"]) == 2.0 and table[2]["size_mb"] == "0.3"
    assert table[-1]["status"] == "skipped" and table[-1]["p50_ms"] == ""
