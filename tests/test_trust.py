"""Trust: edgepipe never destroys a user's files, its gate fails closed, tampering is noticed, one command
works in a run directory at a time, and bad input is one line with exit code 2 (never a traceback)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgepipe.cli import main
from edgepipe.fileio import read_json
from tests.conftest import make_image_folder

BAD_INPUT = 2


def cli(*args, cwd=None):
    """The command line in this process (fast); returns click's result with output and exit code."""
    if cwd is None:
        return CliRunner().invoke(main, [str(a) for a in args])
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, [str(a) for a in args])
    finally:
        os.chdir(old)


def one_error_line(result, fragment: str) -> None:
    assert result.exit_code == BAD_INPUT, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.output
    assert "Traceback" not in result.output


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ 1. never delete what edgepipe did not create


def test_bench_output_onto_a_run_directory_is_refused_and_the_directory_kept(tiny_run, run_copy):
    before = _tree(run_copy)
    artifact = next(tiny_run.artifacts_dir.glob("*-tflite-fp32.tflite"))
    one_error_line(
        cli("bench", artifact, "--output", run_copy, "--min-iterations", "1", "--min-duration", "0"), "is a folder"
    )
    assert _tree(run_copy) == before


def test_merge_output_onto_a_folder_or_a_foreign_file_is_refused(tiny_run, tmp_path):
    folder = tmp_path / "somedir"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    one_error_line(cli("report", "--merge", tiny_run.results, "--output", folder), "is a folder")
    assert (folder / "notes.txt").read_text() == "mine"
    foreign = tmp_path / "thesis.md"
    foreign.write_text("# my thesis\n")
    one_error_line(cli("report", "--merge", tiny_run.results, "--output", foreign), "not a file edgepipe wrote")
    assert foreign.read_text() == "# my thesis\n"
    merged = tmp_path / "merged.md"
    for _ in range(2):  # its own earlier output is rewritten
        assert cli("report", "--merge", tiny_run.results, "--output", merged).exit_code == 0
    assert merged.read_text().startswith("# edgepipe: results merged")


def test_output_dot_in_a_user_folder_deletes_nothing(tiny_run, tmp_path):
    (tmp_path / "essay.txt").write_text("keep me")
    artifact = tmp_path / "m.tflite"
    shutil.copy(next(tiny_run.artifacts_dir.glob("*-tflite-fp32.tflite")), artifact)
    one_error_line(cli("bench", artifact, "--output", ".", cwd=tmp_path), "is a folder")
    one_error_line(
        cli("run", "--data", "builtin:digits", "--output", ".", cwd=tmp_path), "not an edgepipe run directory"
    )
    assert (tmp_path / "essay.txt").read_text() == "keep me" and artifact.exists()


def test_run_into_a_non_empty_folder_that_is_not_a_run_is_refused(tmp_path):
    target = tmp_path / "photos-and-notes"
    target.mkdir()
    (target / "notes.txt").write_text("x")
    one_error_line(cli("run", "--data", "builtin:digits", "--output", target), "not an edgepipe run directory")
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    (tmp_path / "afile").write_text("y")
    one_error_line(cli("run", "--data", "builtin:digits", "--output", tmp_path / "afile"), "is a file")


def test_bench_results_file_that_is_not_edgepipe_results_is_not_overwritten(tiny_run, tmp_path):
    precious = tmp_path / "results.json"
    precious.write_text('{"my": "data"}')
    artifact = next(tiny_run.artifacts_dir.glob("*-tflite-fp32.tflite"))
    one_error_line(cli("bench", artifact, "--output", precious), "not a file edgepipe wrote")
    assert precious.read_text() == '{"my": "data"}'


