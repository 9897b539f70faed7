"""Every script in benchmarks/ still runs, at its smallest settings (no timing is asserted here: the scripts
print ratios measured side by side; these tests only keep them from rotting)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_WEIGHTS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str, env: dict | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def test_every_benchmark_script_has_a_smoke_test():
    tested = {name[len("test_") :].replace("_smoke", "") + ".py" for name in globals() if name.endswith("_smoke")}
    assert {p.name for p in BENCHMARKS.glob("*.py")} <= tested


def test_feature_cache_smoke():
    out = _run("feature_cache.py", "--size", "32", "--images", "40", "--epochs", "2")
    assert "speed-up per epoch:" in out


def test_harness_overhead_smoke(tiny_run):
    artifacts = [str(next(tiny_run.artifacts_dir.glob(p))) for p in ("*-tflite-int8.tflite", "*-onnx-fp32.onnx")]
    out = _run("harness_overhead.py", *artifacts, "--repeats", "1", "--iterations", "5")
    assert out.count("x target") == 2  # one line per artifact and engine, each with its ratio


@pytest.mark.skipif(not SHARED_WEIGHTS.is_dir(), reason="genuine Keras ImageNet weights not found in ../shared/weights")
def test_real_photos_smoke(tmp_path):
    pytest.importorskip("skimage", reason="builtin:photos needs scikit-image")
    home = tmp_path / "keras"
    (home / "models").mkdir(parents=True)
    for file in SHARED_WEIGHTS.glob("*.h5"):
        shutil.copy(file, home / "models" / file.name)
    out = _run(
        "real_photos.py",
        "--input-size",
        "32",
        "--epochs",
        "1",
        "--formats",
        "tflite-int8",
        env={"KERAS_HOME": str(home)},
    )
    assert "logistic-regression probe" in out and "tflite-int8" in out


def test_engines_smoke(tmp_path):
    out = _run(
        "engines.py",
        "--models",
        "mobilenet_v2:0.35",
        "--size",
        "32",
        "--threads",
        "1",
        "--rounds",
        "1",
        "--iterations",
        "3",
        "--work",
        str(tmp_path),
        "--formats",
        "tflite-fp32,onnx-int8,openvino-fp32",
    )
    assert "edgepipe's recommendation, tuned" in out and "within 1.05x of the fastest bare loop" in out
    assert out.count("peak memory within 10%") == 3


def test_calibration_draws_smoke(tiny_run):
    out = _run(
        "calibration_draws.py",
        str(tiny_run.path),
        "--draws",
        "2",
        "--sizes",
        "8,16",
        "--methods",
        "minmax,percentile",
        "--threads",
        "1",
    )
    assert out.count("tflite-int8 ") == 2 and out.count("onnx-int8 ") == 4  # ONNX also per calibration method
    assert "most stable for tflite-int8:" in out and "most stable for onnx-int8:" in out


def test_mixed_precision_smoke(tiny_run):
    out = _run("mixed_precision.py", str(tiny_run.path), "--rounds", "1", "--iterations", "3")
    assert "tflite-int8" in out and "kept (attempt " in out and "the 1.15x target" in out


def test_int8_speedup_smoke(tmp_path):
    out = _run(
        "int8_speedup.py",
        "--model",
        "mobilenet_v2:0.35",
        "--size",
        "32",
        "--rounds",
        "1",
        "--iterations",
        "3",
        "--work",
        str(tmp_path),
    )
    # litert, onnxruntime, openvino, and the LiteRT file with its input stem in float beside them
    assert out.count("INT8 speed-up") == 4 and "target 1.8x" in out and "(input stem in float" in out
    assert "INT8 against FP32 per op family" in out and "Top 10 ops by time" in out


def test_foreign_efficientnet_smoke(tmp_path):
    out = _run(
        "foreign_efficientnet.py",
        "--input-size",
        "64",  # at 32 the last stages are 1x1, which onnx2tf converts wrongly (verification fails the file)
        "--per-class",
        "4",
        "--min-iterations",
        "3",
        "--output",
        str(tmp_path / "work"),
    )
    if out.startswith("skipped:"):
        pytest.skip(out.strip())
    assert "p50 ratio foreign / Keras-born" in out and "top-1 apart by" in out, out
    for name in ("tflite-int8", "onnx-int8", "openvino-int8"):
        assert any(line.strip().startswith(name) and "verified on" in line for line in out.splitlines()), out


def test_search_smoke(tmp_path):
    import re

    out = _run("search.py", "--quick", "--work", str(tmp_path))
    assert re.search(r"^search: 2 candidates .* = 2 artifacts, 0 skipped", out, re.M), out
    total = float(re.search(r"^search wall time: ([\d.]+) s \(load average [\d.]+ -> [\d.]+\)$", out, re.M).group(1))
    stages = {m[0].strip(): float(m[1]) for m in re.findall(r"^  stage (.+?)\s+([\d.]+) s$", out, re.M)}
    assert {"latency: timing", "accuracy", "winner run"} <= set(stages)  # conversion too, given two cores
    assert abs(sum(stages.values()) - total) <= 0.1 * len(stages)  # the stages cover the search, once each
    runs = [float(s) for s in re.findall(r"^edgepipe run \S+: ([\d.]+) s \(load average", out, re.M)]
    estimate = float(re.search(r"^estimated edgepipe run for all 2 candidates: ([\d.]+) s", out, re.M).group(1))
    assert len(runs) == 2 and abs(estimate - sum(runs)) <= 0.1  # the mean of two runs x 2 candidates
    ratio = float(re.search(r"^ratio search / all runs: ([\d.]+) \(target <= 0.2", out, re.M).group(1))
    assert abs(ratio - total / estimate) <= 0.01 + 0.01 * ratio
    fresh = re.search(r"fresh edgepipe bench: p50 ([\d.]+) ms; budget ([\d.]+) ms; ratio ([\d.]+)", out)
    assert fresh and abs(float(fresh[3]) - float(fresh[1]) / float(fresh[2])) <= 0.01
    assert (tmp_path / "search" / "winner" / "results.json").is_file()


def test_screening_smoke():
    out = _run("screening.py", "--quick")
    assert "|screening / full - 1|: median" in out and "outside the +-20% band" in out
