"""An export that cannot verify its artifacts says so in each record (a skipped verification with its reason), and
the bench lines and the report show it."""

from __future__ import annotations

import json

from click.testing import CliRunner

from edgepipe.cli import main
from edgepipe.export_index import read_export_index
from edgepipe.pipeline.bench import _base_record
from edgepipe.pipeline.measure import line
from edgepipe.report.markdown import table_cells
from edgepipe.report.table import rows
from edgepipe.results import Results, Status
from tests.conftest import make_image_folder


def _three_class_model(path):
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(keras.layers.Flatten()(inputs))
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(path)
    return path


def test_calibration_data_of_other_classes_is_a_visible_skipped_verification(tmp_path):
    model = _three_class_model(tmp_path / "three.keras")
    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=5, size=32)  # 2 classes, not 3
    out = tmp_path / "out"
    done = CliRunner().invoke(
        main, ["export", str(model), "--format", "tflite-fp32", "--calibration-data", str(photos), "--output", str(out)]
    )
    assert done.exit_code == 0, done.output
    assert "artifacts are not verified" in done.output
    (record,) = read_export_index(out / "artifacts.json").artifacts
    assert record.status is Status.OK
    assert record.verification["status"] == "skipped" and record.verification["passed"] is None
    assert "the calibration data has 2 classes but the model outputs 3" in record.verification["reason"]
    on_disk = json.loads((out / "artifacts.json").read_text())["artifacts"][0]["verification"]
    assert on_disk["status"] == "skipped" and "2 classes" in on_disk["reason"]

    # bench: the record it starts from keeps the skipped verification, neither passed nor failed
    measured = _base_record(record, out / record.file)
    assert measured.verified is None and measured.usable is False  # not measured here: no latency
    assert "verification skipped: the calibration data has 2 classes" in line(measured)
    # the report's table says skipped, with the reason
    measured.latency_ms = {"p50": 1.0, "p90": 1.0, "p99": 1.0, "images_per_s": 1000.0}
    (row,) = rows(Results(device={}, conditions={}, records=[measured], reference_format="keras-fp32"))
    assert row["verification"] == "skipped" and "2 classes" in row["verification_reason"] and row["usable"]
    assert any(cell.startswith("skipped: the calibration data has 2 classes") for cell in table_cells(row))


def test_an_export_without_calibration_data_says_why_it_is_not_verified(tmp_path):
    model = _three_class_model(tmp_path / "three.keras")
    out = tmp_path / "out"
    done = CliRunner().invoke(main, ["export", str(model), "--format", "tflite-fp32", "--output", str(out)])
    assert done.exit_code == 0, done.output
    (record,) = read_export_index(out / "artifacts.json").artifacts
    assert record.status is Status.OK and record.verification["status"] == "skipped"
    assert "no calibration data was given" in record.verification["reason"]
    assert "not verified: no calibration data" in done.output