def test_a_users_file_beside_the_results_is_never_replaced_and_edgepipes_own_are(tiny_run, tmp_path):
    """bench writes a CSV beside its JSON: the CSV obeys the rule the JSON does (refused before anything runs when
    it is not edgepipe's; replaced on a rerun when it is)."""
    artifact = next(tiny_run.artifacts_dir.glob("*-tflite-fp32.tflite"))
    fast = ["--min-iterations", "1", "--min-duration", "0", "--warmup", "0", "--warmup-time", "0", "--no-memory"]
    out = tmp_path / "bench.json"
    mine = tmp_path / "bench.csv"
    mine.write_text("week,hours\n1,40\n")
    one_error_line(cli("bench", artifact, "--output", out, *fast), f"'{mine}' exists and is not a file edgepipe wrote")
    assert mine.read_text() == "week,hours\n1,40\n" and not out.exists()
    mine.unlink()
    for _ in range(2):  # a rerun with the same --output replaces both of edgepipe's files
        assert cli("bench", artifact, "--output", out, *fast).exit_code == 0
    assert read_json(out)["records"] and mine.read_text().startswith("device,setting,artifact")
    one_error_line(cli("bench", artifact, "--output", tmp_path / "results.csv", *fast), "would be both the output")
    assert not (tmp_path / "results.csv").exists()


def test_a_users_picture_beside_the_merged_report_is_never_replaced(tiny_run, tmp_path):
    from PIL import Image

    merged, picture = tmp_path / "merged.md", tmp_path / "merged.png"
    Image.new("RGB", (4, 4), "red").save(picture)  # a PNG of the user's own
    before = picture.read_bytes()
    one_error_line(
        cli("report", "--merge", tiny_run.results, "--output", merged),
        f"'{picture}' exists and is not a file edgepipe wrote",
    )
    assert picture.read_bytes() == before and not merged.exists()
    picture.unlink()
    for _ in range(2):  # edgepipe's own plot is replaced by a rerun
        assert cli("report", "--merge", tiny_run.results, "--output", merged).exit_code == 0
    assert picture.read_bytes() != before and "](merged.png)" in merged.read_text()
    one_error_line(cli("report", "--merge", tiny_run.results, "--output", picture), "would be both the output")


# ------------------------------------------------------------------ 2. the CI gate fails closed


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_compare_fails_when_a_baseline_artifact_failed_is_missing_or_nothing_was_measured(tiny_run, tmp_path):
    baseline = read_json(tiny_run.results)
    failed = copy.deepcopy(baseline)
    victim = next(r for r in failed["records"] if r["format"] == "tflite-int8")
    victim.update(status="failed", reason="RuntimeError: boom", latency_ms=None)
    missing = copy.deepcopy(baseline)
    missing["records"] = [r for r in missing["records"] if r["format"] != "onnx-fp32"]
    empty = {**copy.deepcopy(baseline), "records": []}
    base = _write(tmp_path / "base.json", baseline)
    for name, current, expected in (
        ("failed", failed, "tflite-int8"),
        ("missing", missing, "missing from the current"),
        ("empty", empty, "no records at all"),
    ):
        for strict in ([], ["--strict"]):
            result = cli("compare", _write(tmp_path / f"{name}.json", current), base, *strict)
            assert result.exit_code == 1, (name, result.output)
            assert "threshold crossed" in result.output and expected in result.output, (name, result.output)


def test_compare_refuses_files_that_are_not_edgepipe_results(tiny_run, tmp_path):
    base = tiny_run.results
    one_error_line(
        cli("compare", _write(tmp_path / "other.json", {"schema": "someone.else/3", "records": []}), base),
        "is not edgepipe results",
    )
    one_error_line(cli("compare", _write(tmp_path / "list.json", [1, 2]), base), "is not edgepipe results")
    (tmp_path / "broken.json").write_text('{"schema": ')
    one_error_line(cli("compare", tmp_path / "broken.json", base), "is not valid JSON")
    (tmp_path / "empty.json").write_text("")
    one_error_line(cli("compare", tmp_path / "empty.json", base), "is empty")
    one_error_line(cli("report", "--merge", tmp_path / "broken.json"), "is not valid JSON")


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--max-latency-regression", "nan"),
        ("--max-latency-regression", "-5%"),
        ("--max-accuracy-drop", "nan"),
        ("--max-accuracy-drop", "-1"),
    ],
)
def test_compare_refuses_thresholds_that_cannot_fail(tiny_run, flag, value):
    one_error_line(cli("compare", tiny_run.results, tiny_run.results, f"{flag}={value}"), "finite number of at least 0")


