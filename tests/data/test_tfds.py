"""TensorFlow Datasets as a source: a real TFDS builder prepared on disk (no download)."""

import numpy as np
import pytest

from edgepipe.config import DataConfig
from edgepipe.data import make_index, materialize
from edgepipe.errors import DataError

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")


class EdgepipeTinyColours(tfds.core.GeneratorBasedBuilder):
    """Three colour classes, images of varying size; train and test splits, no validation split."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(names=["red", "green", "blue"]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(30, 0), "test": self._generate_examples(9, 1)}

    def _generate_examples(self, n, seed):
        rng = np.random.default_rng(seed)
        for i in range(n):
            image = rng.integers(0, 60, (int(rng.integers(10, 20)), int(rng.integers(10, 20)), 3), dtype=np.uint8)
            image[..., i % 3] += 180
            yield i, {"image": image, "label": i % 3}


@pytest.fixture()
def tfds_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    from edgepipe.data import tfds_source

    tfds_source.load_split.cache_clear()
    yield tmp_path
    tfds_source.load_split.cache_clear()


def test_tfds_dataset_is_indexed_split_and_decoded(tfds_dir):
    index = make_index(DataConfig(path="tfds:edgepipe_tiny_colours", val_fraction=0.2), seed=0)
    assert index["class_names"] == ["red", "green", "blue"] and index["layout"] == "tfds"
    sizes = {s: len(v) for s, v in index["splits"].items()}
    assert sizes == {"train": 24, "val": 6, "test": 9}  # val held out of train: TFDS gave none
    assert set(index["summary"]["carved"]) == {"val"}  # its own test split reports: nothing held out for it
    dataset = materialize(index, 16, 3)
    assert dataset.splits["test"].images.shape == (9, 16, 16, 3)
    dominant = dataset.train.images.reshape(len(dataset.train), -1, 3).mean(axis=1).argmax(axis=1)
    assert (dominant == dataset.train.labels).all()  # labels travel with their images


def test_tfds_class_subset(tfds_dir):
    index = make_index(DataConfig(path="tfds:edgepipe_tiny_colours", classes=["blue", "red"]), seed=0)
    assert index["class_names"] == ["blue", "red"] and len(index["splits"]["test"]) == 6


def test_unknown_tfds_name_is_a_clear_error(tfds_dir):
    with pytest.raises(DataError, match="has no dataset 'no_such_set_xyz'"):
        make_index(DataConfig(path="tfds:no_such_set_xyz"), seed=0)
