"""The Python API and the configuration a run starts from."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import edgepipe
from edgepipe.api import resolve_config
from edgepipe.cli import main
from edgepipe.fileio import read_json
from tests.conftest import make_image_folder


def test_own_data_without_a_config_starts_from_the_image_folder_defaults(tmp_path):
    data = make_image_folder(tmp_path / "my_photos", classes=("cat", "dog"))
    config, base = resolve_config(None, {"data": str(data), "arch": "mobilenet_v2", "weights": "imagenet"})
    assert "your own images" in base
    assert config.data.path == str(data) and config.data.classes is None and config.pretrain is None
    assert config.model.input_size == 224 and config.name == "my-photos"
    _, quickstart = resolve_config(None, {})
    assert quickstart == "the built-in quickstart"


def test_build_by_flags_alone_uses_the_users_classes(tmp_path):
    data = make_image_folder(tmp_path / "my_photos", classes=("cat", "dog"), per_class=5)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "build",
            "--data",
            str(data),
            "--arch",
            "mobilenet_v2",
            "--weights",
            "none",
            "--alpha",
            "0.35",
            "--input-size",
            "32",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "configuration: the defaults for your own images" in result.output
    assert read_json(out / "dataset.json")["class_names"] == ["cat", "dog"]
    # the saved configuration is what the next command in that directory starts from
    _, base = resolve_config(None, {"output": str(out)})
    assert base == f"the saved configuration of {out}"


def test_unknown_run_settings_are_named():
    import pytest

    with pytest.raises(edgepipe.api.EdgepipeError, match="unknown setting 'epoch'.*'epochs'"):
        edgepipe.run(epoch=3)


def _buildable(config) -> None:
    """Raises what the build stage would raise for the configuration's network settings."""
    from edgepipe.architectures import get_architecture
    from edgepipe.architectures.classifier import check_weights_request, resolve_alpha

    arch = get_architecture(config.model.arch)
    alpha = resolve_alpha(arch, config.model.alpha)
    check_weights_request(arch, config.model.weights, config.model.input_size, config.model.channels, alpha)


def test_an_architecture_alone_is_never_refused_for_settings_the_user_did_not_give(tmp_path):
    """The image-folder defaults, the quickstart and a config file each write settings for their own network
    (alpha 0.35, ImageNet weights, 48 px): choosing another architecture by name alone must build."""
    import pytest

    from edgepipe.architectures import ARCHITECTURES

    data = make_image_folder(tmp_path / "photos", per_class=2)
    config_file = tmp_path / "mine.yaml"
    config_file.write_text("model: {arch: mobilenet_v2, alpha: 0.5, weights: imagenet, input_size: 96}\n")
    for name in ARCHITECTURES.names():
        for config, flags in (
            (None, {"data": str(data)}),
            (None, {}),
            (str(config_file), {}),
            ({"model": {"arch": "mobilenet", "alpha": 0.25}}, {}),
        ):
            resolved, base = resolve_config(config, {**flags, "arch": name, "output": str(tmp_path / "out")})
            _buildable(resolved)
    # what the user does give still counts, and is still checked
    resolved, _ = resolve_config(None, {"data": str(data), "arch": "mobilenet", "alpha": 0.5})
    assert resolved.model.alpha == 0.5
    with pytest.raises(edgepipe.api.EdgepipeError, match="no width multiplier, but alpha=0.35"):
        _buildable(resolve_config(None, {"data": str(data), "arch": "resnet50", "alpha": 0.35})[0])
    # and every change to the base is said
    resolved, base = resolve_config(None, {"data": str(data), "arch": "lenet5"})
    assert resolved.model.alpha is None and resolved.model.weights == "none"
    assert "width multiplier 0.35 of the base not applied to lenet5" in base and "random initial weights" in base


def test_arch_by_flag_alone_builds_from_the_cli_and_the_api(tmp_path):
    data = make_image_folder(tmp_path / "photos", per_class=3)
    result = CliRunner().invoke(
        main, ["build", "--data", str(data), "--arch", "lenet5", "--output", str(tmp_path / "a")]
    )
    assert result.exit_code == 0, result.output
    assert "lenet5 has no published ImageNet weights" in result.output
    run = edgepipe.run(
        data=str(data),
        arch="efficientnet_lite0",
        input_size=32,
        output=str(tmp_path / "b"),
        stages=["build"],
        echo=lambda line: None,
    )
    assert run.config.model.alpha is None and run.config.model.weights == "none"


