"""The Python API and the configuration a run starts from."""

from __future__ import annotations

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
