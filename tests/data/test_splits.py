"""Split roles: val chooses, a test split that took part in no choice reports, for every data layout."""

import hashlib

import numpy as np
import pytest

from edgepipe.config import DataConfig
from edgepipe.data import make_index, materialize
from edgepipe.data.dataset import format_summary
from tests.conftest import make_image_folder


def _paths(index, split):
    return {item for item, _ in index["splits"][split]}


def _digests(dataset, split):
    return {hashlib.sha256(image.tobytes()).hexdigest() for image in dataset.splits[split].images}


def test_train_and_val_folders_without_test_get_a_test_split_held_out_of_train(tmp_path):
    make_image_folder(tmp_path / "train", per_class=10)
    make_image_folder(tmp_path / "val", per_class=3, seed=1)
    index = make_index(DataConfig(path=str(tmp_path)), seed=0)
    per_class = index["summary"]["images_per_class"]
    # the default data.test_fraction, 0.2 of each class's 10 training images; val stays the given folder
    assert DataConfig().test_fraction == 0.2
    assert per_class["cat"] == per_class["dog"] == {"train": 8, "val": 3, "test": 2}
    assert index["summary"]["carved"] == {"test": {"from": "train", "fraction": 0.2, "seed": 0}}
    test, train, val = _paths(index, "test"), _paths(index, "train"), _paths(index, "val")
    assert all(p.startswith("train/") for p in test) and not test & train and not test & val
    dataset = materialize(index, 20, 3)
    assert not _digests(dataset, "test") & (_digests(dataset, "train") | _digests(dataset, "val"))
    roles = dataset.roles()
    assert dataset.heldout_name == "test"
    assert roles["reported"] == {
        "split": "test",
        "images": 4,
        "carved": True,
        "carved_from": "train",
        "fraction": 0.2,
        "took_part_in_choices": False,
    }
    assert roles["selection"]["split"] == "val" and roles["selection"]["images"] == 6
    assert not roles["selection"]["carved"]
    assert "test split: 4 images, held out of train (0.2 of each class, seed 0)" in format_summary(index["summary"])


@pytest.mark.parametrize(
    "layout, carved",
    [
        ("classes", {"val", "test"}),  # one folder of class subfolders
        ("train", {"val", "test"}),  # train/ alone
        ("train+val", {"test"}),
        ("train+val+test", set()),  # every split given: nothing held out
        ("builtin", {"val", "test"}),
    ],
)
def test_every_layout_reports_on_a_split_no_choice_used(tmp_path, layout, carved):
    if layout == "builtin":
        path = "builtin:synthetic"
    else:
        path = str(tmp_path)
        if layout == "classes":
            make_image_folder(tmp_path, per_class=10)
        else:
            for i, part in enumerate(layout.split("+")):
                make_image_folder(tmp_path / part, per_class=10 if part == "train" else 3, seed=i)
    index = make_index(DataConfig(path=path), seed=0)
    assert set(index["summary"]["carved"]) == carved
    dataset = materialize(index, 16, 3)
    roles = dataset.roles()
    assert roles["reported"]["split"] == "test" and roles["reported"]["images"] > 0
    assert roles["reported"]["carved"] == ("test" in carved) and not roles["reported"]["took_part_in_choices"]
    assert not _digests(dataset, "test") & _digests(dataset, "val")
    if layout != "builtin":  # (the generated set may draw two identical images: paths tell them apart)
        assert not _digests(dataset, "test") & _digests(dataset, "train")
    assert not {str(i) for i in _paths(index, "test")} & {str(i) for i in _paths(index, "train") | _paths(index, "val")}


@pytest.mark.parametrize(
    "per_class, expected",
    [
        (3, {"train": 1, "val": 1, "test": 1}),
        (
            2,
            {"train": 1, "val": 1, "test": 0},
        ),  # too few for a test image: the class keeps one to train, one to validate
    ],
)
def test_tiny_classes_keep_a_training_image(tmp_path, per_class, expected):
    make_image_folder(tmp_path, per_class=per_class)
    index = make_index(DataConfig(path=str(tmp_path), val_fraction=0.45, test_fraction=0.45), seed=0)
    assert index["summary"]["images_per_class"]["cat"] == expected


def test_too_few_images_for_a_test_split_report_on_val_and_say_so(tmp_path):
    make_image_folder(tmp_path, per_class=2)
    index = make_index(DataConfig(path=str(tmp_path)), seed=0)
    assert index["summary"]["images_per_split"]["test"] == 0
    roles = materialize(index, 16, 3).roles()
    assert roles["reported"]["split"] == "val" and roles["reported"]["took_part_in_choices"]
    assert "no class has an image to spare" in roles["reported"]["note"]
    assert "accuracy will be reported on val, the split that also makes the choices" in format_summary(index["summary"])


def test_test_fraction_zero_reports_on_val_and_says_why(tmp_path):
    make_image_folder(tmp_path, per_class=10)
    index = make_index(DataConfig(path=str(tmp_path), test_fraction=0.0), seed=0)
    roles = materialize(index, 16, 3).roles()
    assert roles["reported"]["split"] == "val" and roles["reported"]["note"].startswith("data.test_fraction is 0")


def test_a_single_folder_splits_as_before_for_val(tmp_path):
    """Holding test out of the same per-class draw leaves val as it was without one (same seed)."""
    make_image_folder(tmp_path, per_class=10)
    with_test = make_index(DataConfig(path=str(tmp_path)), seed=5)
    without = make_index(DataConfig(path=str(tmp_path), test_fraction=0.0), seed=5)
    assert with_test["splits"]["val"] == without["splits"]["val"]
    assert np.isin([p for p, _ in with_test["splits"]["test"]], [p for p, _ in without["splits"]["train"]]).all()
