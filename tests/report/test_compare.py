"""'edgepipe compare' passes on equal results and fails on an injected regression."""

import copy
import json

import pytest
from click.testing import CliRunner

from edgepipe.cli import main
from edgepipe.fileio import read_json


def _write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def test_equal_results_pass(tiny_run, tmp_path):
    results = read_json(tiny_run.results)
    a, b = _write(tmp_path / "a.json", results), _write(tmp_path / "b.json", results)
    result = CliRunner().invoke(
        main, ["compare", a, b, "--max-latency-regression", "10%", "--max-accuracy-drop", "0.5"]
    )
    assert result.exit_code == 0, result.output
    assert "no threshold crossed" in result.output and "| `tflite-int8` |" in result.output


def test_injected_latency_regression_fails_and_names_it(tiny_run, tmp_path):
    baseline = read_json(tiny_run.results)
    current = copy.deepcopy(baseline)
    slow = next(r for r in current["records"] if r["format"] == "tflite-int8")
    slow["latency_ms"]["p90"] *= 1.5
    a, b = _write(tmp_path / "a.json", current), _write(tmp_path / "b.json", baseline)
    ok = CliRunner().invoke(main, ["compare", a, b, "--max-latency-regression", "10%"])
    assert ok.exit_code == 0  # p50 is gated by default, and p50 did not move
    failed = CliRunner().invoke(main, ["compare", a, b, "--max-latency-regression", "10%", "--percentile", "p90"])
    assert failed.exit_code == 1 and "tflite-int8: p90 latency +50.0%" in failed.output


def test_injected_accuracy_drop_fails(tiny_run, tmp_path):
    baseline = read_json(tiny_run.results)
    current = copy.deepcopy(baseline)
    current["records"][1]["top1"] -= 0.02
    a, b = _write(tmp_path / "a.json", current), _write(tmp_path / "b.json", baseline)
    result = CliRunner().invoke(main, ["compare", a, b, "--max-accuracy-drop", "0.5"])
    assert result.exit_code == 1 and "top-1 dropped 2.00 pp" in result.output


def test_different_devices_warn_or_refuse(tiny_run, tmp_path):
    baseline = read_json(tiny_run.results)
    current = copy.deepcopy(baseline)
    current["device"]["cpu_model"] = "Some Other CPU"
    a, b = _write(tmp_path / "a.json", current), _write(tmp_path / "b.json", baseline)
    warned = CliRunner().invoke(main, ["compare", a, b])
    assert warned.exit_code == 0 and "warning: device cpu_model differs" in warned.output
    refused = CliRunner().invoke(main, ["compare", a, b, "--strict"])
    assert refused.exit_code == 2 and "different devices" in refused.output


def _with_lost_images(results, fmt, count):
    """``results`` with ``count`` images its ``fmt`` record got right now wrong (predictions and top-1 alike)."""
    changed = copy.deepcopy(results)
    labels = changed["heldout"]["labels"]
    record = next(r for r in changed["records"] if r["format"] == fmt and r.get("predictions"))
    right = [i for i, (p, y) in enumerate(zip(record["predictions"], labels)) if p == y]
    assert len(right) >= count
    for i in right[:count]:
        record["predictions"][i] = (labels[i] + 1) % changed["heldout"]["classes"]
    record["top1"] = sum(p == y for p, y in zip(record["predictions"], labels)) / len(labels)
    return changed


def test_mcnemar_accuracy_gate_fails_only_on_a_drop_distinguishable_from_chance(tiny_run, tmp_path):
    baseline = read_json(tiny_run.results)
    assert len(baseline["heldout"]["labels"]) == baseline["heldout"]["images"]
    b = _write(tmp_path / "b.json", baseline)
    chance = _write(tmp_path / "chance.json", _with_lost_images(baseline, "tflite-int8", 2))
    plain = CliRunner().invoke(main, ["compare", chance, b, "--max-accuracy-drop", "0.5"])
    assert plain.exit_code == 1 and "tflite-int8: top-1 dropped" in plain.output
    tested = CliRunner().invoke(
        main, ["compare", chance, b, "--max-accuracy-drop", "0.5", "--accuracy-test", "mcnemar"]
    )
    assert tested.exit_code == 0, tested.output
    assert (
        "2 image(s) lost and 0 gained is not distinguishable from chance (one-sided McNemar exact p = 0.25"
        in tested.output
    )
    real = _write(tmp_path / "real.json", _with_lost_images(baseline, "tflite-int8", 8))
    failed = CliRunner().invoke(main, ["compare", real, b, "--max-accuracy-drop", "0.5", "--accuracy-test", "mcnemar"])
    assert failed.exit_code == 1 and "8 lost, 0 gained, one-sided McNemar exact p = 0.00391" in failed.output
    unpaired = json.loads((tmp_path / "chance.json").read_text())
    del unpaired["heldout"]["labels"]
    c = _write(tmp_path / "unpaired.json", unpaired)
    closed = CliRunner().invoke(main, ["compare", c, b, "--max-accuracy-drop", "0.5", "--accuracy-test", "mcnemar"])
    assert closed.exit_code == 1 and "records no held-out labels" in closed.output  # cannot pair: the threshold gates
    other = json.loads((tmp_path / "chance.json").read_text())
    other["heldout"]["images_sha256"] = "0" * 64  # same labels, other images: not paired
    o = _write(tmp_path / "other.json", other)
    unpaired = CliRunner().invoke(main, ["compare", o, b, "--max-accuracy-drop", "0.5", "--accuracy-test", "mcnemar"])
    assert unpaired.exit_code == 1 and "measured on different held-out images" in unpaired.output


