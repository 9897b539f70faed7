"""Report rows, the Pareto frontier and the recommendation, on hand-made results."""

import pytest

from edgepipe.report.table import pareto, recommendation_line, rows, to_csv
from edgepipe.results import SCHEMA, Results


def _record(fmt, precision, top1, p50, status="ok", verification="passed", size=1.0):
    record = {
        "format": fmt,
        "precision": precision,
        "artifact": f"m-{fmt}",
        "status": status,
        "threads": 2,
        "engine": "test-engine",
        "device": "cpu",
        "batch_size": 1,
        "size_mb": size,
        "top1": top1,
        "verification": None if verification is None else {"passed": verification == "passed"},
    }
    if p50 is not None:
        record["latency_ms"] = {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3, "images_per_s": 1000 / p50}
    return record


RESULTS = Results.from_dict(
    {
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
    }
)


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


def _timed(fmt, p50, p90, rounds, size=1.0, top1=0.900, engine="test-engine"):
    """A record timed in interleaved rounds (their p50s in ms) with a given overall p50 and p90."""
    record = _record(fmt, "int8" if "int8" in fmt else "fp32", top1, p50, size=size)
    record["engine"] = engine
    record["latency_ms"]["p90"] = p90
    record["rounds"] = {
        "count": len(rounds),
        "p50_ms": rounds,
        "spread": (max(rounds) - min(rounds)) / sorted(rounds)[len(rounds) // 2],
    }
    return record


def _verdict(*records):
    results = Results.from_dict(
        {
            "schema": SCHEMA,
            "reference_format": "keras-fp32",
            "device": {"cpu_model": "Test CPU", "hostname": "box"},
            "records": list(records),
        }
    )
    table = rows(results)
    (verdict,) = pareto(table).values()
    return verdict, recommendation_line("here", verdict)


KERAS = _timed("keras-fp32", 9.0, 9.5, [8.9, 9.0, 9.1])
#: fast but noisy on a loaded machine: round p50s spread 64.8%
NOISY = _timed("tflite-fp32", 0.974, 1.900, [0.70, 0.90, 0.974, 1.10, 1.331])
#: slightly slower and steady: spread 8.6%
STEADY = _timed("openvino-int8", 1.027, 1.100, [0.99, 1.01, 1.027, 1.05, 1.078], size=0.3, engine="openvino")


def test_a_noisy_fast_one_and_a_steady_one_are_tied_and_the_rule_picks():
    verdict, line = _verdict(KERAS, NOISY, STEADY)
    assert verdict["recommended"]["format"] == "openvino-int8"  # p50 says tflite-fp32; their rounds overlap
    assert [r["format"] for r in verdict["tied"]] == ["tflite-fp32", "openvino-int8"]
    assert (
        "`tflite-fp32` (p50 0.974 ms) and `openvino-int8` (p50 1.027 ms) are tied within the spread of their "
        "rounds (64.8%, 8.6%)"
    ) in line
    assert (
        "chose `openvino-int8` by the tie rule (lower p90, then smaller file, then name): lower p90 "
        "(1.100 ms against 1.900 ms)" in line
    )
    assert "use `openvino-int8` with openvino" in line and "fastest" not in line


def test_clearly_separated_latencies_are_not_tied():
    slower = _timed("openvino-int8", 1.500, 1.100, [1.45, 1.48, 1.50, 1.52, 1.55], size=0.3)
    verdict, line = _verdict(KERAS, NOISY, slower)  # noisy's slowest round 1.331 < slower's fastest 1.45
    assert verdict["recommended"]["format"] == "tflite-fp32" and verdict["tied"] == []
    assert "tied" not in line and "fastest within 1 pp" in line


def test_tied_with_the_same_p90_the_smaller_file_wins_then_the_name():
    a = _timed("tflite-fp32", 1.00, 1.20, [0.95, 1.00, 1.05], size=2.0)
    b = _timed("onnx-fp32", 1.01, 1.20, [0.97, 1.01, 1.04], size=1.0)
    verdict, line = _verdict(KERAS, a, b)
    assert verdict["recommended"]["format"] == "onnx-fp32"
    assert "same p90 (1.200 ms), smaller file (1.00 MB against 2.00 MB)" in line
    c = _timed("litert-fp32", 1.02, 1.20, [0.98, 1.02, 1.03], size=1.0)
    verdict, line = _verdict(KERAS, a, b, c)
    assert verdict["recommended"]["format"] == "litert-fp32" and "same p90 and file size, first by name" in line


def test_ties_do_not_chain_beyond_the_fastest():
    fastest = _timed("tflite-fp32", 1.00, 1.50, [0.98, 1.00, 1.02])
    middle = _timed("onnx-fp32", 1.03, 1.40, [1.01, 1.03, 1.10])  # overlaps the fastest
    far = _timed("openvino-fp32", 1.12, 0.90, [1.08, 1.12, 1.15])  # overlaps middle only, lowest p90 of all
    verdict, line = _verdict(KERAS, fastest, middle, far)
    assert [r["format"] for r in verdict["tied"]] == ["tflite-fp32", "onnx-fp32"]
    assert verdict["recommended"]["format"] == "onnx-fp32" and "openvino-fp32" not in line


def test_records_without_rounds_tie_only_on_equal_latency():
    a, b = _record("tflite-fp32", "fp32", 0.9, 1.00), _record("onnx-fp32", "fp32", 0.9, 1.01)
    verdict, _ = _verdict(KERAS, a, b)
    assert verdict["recommended"]["format"] == "tflite-fp32" and verdict["tied"] == []


def test_oversubscribed_records_get_one_line_per_setting_and_thread_count():
    from edgepipe.report.markdown import render
    from edgepipe.report.table import oversubscription_lines

    over = [dict(_record(f, "fp32", 0.9, 1.0), threads=4, oversubscribed=True) for f in ("tflite-fp32", "onnx-fp32")]
    fine = dict(_record("keras-fp32", "fp32", 0.9, 9.0), threads=2, oversubscribed=False)
    results = Results.from_dict(
        {
            "schema": SCHEMA,
            "reference_format": "keras-fp32",
            "records": [fine, *over],
            "device": {"cpu_model": "Test CPU", "hostname": "box", "usable_cores": 2, "cpu_quota": 2.5},
        }
    )
    (line,) = oversubscription_lines(rows(results))
    assert line.startswith(
        "Test CPU (box), cpu, 4 thread(s), batch 1: oversubscribed: 4 thread(s) on 2 usable "
        "core(s) (cgroup CPU quota 2.5) for 2 record(s) (`tflite-fp32` with test-engine"
    )
    assert f"- {line}" in render(results)
    legacy = Results.from_dict(
        {
            **results.to_dict(),
            "records": [{k: v for k, v in r.to_dict().items() if k != "oversubscribed"} for r in results.records],
        }
    )
    assert oversubscription_lines(rows(legacy)) == [line]  # older files: threads against the usable cores recorded


def test_records_never_measured_make_no_setting_of_their_own():
    skipped = {**_record("tflite-fp32", "fp32", None, None, status="skipped"), "threads": None, "batch_size": None}
    data = {"schema": SCHEMA, "reference_format": "keras-fp32", "device": {"cpu_model": "Test CPU"}}
    measured = Results.from_dict({**data, "records": [_record("keras-fp32", "fp32", 0.9, 10.0), skipped]})
    verdicts = pareto(rows(measured))
    assert len(verdicts) == 1 and "None thread(s)" not in next(iter(verdicts))
    assert next(iter(verdicts.values()))["recommended"]["format"] == "keras-fp32"
    # with nothing measured at all, the one setting left still says so
    (verdict,) = pareto(rows(Results.from_dict({**data, "records": [skipped]}))).values()
    assert verdict["recommended"] is None and verdict["reason"] == "nothing was measured"
