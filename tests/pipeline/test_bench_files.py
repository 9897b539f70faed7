"""'edgepipe bench ARTIFACT...': artifacts measured alone, one record per artifact, thread count and batch."""

import json

from click.testing import CliRunner

from edgepipe.cli import main
from tests.conftest import make_image_folder


def test_bench_artifacts_alone_with_labels_and_data(tiny_run, tmp_path):
    data = make_image_folder(tmp_path / "data", classes=("0", "2"), per_class=4, size=32)
    artifacts = sorted(str(p) for p in tiny_run.artifacts_dir.glob("*-tflite-*.tflite"))
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            *artifacts,
            "--data",
            str(data),
            "--labels",
            str(tiny_run.labels),
            "--threads",
            "1,2",
            "--batch",
            "1,3",
            "--min-iterations",
            "3",
            "--min-duration",
            "0",
            "--warmup",
            "1",
            "--output",
            str(out),
        ],
    )
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


def _tiny_onnx_classifier(path):
    """An 8x8 RGB image classifier with two classes: channel means, a dense layer, softmax."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.array([[1.0, -1.0], [0.5, 0.5], [-1.0, 1.0]], np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["mean", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 8, 8, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        [weights],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_threads_above_the_usable_cores_are_recorded_and_reported(tmp_path):
    from edgepipe.device import core_limits
    from edgepipe.report import html, markdown
    from edgepipe.results import read_results

    usable = core_limits()["usable_cores"]
    model = _tiny_onnx_classifier(tmp_path / "tiny.onnx")
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            str(model),
            "--threads",
            f"1,{usable + 1}",
            "--min-iterations",
            "3",
            "--min-duration",
            "0",
            "--warmup",
            "1",
            "--warmup-time",
            "0",
            "--no-memory",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"oversubscribed: {usable + 1} thread(s) on {usable} usable core(s) for 1 record(s)" in result.output
    results = read_results(out)
    assert results.device["usable_cores"] == usable and "cpu_quota" in results.device
    assert {r.threads: r.oversubscribed for r in results.records} == {1: False, usable + 1: True}
    line = f"oversubscribed: {usable + 1} thread(s) on {usable} usable core(s)"
    report = markdown.render(results)
    assert report.count(line) == 1 and line in html.render(results)