def test_compare_of_different_models_is_refused_under_strict_and_warned_otherwise(tiny_run, tmp_path):
    other = copy.deepcopy(read_json(tiny_run.results))
    other["architecture"]["input_size"] = 64
    other["classes"] = ["cat", "dog", "bird"]
    current = _write(tmp_path / "other-model.json", other)
    warned = cli("compare", current, tiny_run.results)
    assert warned.exit_code == 0 and "input size differs" in warned.output and "class lists differ" in warned.output
    one_error_line(cli("compare", current, tiny_run.results, "--strict"), "different models")


def test_compare_reads_results_of_the_previous_schema(tiny_run, tmp_path):
    """Baselines committed before results/2 keep working."""
    v1 = copy.deepcopy(read_json(tiny_run.results))
    v1["schema"] = "edgepipe.results/1"
    for record in v1["records"]:
        record["file"], record["runtime"] = record.pop("artifact"), record.pop("engine")
        record["runtime_versions"] = record.pop("engine_versions")
    result = cli("compare", tiny_run.results, _write(tmp_path / "v1.json", v1), "--max-latency-regression", "1000%")
    assert result.exit_code == 0, result.output
    assert "| `tflite-int8` | litert |" in result.output


# ------------------------------------------------------------------ 3. tampering is noticed


def test_a_truncated_artifact_is_noticed_and_export_reruns(run_copy):
    artifact = next((run_copy / "artifacts").glob("*-tflite-fp32.tflite"))
    good = artifact.read_bytes()
    artifact.write_bytes(good[:1000])
    damaged = cli("verify", run_copy)
    assert damaged.exit_code == 1 and f"changed: artifacts/{artifact.name}" in damaged.output
    result = cli("export", "--output", run_copy)
    assert result.exit_code == 0, result.output
    assert "[export] rerunning" in result.output and artifact.name in result.output
    assert len(artifact.read_bytes()) > 1000
    clean = cli("verify", run_copy)
    assert clean.exit_code == 0, clean.output


def test_a_deleted_model_is_a_clear_error_for_bench(run_copy):
    (run_copy / "model.keras").unlink()
    one_error_line(cli("bench", "--output", run_copy), "model.keras is missing")


def test_a_damaged_stage_record_is_a_clear_error_even_with_force(run_copy):
    (run_copy / "stages.json").write_text("{not json")
    one_error_line(cli("report", "--output", run_copy), "stages.json is damaged")
    one_error_line(cli("report", "--output", run_copy, "--force"), "needs the outputs of 'bench'")


# ------------------------------------------------------------------ 4. one command per run directory


def test_a_second_command_in_a_locked_run_directory_is_refused_with_the_holder(run_copy):
    from edgepipe.pipeline.rundir import RunDir

    with RunDir(run_copy).lock():
        result = cli("report", "--output", run_copy)
    one_error_line(result, f"in use by another edgepipe command (pid {os.getpid()}")


def test_a_lock_left_by_a_dead_process_is_taken_over(run_copy):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run_copy / ".edgepipe-lock").write_text(
        json.dumps(
            {
                "pid": int(dead.stdout),
                "host": "elsewhere",
                "since": "2026-01-01T00:00:00+00:00",
                "command": "edgepipe run",
            }
        )
    )
    result = cli("report", "--output", run_copy)
    assert result.exit_code == 0, result.output
    assert f"took over the lock of {run_copy} left by pid {int(dead.stdout)}" in result.output


# ------------------------------------------------------------------ 5. a run directory cannot switch unsafe loading on


def test_unsafe_loading_is_never_read_from_a_run_directory(run_copy, tmp_path):
    import keras

    marker = tmp_path / "code-ran"
    inputs = keras.Input((32, 32, 3))
    code = eval(f"lambda x: x * 0 + float(__import__('pathlib').Path({str(marker)!r}).touch() is None)")  # noqa: S307
    outputs = keras.layers.Lambda(code)(inputs)
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(outputs))).save(
        run_copy / "model.keras"
    )
    marker.unlink(missing_ok=True)  # building the model above ran the lambda once, here
    from edgepipe.fileio import sha256_file, write_json

    stages = read_json(run_copy / "stages.json")  # a consistent run directory, as one downloaded would be
    stages["train"]["outputs"]["model.keras"] = sha256_file(run_copy / "model.keras")
    write_json(run_copy / "stages.json", stages)
    config = (run_copy / "config.yaml").read_text()
    (run_copy / "config.yaml").write_text(config.replace("model:\n", "model:\n  unsafe_load: true\n", 1))
    one_error_line(cli("export", "--output", run_copy), "model.unsafe_load' is not read from files")
    (run_copy / "config.yaml").write_text(config)
    one_error_line(cli("export", "--output", run_copy), "--unsafe-load")
    assert not marker.exists()


