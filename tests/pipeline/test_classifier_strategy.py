"""The classifier strategy: a trained network with its own head, evaluated without training."""

import pytest

from edgepipe import config as cfg
from edgepipe.errors import DataError, EdgepipeError
from edgepipe.fileio import read_json
from edgepipe.pipeline.sequence import run_stages
from tests.conftest import tiny_overrides


def _overrides(tiny_run, out, **extra):
    return tiny_overrides(
        out,
        **{
            "model.path": str(tiny_run.model),
            "model.labels": str(tiny_run.labels),
            "model.alpha": None,
            "train.strategy": "classifier",
            **extra,
        },
    )


def test_network_with_its_own_head_scores_a_subset_of_its_classes(tiny_run, tmp_path):
    # the folders name two of the network's three classes, in another order
    config = cfg.from_dict({}, _overrides(tiny_run, tmp_path / "run", **{"data.classes": ["2", "0"]}))
    run = run_stages(config, ["build", "train"], echo=lambda s: None)
    assert run.read_labels() == ["0", "1", "2"]  # the network's classes, in its output order
    index = read_json(run.dataset_index)
    assert index["dataset_class_names"] == ["2", "0"]
    assert {label for _, label in index["splits"]["val"]} == {0, 2}
    training = read_json(run.training)
    assert training["strategy"] == "classifier" and training["trainable_layers"] == []
    assert training["top1"] > 0.8  # the source run's held-out accuracy on these digits is high
    assert read_json(run.build_info)["softmax_appended"] is False


def test_classes_the_network_does_not_know_are_refused(tiny_run, tmp_path):
    config = cfg.from_dict({}, _overrides(tiny_run, tmp_path / "run", **{"data.classes": ["0", "7"]}))
    with pytest.raises(DataError, match="7 are not among the network's 3 classes"):
        run_stages(config, ["build"], echo=lambda s: None)
    assert not (tmp_path / "run").exists()


def test_labels_are_required_for_a_users_model(tiny_run, tmp_path):
    overrides = _overrides(tiny_run, tmp_path / "run")
    overrides["model.labels"] = None
    with pytest.raises(EdgepipeError, match="needs the names of the network's classes"):
        run_stages(cfg.from_dict({}, overrides), ["build"], echo=lambda s: None)
