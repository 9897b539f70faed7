import pytest

from edgepipe import config as cfg
from edgepipe.errors import ConfigError, EdgepipeError


def test_defaults_validate():
    config = cfg.from_dict({})
    assert config.model.arch == "mobilenet_v2"
    assert config.run_dir.as_posix() == "runs/run"


def test_quickstart_config_loads_and_uses_builtin_data():
    config = cfg.load(cfg.quickstart_path())
    assert config.data.path == "builtin:digits"
    assert config.pretrain is not None and config.pretrain.data.classes == ["0", "1", "2", "3", "4"]
    assert config.train.baseline_from_scratch


def test_unknown_key_names_closest_valid_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  arhc: resnet50\n")
    with pytest.raises(ConfigError) as info:
        cfg.load(path)
    assert "model.arhc" in str(info.value) and "'arch'" in str(info.value)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="train.epochs.*integer"):
        cfg.from_dict({"train": {"epochs": "ten"}})


def test_impossible_value_names_the_key():
    with pytest.raises(ConfigError, match="model.input_size.*at least"):
        cfg.from_dict({"model": {"input_size": 2}})
    with pytest.raises(ConfigError, match="data.val_fraction"):
        cfg.from_dict({"data": {"val_fraction": 0.6, "test_fraction": 0.4}})


def test_unknown_architecture_suggests_closest():
    with pytest.raises(ConfigError) as info:
        cfg.from_dict({"model": {"arch": "mobilenet_v3x"}})
    assert "mobilenet" in str(info.value)


def test_keras_spelling_is_an_alias_and_stored_canonically():
    assert cfg.from_dict({"model": {"arch": "MobileNetV2"}}).model.arch == "mobilenet_v2"


def test_unknown_format_is_rejected():
    with pytest.raises(EdgepipeError, match="tflite-int9"):
        cfg.from_dict({"export": {"formats": ["tflite-int9"]}})


def test_overrides_apply_over_file_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  arch: mobilenet_v1\n  input_size: 64\n")
    config = cfg.load(path, {"model.input_size": 96, "train.epochs": 3, "export.formats": ["onnx-fp32"]})
    assert (config.model.arch, config.model.input_size, config.train.epochs) == ("mobilenet_v1", 96, 3)
    assert config.export.formats == ["onnx-fp32"]


def test_invalid_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        cfg.load(path)


def test_class_names_may_be_written_as_numbers():
    assert cfg.from_dict({"data": {"classes": [5, 6]}}).data.classes == ["5", "6"]


def test_config_round_trips_through_yaml(tmp_path):
    config = cfg.load(cfg.quickstart_path())
    path = tmp_path / "saved.yaml"
    path.write_text(cfg.to_yaml(config))
    assert cfg.load(path) == config


def test_reference_covers_every_key():
    keys = [row[0] for row in cfg.reference()]
    assert "model.arch" in keys and "pretrain.augment.rotation" in keys and "bench.min_duration_s" in keys


def test_the_bench_floors_and_the_int8_budget_have_one_home():
    """The harness, the Python API, the command line and the export context default to the config's values."""
    import inspect

    from click.testing import CliRunner

    from edgepipe import api
    from edgepipe.backends.context import ExportContext
    from edgepipe.cli import main
    from edgepipe.harness import BenchSettings

    bench, budget = cfg.BENCH_DEFAULTS, cfg.EXPORT_DEFAULTS.accuracy_budget_pp
    floors = {k: getattr(bench, k) for k in ("warmup", "warmup_s", "min_iterations", "min_duration_s")}
    assert {k: getattr(BenchSettings(), k) for k in floors} == floors
    assert {k: getattr(api.BenchRequest(paths=[]), k) for k in floors} == floors
    for function in (api.bench, api.measure_models):
        assert {k: inspect.signature(function).parameters[k].default for k in floors} == floors
    assert inspect.signature(api.export).parameters["accuracy_budget_pp"].default == budget
    assert ExportContext(None, [], {}).accuracy_budget_pp == budget == cfg.RunConfig().export.accuracy_budget_pp
    shown = CliRunner().invoke(main, ["bench", "--help"]).output
    assert f"default: {bench.warmup};" in shown and f"default: {bench.min_iterations};" in shown