# ------------------------------------------------------------------ 6. --remote cannot reach ssh as an option


def test_a_remote_destination_that_looks_like_an_option_is_refused(tiny_run, tmp_path):
    marker = tmp_path / "proxy-ran"
    artifact = next(tiny_run.artifacts_dir.glob("*-tflite-fp32.tflite"))
    one_error_line(cli("bench", artifact, "--remote", f"-oProxyCommand=touch {marker}"), "is not an SSH destination")
    assert not marker.exists()
    from edgepipe.remote import bench_remote

    source = Path(bench_remote.__code__.co_filename).read_text()
    calls = [line for line in source.splitlines() if "[*ssh," in line]
    assert calls and all('"--", host' in line for line in calls)  # every ssh call ends its options before the host


# ------------------------------------------------------------------ 7. one bad artifact does not lose the bench


def test_a_garbage_artifact_is_a_failed_record_and_the_good_one_is_measured(tiny_run, tmp_path):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(os.urandom(2048))
    good = next(tiny_run.artifacts_dir.glob("*-tflite-fp32.tflite"))
    out = tmp_path / "bench.json"
    result = cli(
        "bench",
        good,
        garbage,
        "--output",
        out,
        "--min-iterations",
        "2",
        "--min-duration",
        "0",
        "--warmup",
        "1",
        "--warmup-time",
        "0",
    )
    assert result.exit_code == 1, result.output
    records = {Path(r["artifact"]).name: r for r in read_json(out)["records"]}
    assert records[good.name]["status"] == "ok" and records[good.name]["latency_ms"]["p50"] > 0
    assert records["garbage.tflite"]["status"] == "failed" and records["garbage.tflite"]["reason"]


def test_an_onnx_file_without_an_image_input_is_a_failed_record(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
    )
    path = tmp_path / "vector.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    out = tmp_path / "r.json"
    result = cli("bench", path, "--output", out)
    assert result.exit_code == 1, result.output
    (record,) = read_json(out)["records"]
    assert record["status"] == "failed" and "not an image classifier" in record["reason"]


# ------------------------------------------------------------------ 8. one line, exit 2, for bad input


def test_bad_input_is_one_line_and_exit_2(tiny_run, tmp_path):
    (tmp_path / "nan.yaml").write_text("train:\n  learning_rate: .nan\n")
    one_error_line(cli("run", tmp_path / "nan.yaml", "--output", tmp_path / "r1"), "must be a finite number")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    one_error_line(cli("run", tmp_path / "latin1.yaml", "--output", tmp_path / "r2"), "is not UTF-8")
    (tmp_path / "twice.yaml").write_text("seed: 1\nseed: 2\n")
    one_error_line(cli("run", tmp_path / "twice.yaml", "--output", tmp_path / "r3"), "'seed' is given twice")
    (tmp_path / "notes.h5").write_text("not a model")
    one_error_line(cli("run", "--model", tmp_path / "notes.h5", "--output", tmp_path / "r4"), "not an HDF5 file")
    (tmp_path / "noise.keras").write_bytes(os.urandom(512))
    one_error_line(cli("run", "--model", tmp_path / "noise.keras", "--output", tmp_path / "r5"), "not a zip archive")
    artifact = next(tiny_run.artifacts_dir.glob("*-tflite-fp32.tflite"))
    one_error_line(cli("bench", artifact, "--labels", tmp_path / "no-labels.txt"), "does not exist")
    (tmp_path / "a-file").write_text("x")
    one_error_line(cli("bench", artifact, "--output", tmp_path / "a-file" / "r.json"), "is a file")
    for name in ("r1", "r2", "r3", "r4", "r5"):
        assert not (tmp_path / name).exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes everywhere: permissions cannot be tested as root")
