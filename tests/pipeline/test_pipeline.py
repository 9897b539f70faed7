"""The whole pipeline on a tiny model: every stage's outputs, their integrity, and stage skipping."""

import numpy as np

from edgepipe import config as cfg
from edgepipe.fileio import read_json, sha256_file
from edgepipe.pipeline.sequence import STAGES, run_stages
from tests.conftest import tiny_overrides


def test_run_directory_holds_everything(tiny_run):
    p = tiny_run.path
    for name in (
        "model.keras",
        "model_initial.keras",
        "labels.txt",
        "dataset.json",
        "results.json",
        "report.md",
        "manifest.json",
        "config.yaml",
        "stages.json",
        "history.csv",
        "training.json",
    ):
        assert (p / name).is_file(), name
    assert tiny_run.read_labels() == ["0", "1", "2"]
    assert not [f for f in p.rglob("*") if ".tmp" in f.name]


def test_three_artifacts_each_with_measured_accuracy_and_latency(tiny_run):
    results = read_json(tiny_run.results)
    records = {r["format"]: r for r in results["records"]}
    assert set(records) == {"keras-fp32", "tflite-fp32", "tflite-int8", "onnx-fp32"}
    for record in records.values():
        assert record["status"] == "ok"
        assert 0.0 <= record["top1"] <= 1.0
        lat = record["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert lat["iterations"] >= 5 and record["threads"] >= 1
    # fp32 exports compute what Keras computes
    for fmt in ("tflite-fp32", "onnx-fp32"):
        agreement = records[fmt]["agreement_with_reference"]
        assert agreement["max_abs_diff"] < 1e-3 and agreement["top1_agreement"] == 1.0
    assert results["device"]["cpu_model"] and results["conditions"]["batch_size"] == 1


def test_tflite_int8_is_full_integer(tiny_run):
    from ai_edge_litert.interpreter import Interpreter

    path = next(tiny_run.artifacts_dir.glob("*-tflite-int8.tflite"))
    interpreter = Interpreter(model_path=str(path))
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    assert interpreter.get_output_details()[0]["dtype"] == np.uint8
    index = read_json(tiny_run.artifacts_index)
    int8 = next(a for a in index["artifacts"] if a["format"] == "tflite-int8")
    assert int8["details"]["calibration_sha256"] == index["calibration"]["sha256"]


def test_onnx_records_labels_and_preprocessing(tiny_run):
    import json

    import onnx

    model = onnx.load(next(tiny_run.artifacts_dir.glob("*-onnx-fp32.onnx")))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["labels"]) == ["0", "1", "2"]
    assert json.loads(meta["preprocessing"])["offset"] == [-1.0]
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert not dim.HasField("dim_value")  # dynamic batch


def test_manifest_digests_match_files(tiny_run):
    manifest = read_json(tiny_run.manifest)
    assert manifest["versions"]["tensorflow"]
    assert manifest["config"]["model"]["arch"] == "mobilenet_v2"
    for rel, entry in manifest["files"].items():
        if rel != "stages.json":
            assert sha256_file(tiny_run.path / rel) == entry["sha256"], rel
    assert any(rel.startswith("artifacts/") and rel.endswith(".tflite") for rel in manifest["files"])


def test_report_has_a_row_per_artifact(tiny_run):
    report = tiny_run.report_md.read_text()
    for fmt in ("keras-fp32", "tflite-fp32", "tflite-int8", "onnx-fp32"):
        assert f"| {fmt} |" in report
    assert "p50 (ms)" in report and "thread(s)" in report


def test_unchanged_stages_are_skipped_and_changed_ones_rerun(tiny_run):
    config = cfg.load(tiny_run.config)
    lines: list[str] = []
    run_stages(config, ["export", "bench", "report"], echo=lines.append)
    assert all("skipped" in line for line in lines if line.startswith("["))
    changed = cfg.load(tiny_run.config, {"bench.min_iterations": 6})
    lines.clear()
    run_stages(changed, ["bench", "report"], echo=lines.append)
    stage_lines = [line for line in lines if line.startswith("[")]
    assert "skipped" not in stage_lines[0] and "skipped" not in stage_lines[1]


def test_stage_needing_missing_outputs_is_a_clear_error(tmp_path):
    import pytest

    from edgepipe.errors import EdgepipeError

    config = cfg.from_dict({}, tiny_overrides(tmp_path / "fresh"))
    with pytest.raises(EdgepipeError, match="needs the outputs of 'train'"):
        run_stages(config, ["export"], echo=lambda s: None)
    assert not (tmp_path / "fresh").exists()


def test_image_folder_runs_through_every_stage(tmp_path):
    from tests.conftest import make_image_folder

    data = make_image_folder(tmp_path / "data", per_class=8)
    overrides = tiny_overrides(
        tmp_path / "run",
        **{"data.path": str(data), "data.classes": None, "data.max_per_class": None, "export.formats": ["tflite-int8"]},
    )
    run = run_stages(cfg.from_dict({}, overrides), list(STAGES), echo=lambda s: None)
    records = read_json(run.results)["records"]
    assert [r["format"] for r in records] == ["keras-fp32", "tflite-int8"]
    assert records[1]["status"] == "ok"


def test_training_evaluation_and_plots(tiny_run):
    from PIL import Image

    training = read_json(tiny_run.training)
    evaluation = training["evaluation"]
    counts = np.asarray(evaluation["confusion_matrix"]["counts"])
    assert counts.sum() == training["heldout_images"]
    assert np.trace(counts) / counts.sum() == training["top1"]
    assert set(evaluation["per_class"]) == {"0", "1", "2"}
    for png in (tiny_run.history_png, tiny_run.confusion_png):
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width > 300
            assert len(set(image.convert("L").getdata())) > 10  # drawn, not blank
    assert "val_loss" in (tiny_run.path / "history.csv").read_text().splitlines()[0]


def test_latency_in_interleaved_rounds_and_memory_in_a_fresh_process(tiny_run):
    results = read_json(tiny_run.results)
    measured = [r for r in results["records"] if r["status"] == "ok"]
    assert len(measured) == 4
    for r in measured:
        rounds = r["rounds"]
        assert rounds["count"] == 5 and len(rounds["p50_ms"]) == 5 and rounds["spread"] >= 0
        assert min(rounds["p50_ms"]) <= r["latency_ms"]["p50"] * 1.5  # the rounds' medians are of the same samples
        memory = r["memory"]
        assert "error" not in memory, memory
        assert 0 < memory["rss_before_load_mb"] <= memory["rss_after_load_mb"] * 1.05
        assert memory["peak_rss_mb"] >= 0.9 * memory["rss_after_load_mb"]
    by = {r["format"]: r for r in measured}
    # TensorFlow's runtime is far heavier than LiteRT's: the fresh process sees the engine, not the harness
    assert by["keras-fp32"]["memory"]["rss_after_load_mb"] > 2 * by["tflite-int8"]["memory"]["rss_after_load_mb"]
    assert "memory after load / peak (MB)" in tiny_run.report_md.read_text()