def _one_error_line(result, *fragments):
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and all(f in errors[0] for f in fragments), result.output
    assert "Traceback" not in result.output and "no threshold crossed" not in result.output


def test_a_bare_latency_number_is_refused_not_read_as_a_fraction(tiny_run, tmp_path):
    baseline = read_json(tiny_run.results)
    current = copy.deepcopy(baseline)
    for record in current["records"]:
        if record.get("latency_ms"):
            record["latency_ms"]["p50"] *= 5  # five times slower
    a, b = _write(tmp_path / "a.json", current), _write(tmp_path / "b.json", baseline)
    _one_error_line(
        CliRunner().invoke(main, ["compare", a, b, "--max-latency-regression", "10"]),
        "--max-latency-regression '10' has no unit (10% or 1000%)",
    )
    _one_error_line(CliRunner().invoke(main, ["compare", a, b, "--max-latency-regression", "0.1"]), "has no unit")
    failed = CliRunner().invoke(main, ["compare", a, b, "--max-latency-regression", "10%"])
    assert failed.exit_code == 1 and "p50 latency +400.0%" in failed.output
    _one_error_line(CliRunner().invoke(main, ["compare", a, b, "--max-accuracy-drop", "0.5%"]), "is ambiguous")
    assert CliRunner().invoke(main, ["compare", b, b, "--max-accuracy-drop", "0.5pp"]).exit_code == 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("latency_ms.p50", float("nan")),
        ("latency_ms.p99", -1.0),
        ("latency_ms.p50", 0.0),
        ("latency_ms.mean", float("inf")),
        ("latency_ms.p90", "fast"),
        ("top1", float("nan")),
        ("top1", -0.1),
        ("top1", 1.5),
        ("top5", float("inf")),
        ("size_mb", -2.0),
        ("load_ms", float("nan")),
        ("top1_change_pp", float("nan")),
        ("memory.peak_rss_mb", float("nan")),
        ("memory.rss_after_load_mb", -5.0),
        ("rounds.p50_ms", [1.0, float("nan")]),
        ("latency_ms", [1.0]),
    ],
)
def test_results_with_numbers_a_gate_cannot_judge_are_bad_input(tiny_run, tmp_path, field, value):
    """Read as bad input (exit 2) naming the file, the record and the field: never 'no threshold crossed'."""
    results = read_json(tiny_run.results)
    index, record = next((i, r) for i, r in enumerate(results["records"]) if r["format"] == "tflite-int8")
    parent, _, key = field.rpartition(".")
    if parent:
        record[parent] = {**(record.get(parent) or {}), key: value}
    else:
        record[key] = value
    bad = _write(tmp_path / "bad.json", results)  # json writes NaN and Infinity as JavaScript does
    good = str(tiny_run.results)
    for args in ([bad, good], [good, bad]):
        result = CliRunner().invoke(
            main, ["compare", *args, "--max-latency-regression", "10%", "--max-accuracy-drop", "0.5"]
        )
        _one_error_line(result, "bad.json' record", f"record {index + 1} (tflite-int8", field)


def test_results_built_in_python_are_checked_as_files_are(tiny_run):
    import edgepipe
    from edgepipe.errors import EdgepipeError
    from edgepipe.results import read_results

    current = read_results(tiny_run.results)
    current.records[0].latency_ms = {
        **(current.records[0].latency_ms or {"p90": 1, "p95": 1, "p99": 1}),
        "p50": float("nan"),
    }
    with pytest.raises(EdgepipeError, match=r"the current results record 1 .*latency_ms.p50 is nan"):
        edgepipe.compare(current, tiny_run.results, max_latency_regression=0.1)
    for bad in (float("nan"), -0.1, True, "10"):
        with pytest.raises(EdgepipeError, match="max.latency.regression"):
            edgepipe.compare(tiny_run.results, tiny_run.results, max_latency_regression=bad)
