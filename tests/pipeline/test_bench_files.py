"""'edgepipe bench ARTIFACT...': artifacts measured alone, one record per artifact, thread count and batch."""

import json

from click.testing import CliRunner

from edgepipe.cli import main
from tests.conftest import make_image_folder


def test_bench_artifacts_alone_with_labels_and_data(tiny_run, tmp_path):
    data = make_image_folder(tmp_path / "data", classes=("0", "2"), per_class=4, size=32)
    artifacts = sorted(str(p) for p in tiny_run.artifacts_dir.glob("*-tflite-*.tflite"))
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", *artifacts, "--data", str(data), "--labels", str(tiny_run.labels),
                                       "--threads", "1,2", "--batch", "1,3", "--min-iterations", "3",
                                       "--min-duration", "0", "--warmup", "1", "--output", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    records = results["records"]
    assert len(records) == len(artifacts) * 4
    assert {(r["threads"], r["batch_size"]) for r in records} == {(1, 1), (1, 3), (2, 1), (2, 3)}
    for r in records:
        assert r["status"] == "ok" and 0 <= r["top1"] <= 1 and r["latency_ms"]["p50"] > 0
    assert results["device"]["cpu_model"] and results["schema"].startswith("edgepipe.results/")


def test_bench_missing_artifact_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["bench", str(tmp_path / "gone.tflite")])
    assert result.exit_code == 2 and "does not exist" in result.output
