"""A whole run on train/ + val/ folders without test/: val makes every choice, a test split held out of
train reports, and results.json and the reports say which was which."""

import hashlib

import numpy as np

from edgepipe import config as cfg
from edgepipe.data import materialize
from edgepipe.fileio import read_json
from edgepipe.pipeline.sequence import STAGES, run_stages
from edgepipe.results import read_results
from tests.conftest import make_image_folder, tiny_overrides


def test_accuracy_is_reported_on_a_test_split_held_out_of_train(tmp_path):
    import keras

    data = tmp_path / "data"
    make_image_folder(data / "train", per_class=10, size=32)
    make_image_folder(data / "val", per_class=4, size=32, seed=1)
    overrides = tiny_overrides(
        tmp_path / "run",
        **{"data.path": str(data), "data.classes": None, "data.max_per_class": None, "export.formats": ["tflite-int8"]},
    )
    run = run_stages(cfg.from_dict({}, overrides), list(STAGES), echo=lambda s: None)

    results = read_results(run.results)
    held, chose = results.heldout, results.selection
    # 0.2 (data.test_fraction's default) of each class's 10 training images
    assert {k: held[k] for k in ("split", "images", "carved", "carved_from", "fraction", "took_part_in_choices")} == {
        "split": "test",
        "images": 4,
        "carved": True,
        "carved_from": "train",
        "fraction": 0.2,
        "took_part_in_choices": False,
    }
    assert chose["split"] == "val" and chose["images"] == 8 and not chose["carved"]

    index = read_json(run.dataset_index)
    test = {item for item, _ in index["splits"]["test"]}
    assert all(p.startswith("train/") for p in test)
    assert not test & {item for s in ("train", "val") for item, _ in index["splits"][s]}
    dataset = materialize(index, 32, 3)
    digest = {s: {hashlib.sha256(im.tobytes()).hexdigest() for im in dataset.splits[s].images} for s in dataset.splits}
    assert not digest["test"] & (digest["train"] | digest["val"])

    # the reported top-1 is the model's on those test images; the INT8 recipe was judged on val's
    test_split = dataset.splits["test"]
    assert held["images_sha256"] == hashlib.sha256(np.ascontiguousarray(test_split.images).tobytes()).hexdigest()
    model = keras.models.load_model(run.model)
    top1 = float(np.mean(model.predict(test_split.images.astype(np.float32), verbose=0).argmax(1) == test_split.labels))
    assert results.reference.top1 == top1
    assert read_json(run.training)["heldout_split"] == "test"
    int8 = next(r for r in results.records if r.format == "tflite-int8")
    assert int8.int8_budget.validation_images == chose["images"]

    line = (
        "Accuracy: on the held-out `test` split, 4 images held out of the training images (0.2 of each class, "
        "seeded), through each artifact's own runtime; the choices (early stopping, INT8 recipe and budget) were "
        "made on the `val` split, 8 images, which the reported accuracy does not use."
    )
    assert line in run.report_md.read_text()
    assert (
        line.replace("`test`", "<code>test</code>").replace("`val`", "<code>val</code>").replace("'", "&#x27;")
        in run.report_html.read_text()
    )
