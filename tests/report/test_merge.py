"""Merging two devices' results gives one table with a latency column group per device."""

import copy
import json

from click.testing import CliRunner

from edgepipe.cli import main
from edgepipe.fileio import read_json


def test_two_devices_merge_into_one_table(tiny_run, tmp_path):
    here = read_json(tiny_run.results)
    jetson = copy.deepcopy(here)
    jetson["device"].update(board_model="NVIDIA Jetson Orin Nano Developer Kit", hostname="orin")
    for record in jetson["records"]:
        if record.get("latency_ms"):
            record["latency_ms"]["p50"] *= 3
    a, b = tmp_path / "pc.json", tmp_path / "jetson.json"
    a.write_text(json.dumps(here))
    b.write_text(json.dumps(jetson))
    out = tmp_path / "merged.md"
    result = CliRunner().invoke(main, ["report", "--merge", str(a), "--merge", str(b), "--output", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| artifact"))
    assert header.count("p50 (ms)") == 2 and "Jetson Orin Nano" in header
    row = next(line for line in text.splitlines() if line.startswith("| `tflite-int8`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "litert" and cells[2] == "cpu"  # the engine and its device: CPU, CUDA or TensorRT provider
    assert abs(float(cells[9]) - 3 * float(cells[6])) < 0.01  # the second device's p50 column
    assert "## Recommendation per device" in text and text.count(": use `") == 2
    assert out.with_suffix(".png").exists() and "](merged.png)" in text  # one Pareto panel per device