def test_tests_run_in_an_empty_folder_of_their_own():
    """What the working folder holds (a runs/ left by the quickstart) must not change any test's outcome."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert Path.cwd().resolve() != root and not any(Path.cwd().iterdir())


def _quiet(line):
    pass


def test_list_arguments_take_one_value_or_a_sequence(tiny_run):
    artifact = next(tiny_run.artifacts_dir.glob("*-tflite-fp32.tflite"))
    fast = dict(warmup=0, warmup_s=0, min_iterations=1, min_duration_s=0, memory=False, echo=_quiet)
    one = edgepipe.bench(str(artifact), threads=1, batch=2, devices="cpu", **fast)  # one path, one of each
    assert [(r.threads, r.batch_size, r.device) for r in one.records] == [(1, 2, "cpu")]
    many = edgepipe.bench([artifact], threads=(1, 2), batch=[1], devices=["cpu"], **fast)
    assert sorted(r.threads for r in many.records) == [1, 2]
    gate = edgepipe.compare(tiny_run.results, tiny_run.results, percentiles="p90", max_latency_regression="10%")
    assert "p90 now (ms)" in gate.table and "p50 now" not in gate.table and not gate.violations
    assert edgepipe.merge(tiny_run.results).startswith("# edgepipe: results merged")  # one file, not its characters


@pytest.mark.parametrize(
    "call, named",
    [
        (lambda p: edgepipe.bench(p, threads=True), "threads takes a whole number of at least 1"),
        (lambda p: edgepipe.bench(p, threads=0), "threads takes a whole number of at least 1 or a list of them; got 0"),
        (lambda p: edgepipe.bench(p, threads=[1, -2]), "got -2 in [1, -2]"),
        (lambda p: edgepipe.bench(p, threads="2"), "threads takes a whole number"),
        (lambda p: edgepipe.bench(p, threads=2.0), "threads takes a whole number"),
        (lambda p: edgepipe.bench(p, batch=[]), "batch is empty"),
        (lambda p: edgepipe.bench(p, batch=0), "batch takes a whole number of at least 1"),
        (lambda p: edgepipe.bench(p, devices=3), "devices takes a name"),
        (lambda p: edgepipe.bench(p, engines=[None]), "engines takes a name"),
        (lambda p: edgepipe.bench(7), "paths takes a path"),
        (lambda p: edgepipe.api.BenchRequest([p], threads=False), "threads takes a whole number"),
        (lambda p: edgepipe.export(p, 5), "formats takes a name"),
        (lambda p: edgepipe.export(p, "tflite-fp32", threads=0), "threads takes a whole number"),
        (lambda p: edgepipe.export(p, "tflite-fp32", threads=[1, 2]), "threads takes one value"),
        (lambda p: edgepipe.run(formats=5, output=str(p)), "formats takes a name"),
        (lambda p: edgepipe.run(stages=7, output=str(p), echo=_quiet), "stages takes a name"),
        (lambda p: edgepipe.compare(p, p, percentiles=50), "percentiles takes a name"),
        (lambda p: edgepipe.merge(42), "results takes a results file's path"),
    ],
)
def test_a_wrong_type_is_an_edgepipe_error_naming_the_argument(tmp_path, call, named):
    """Refused before anything is read, measured or written."""
    with pytest.raises(edgepipe.api.EdgepipeError) as caught:
        call(tmp_path / "model.tflite")
    assert named in str(caught.value)
    assert not any(tmp_path.iterdir())


def test_a_single_format_or_stage_name_is_one_name_not_its_characters(tmp_path):
    with pytest.raises(edgepipe.api.EdgepipeError, match="'tflite-fp33'"):  # not 't', its first character
        edgepipe.run(formats="tflite-fp33", output=str(tmp_path / "r"), echo=_quiet)
    with pytest.raises(edgepipe.api.EdgepipeError, match="unknown stage 'trian'"):
        edgepipe.run(stages="trian", output=str(tmp_path / "r"), echo=_quiet)
    with pytest.raises(edgepipe.api.EdgepipeError, match="unknown percentile 'p98'"):
        edgepipe.compare(tmp_path / "a.json", tmp_path / "b.json", percentiles="p98")
