"""'edgepipe compare' passes on equal results and fails on an injected regression."""

import copy
import json

from click.testing import CliRunner

from edgepipe.cli import main
from edgepipe.fileio import read_json


def _write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def test_equal_results_pass(tiny_run, tmp_path):
    results = read_json(tiny_run.results)
    a, b = _write(tmp_path / "a.json", results), _write(tmp_path / "b.json", results)
    result = CliRunner().invoke(main, ["compare", a, b, "--max-latency-regression", "10%", "--max-accuracy-drop", "0.5"])
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
    tested = CliRunner().invoke(main, ["compare", chance, b, "--max-accuracy-drop", "0.5", "--accuracy-test", "mcnemar"])
    assert tested.exit_code == 0, tested.output
    assert "2 image(s) lost and 0 gained is not distinguishable from chance (one-sided McNemar exact p = 0.25" \
        in tested.output
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
