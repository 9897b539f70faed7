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
    result = CliRunner().invoke(main, ["build", "--data", str(data), "--arch", "mobilenet_v2", "--weights", "none",
                                       "--alpha", "0.35", "--input-size", "32", "--output", str(out)])
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


@pytest.mark.parametrize("call, named", [
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
])
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
