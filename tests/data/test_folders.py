import numpy as np
import pytest

from edgepipe.config import DataConfig
from edgepipe.data import make_index, materialize
from edgepipe.errors import DataError
from tests.conftest import make_image_folder


def test_single_folder_is_split_stratified_and_decoded(tmp_path):
    make_image_folder(tmp_path, per_class=10)
    index = make_index(DataConfig(path=str(tmp_path), val_fraction=0.3), seed=0)
    assert index["class_names"] == ["cat", "dog"]
    counts = index["summary"]["images_per_class"]
    assert counts["cat"] == {"train": 5, "val": 3, "test": 2}  # test: data.test_fraction's default 0.2
    dataset = materialize(index, size=16, channels=3)
    assert dataset.train.images.shape == (10, 16, 16, 3) and dataset.train.images.dtype == np.uint8
    # grey, palette and RGBA files all decode to RGB; file names with spaces and accents work
    assert index["summary"]["rejected"] == []


def test_split_is_repeatable_for_a_seed(tmp_path):
    make_image_folder(tmp_path, per_class=10)
    a = make_index(DataConfig(path=str(tmp_path)), seed=3)
    b = make_index(DataConfig(path=str(tmp_path)), seed=3)
    c = make_index(DataConfig(path=str(tmp_path)), seed=4)
    assert a["splits"] == b["splits"] and a["splits"] != c["splits"]


def test_train_val_layout(tmp_path):
    make_image_folder(tmp_path / "train", per_class=6)
    make_image_folder(tmp_path / "val", per_class=3, seed=1)
    index = make_index(DataConfig(path=str(tmp_path)), seed=0)
    assert index["layout"] == "splits"
    assert index["summary"]["images_per_split"] == {"train": 10, "val": 6, "test": 2}  # test held out of train


def test_grey_channel_output(tmp_path):
    make_image_folder(tmp_path, per_class=4)
    dataset = materialize(make_index(DataConfig(path=str(tmp_path)), 0), size=12, channels=1)
    assert dataset.train.images.shape[1:] == (12, 12, 1)


def test_corrupt_file_is_skipped_and_listed(tmp_path):
    make_image_folder(tmp_path, per_class=6)
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "dog" / "notes.txt").write_text("hello")
    index = make_index(DataConfig(path=str(tmp_path)), seed=0)
    reasons = {r["file"]: r["reason"] for r in index["summary"]["rejected"]}
    assert "unreadable image" in reasons["cat/broken.jpg"]
    assert "unsupported file type" in reasons["dog/notes.txt"]
    assert sum(index["summary"]["images_per_class"]["cat"].values()) == 6


def test_corrupt_file_fails_when_asked(tmp_path):
    make_image_folder(tmp_path, per_class=6)
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="broken.png"):
        make_index(DataConfig(path=str(tmp_path), on_bad_image="fail"), seed=0)


@pytest.mark.parametrize(
    "problem, message",
    [
        ("missing", "does not exist"),
        ("one_class", "at least two"),
        ("empty_class", "no readable images"),
        ("val_differs", "classes differ"),
    ],
)
def test_bad_datasets_are_clear_errors(tmp_path, problem, message):
    if problem == "one_class":
        make_image_folder(tmp_path, classes=("cat",))
    elif problem == "empty_class":
        make_image_folder(tmp_path)
        (tmp_path / "bird").mkdir()
    elif problem == "val_differs":
        make_image_folder(tmp_path / "train")
        make_image_folder(tmp_path / "val", classes=("cat", "cow"))
    path = tmp_path / "nowhere" if problem == "missing" else tmp_path
    with pytest.raises(DataError, match=message):
        make_index(DataConfig(path=str(path)), seed=0)


def test_builtin_digits_class_subset_and_cap():
    index = make_index(DataConfig(path="builtin:digits", classes=["5", "7"], max_per_class=4), seed=0)
    assert index["class_names"] == ["5", "7"]
    assert index["summary"]["images_per_split"]["train"] == 8
    dataset = materialize(index, size=32, channels=3)
    assert dataset.train.images.shape == (8, 32, 32, 3)
    assert dataset.train.images.max() > 200  # 0..16 scans scaled to 0..255


def test_builtin_synthetic_is_seeded_and_learnable_size():
    from edgepipe.data.builtin import synthetic

    a, la, names = synthetic(per_class=5, size=16)
    b, lb, _ = synthetic(per_class=5, size=16)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and len(names) == 4


def test_unknown_class_is_a_clear_error():
    with pytest.raises(DataError, match="not found"):
        make_index(DataConfig(path="builtin:digits", classes=["5", "x"]), seed=0)
