"""The command line as a user meets it: help, version, and bad input."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgepipe.cli import main

COMMANDS = ["run", "build", "train", "export", "bench", "report", "models", "formats"]


def edgepipe(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "edgepipe", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and "edgepipe, version" in result.output


def test_models_lists_registry():
    result = CliRunner().invoke(main, ["models"])
    assert "mobilenet_v2" in result.output and "71.3" in result.output


def test_run_flags_reach_every_stage_command():
    for command in ("run", "build", "train", "export"):
        help_text = CliRunner().invoke(main, [command, "--help"]).output
        for flag in (
            "--data",
            "--arch",
            "--alpha",
            "--weights",
            "--input-size",
            "--strategy",
            "--epochs",
            "--formats",
            "--output",
            "--seed",
        ):
            assert flag in help_text, (command, flag)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{tmp}/missing"], "does not exist"),
        (["--data", "{tmp}/empty"], "is empty"),
        (["--arch", "mobilenet_v9"], "unknown architecture"),
        (["{tmp}/typo.yaml"], "unknown config key 'model.arhc'"),
        (["--formats", "tflite-int9"], "unknown format"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_run_directory(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "typo.yaml").write_text("model:\n  arhc: mobilenet_v2\n")
    out = tmp_path / "run"
    args = [a.format(tmp=tmp_path) for a in args]
    result = edgepipe("run", *args, "--output", str(out), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_bench_takes_run_directory_flags_and_artifact_lists():
    help_text = CliRunner().invoke(main, ["bench", "--help"]).output
    for flag in ("--data", "--output", "--seed", "--threads", "--batch", "--labels"):
        assert flag in help_text


def test_imagenet_weights_on_grey_input_is_rejected_before_work(tmp_path):
    (tmp_path / "grey.yaml").write_text("model:\n  channels: 1\n  weights: imagenet\n  alpha: 0.35\n")
    result = edgepipe("run", str(tmp_path / "grey.yaml"), "--output", str(tmp_path / "r"), cwd=tmp_path)
    assert result.returncode == 2 and "3 input channels" in result.stderr
    assert not (tmp_path / "r").exists()


def test_weights_request_checks(tmp_path):
    from edgepipe.architectures import check_weights_request, get_architecture
    from edgepipe.errors import EdgepipeError

    arch = get_architecture("mobilenet_v2")
    with pytest.raises(EdgepipeError, match="3 input channels"):
        check_weights_request(arch, "imagenet", 96, 1, 0.35)
    with pytest.raises(EdgepipeError, match="too small"):
        check_weights_request(arch, "imagenet", 16, 3, 0.35)
    with pytest.raises(EdgepipeError, match="does not exist"):
        check_weights_request(arch, str(tmp_path / "w.h5"), 96, 3, 0.35)
    check_weights_request(arch, "imagenet", 96, 3, 0.35)


def test_qat_epochs_flag_reaches_export_qat_and_is_validated(tiny_run, tmp_path):
    from click.testing import CliRunner

    from edgepipe.cli import main

    for args in (
        ["export", str(tiny_run.model), "--format", "tflite-fp32", "--output", str(tmp_path / "x")],
        ["export", "--output", str(tiny_run.path)],
    ):
        result = CliRunner().invoke(main, [*args, "--qat-epochs", "-1"])
        assert result.exit_code == 2 and "export.qat.epochs" in result.output, result.output
    assert not (tmp_path / "x").exists()
