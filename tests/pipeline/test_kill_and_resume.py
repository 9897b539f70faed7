"""A run killed (SIGKILL) at points spread over the stages resumes with a rerun of the same command: the run
directory then verifies, and what deterministic engines produce matches an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import yaml

from edgepipe.fileio import read_json, sha256_file

CONFIG = {
    "seed": 3,
    "data": {"path": "builtin:digits", "classes": ["0", "1"], "max_per_class": 20},
    "model": {"arch": "lenet5", "weights": "none", "input_size": 32},
    "train": {"strategy": "full", "epochs": 2},
    "export": {"formats": ["tflite-fp32", "tflite-int8"], "calibration_size": 8},
    "bench": {"threads": 1, "warmup": 1, "warmup_s": 0.0, "min_iterations": 3, "min_duration_s": 0.0, "memory": False},
}
#: files every engine here writes identically from identical inputs (model.keras holds its save date, artifacts.json
#: and results.json hold timings, so those are compared by content below instead)
DETERMINISTIC = ["dataset.json", "labels.txt", "artifacts/lenet5-tflite-fp32.tflite"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_DETERMINISTIC_OPS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _command(config, out):
    return [sys.executable, "-m", "edgepipe", "run", str(config), "--output", str(out)]


def _run(config, out) -> None:
    result = subprocess.run(_command(config, out), capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def _kill_at(config, out, marker: str) -> None:
    """Start the run, and kill it (SIGKILL) a moment after it prints a line starting with ``marker``."""
    proc = subprocess.Popen(_command(config, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    try:
        for line in proc.stdout:
            if line.startswith(marker):
                time.sleep(0.3)
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before '{marker}'"


def _weights(path):
    import keras

    return [np.asarray(w) for w in keras.models.load_model(path, compile=False).get_weights()]


def test_killed_runs_resume_to_the_same_result(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    reference = tmp_path / "reference"
    _run(config, reference)
    for marker in ("[train]", "[export]", "[bench]"):
        out = tmp_path / f"killed-at-{marker.strip('[]')}"
        _kill_at(config, out, marker)
        _run(config, out)
        verified = subprocess.run(
            [sys.executable, "-m", "edgepipe", "verify", str(out)], capture_output=True, text=True, env=ENV, timeout=300
        )
        assert verified.returncode == 0, (marker, verified.stdout)
        assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.name == ".edgepipe-tmp"], marker
        for rel in DETERMINISTIC:
            assert sha256_file(out / rel) == sha256_file(reference / rel), (marker, rel)
        for a, b in zip(_weights(out / "model.keras"), _weights(reference / "model.keras")):
            np.testing.assert_array_equal(a, b)
        assert read_json(out / "training.json")["top1"] == read_json(reference / "training.json")["top1"]
        formats = {r["format"]: r for r in read_json(out / "results.json")["records"]}
        assert {f: r["status"] for f, r in formats.items()} == {
            "keras-fp32": "ok",
            "tflite-fp32": "ok",
            "tflite-int8": "ok",
        }