def test_unreadable_data_and_read_only_output_are_clear_errors(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=3)
    data.chmod(0)
    try:
        one_error_line(cli("run", "--data", data, "--output", tmp_path / "r"), "cannot be read")
    finally:
        data.chmod(0o755)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    one_error_line(cli("run", "--data", data, "--output", locked / "run"), "cannot create the folder")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threads", "0"], "at least 1"),
        (["--threads", "-1"], "at least 1"),
        (["--batch", "0"], "at least 1"),
        (["--batch", "-4"], "at least 1"),
        (["--device", ","], "comma-separated list"),
    ],
)
def test_numbers_out_of_range_are_refused(tiny_run, args, message):
    result = cli("bench", next(tiny_run.artifacts_dir.glob("*-tflite-fp32.tflite")), *args)
    assert result.exit_code == BAD_INPUT and message in result.output and "Traceback" not in result.output


def test_a_batch_that_cannot_fit_in_memory_is_refused_with_the_figure(tiny_run, tmp_path):
    artifact = next(tiny_run.artifacts_dir.glob("*-tflite-fp32.tflite"))
    one_error_line(
        cli("bench", artifact, "--batch", "100000000", "--output", tmp_path / "r.json"), "GB for its 32x32x3"
    )
    assert not (tmp_path / "r.json").exists()


def test_an_empty_format_list_fails_before_any_training(tmp_path):
    result = cli("run", "--data", "builtin:digits", "--formats", ",", "--output", tmp_path / "r")
    assert result.exit_code == BAD_INPUT and "comma-separated list" in result.output
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ 10. no silent damage to data


def test_a_16_bit_png_keeps_its_brightness(tmp_path):
    from PIL import Image

    from edgepipe.data.folders import decode

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    decoded = decode(tmp_path / "deep.png", 64, 1)
    assert abs(decoded.mean() - 127.5) < 2  # not almost pure white (254.6 when converted as if 8-bit)
    assert decoded.min() == 0 and decoded.max() == 255


def test_a_labels_file_shorter_than_the_model_outputs_is_refused(tiny_run, tmp_path):
    (tmp_path / "labels.txt").write_text("0\n1\n")
    artifact = next(tiny_run.artifacts_dir.glob("*-tflite-fp32.tflite"))
    one_error_line(cli("bench", artifact, "--labels", tmp_path / "labels.txt"), "name 2 classes, but")


def test_broken_links_and_oversized_images_are_listed_and_the_limit_can_be_raised(tmp_path):
    from edgepipe.config import DataConfig
    from edgepipe.data import make_index

    data = make_image_folder(tmp_path / "data", per_class=4, size=20)
    (data / "cat" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    from PIL import Image

    Image.new("RGB", (60, 60), (200, 0, 0)).save(data / "cat" / "big.png")
    pillow_limit = Image.MAX_IMAGE_PIXELS
    index = make_index(DataConfig(path=str(data), max_image_pixels=1000), seed=0)
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # Pillow's global guard is left as it was (edgepipe's plots open)
    reasons = {r["file"]: r["reason"] for r in index["rejected"]}
    assert "broken symbolic link" in reasons["cat/gone.png"]
    assert "image too large" in reasons["cat/big.png"] and "data.max_image_pixels" in reasons["cat/big.png"]
    raised = make_index(DataConfig(path=str(data), max_image_pixels=10_000), seed=0)
    assert "cat/big.png" not in {r["file"] for r in raised["rejected"]}


# ------------------------------------------------------------------ 11. leftovers are swept


def test_leftovers_of_a_killed_command_are_swept_by_the_next(run_copy):
    (run_copy / ".model.keras.ab12cd34.tmp.keras").write_bytes(b"half a model")
    (run_copy / ".edgepipe-tmp" / "export-x" / "saved_model").mkdir(parents=True)
    (run_copy / "my.notes.txt").write_text("a user's file stays")
    result = cli("report", "--output", run_copy)
    assert result.exit_code == 0, result.output
    assert "removed .model.keras.ab12cd34.tmp.keras" in result.output
    assert not (run_copy / ".model.keras.ab12cd34.tmp.keras").exists() and not (run_copy / ".edgepipe-tmp").exists()
    assert (run_copy / "my.notes.txt").exists()
