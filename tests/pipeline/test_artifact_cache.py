"""The artifact cache: an artifact filed under a digest of everything that enters its file is taken in place of
converting again only when every one of those inputs is the same, and only when its files are what was filed."""

from __future__ import annotations

import dataclasses

import numpy as np

from edgepipe.architectures.loading import load_keras_model
from edgepipe.calibration import draw
from edgepipe.data import materialize
from edgepipe.fileio import read_json
from edgepipe.pipeline.export import ExportJob, export_all


def _job(tiny_run, out, cache, file_artifacts=False, **changes) -> ExportJob:
    dataset = materialize(read_json(tiny_run.dataset_index), 32, 3)
    val = dataset.splits["val"]
    job = ExportJob(
        formats=["tflite-fp32", "onnx-int8"],
        out_dir=out,
        stem="tiny",
        labels=tiny_run.read_labels(),
        preprocessing={"description": "raw pixels"},
        calibration_set=draw(dataset.train.images, dataset.train.labels, 12, 0),
        calibration_pool=(dataset.train.images, dataset.train.labels),
        validation=(val.images, val.labels),
        threads=1,
        artifact_cache=cache,
        file_artifacts=file_artifacts,
    )
    return dataclasses.replace(job, **changes)


def _cached(records) -> list[bool]:
    return [bool((r.details or {}).get("from_artifact_cache")) for r in records]


def test_an_artifact_is_taken_from_the_cache_only_when_everything_that_made_it_is_the_same(tiny_run, tmp_path):
    model = load_keras_model(str(tiny_run.model))
    cache = tmp_path / "cache"
    made = export_all(model, _job(tiny_run, tmp_path / "first", cache, file_artifacts=True), lambda line: None)
    assert [r.status.value for r in made] == ["ok", "ok"] and _cached(made) == [False, False]
    lines: list[str] = []
    again = export_all(model, _job(tiny_run, tmp_path / "again", cache), lines.append)
    assert _cached(again) == [True, True] and all(r.verification["passed"] for r in again)
    assert any("not converted again" in line for line in lines)
    for first, second in zip(made, again):
        assert (tmp_path / "again" / second.file).read_bytes() == (tmp_path / "first" / first.file).read_bytes()
        assert second.sha256 == first.sha256 and second.int8_budget == first.int8_budget
    # any export setting changed (the key holds them all, whichever format reads them): converted again
    fp32 = {"formats": ["tflite-fp32"]}
    budget = _job(tiny_run, tmp_path / "budget", cache, accuracy_budget_pp=5.0, **fp32)
    assert _cached(export_all(model, budget, lambda line: None)) == [False]
    # other weights: converted again
    other = load_keras_model(str(tiny_run.model))
    other.set_weights([w + np.float32(1e-3) for w in other.get_weights()])
    assert _cached(export_all(other, _job(tiny_run, tmp_path / "other", cache, **fp32), lambda line: None)) == [False]
    # a filed file changed since: not taken (its digest is not the one filed with it)
    (filed,) = cache.glob("*/tiny-tflite-fp32.tflite")
    filed.write_bytes(filed.read_bytes() + b"\0")
    assert _cached(export_all(model, _job(tiny_run, tmp_path / "changed", cache, **fp32), lambda line: None)) == [False]


def test_a_forced_export_or_a_damaged_entry_converts_again(tiny_run, tmp_path):
    model = load_keras_model(str(tiny_run.model))
    cache, fp32 = tmp_path / "cache", {"formats": ["tflite-fp32"]}
    export_all(model, _job(tiny_run, tmp_path / "first", cache, file_artifacts=True, **fp32), lambda line: None)
    forced = _job(tiny_run, tmp_path / "forced", cache, take_cached=False, **fp32)
    assert _cached(export_all(model, forced, lambda line: None)) == [False]
    (record,) = cache.glob("*/record.json")
    record.write_text('{"format": "tflite-fp32", "status": "ok", "details": {"int8_budget": "not a budget"}}')
    done = export_all(model, _job(tiny_run, tmp_path / "damaged", cache, **fp32), lambda line: None)
    assert _cached(done) == [False] and done[0].status.value == "ok"
