"""The INT8 budget's recipes are typed (name, factory, needs_real_loss) and a costly one is skipped when the loss
so far is within chance, while the recipes after it still run."""

from __future__ import annotations

import numpy as np

from edgepipe.backends import ExportContext
from edgepipe.harness import predict
from edgepipe.quantization.budget import Attempt, Recipe, within_budget
from edgepipe.results import Int8Budget
from edgepipe.verification import ArtifactScorer
from tests.conftest import write_onnx_classifier


def _copy_of(source):
    def build(path):
        path.write_bytes(source.read_bytes())
        return {"made_from": source.name}

    return build


def test_a_costly_recipe_is_skipped_when_the_loss_is_within_noise_and_the_next_still_runs(tmp_path):
    from edgepipe.backends import create_runner, identify

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8, 3)).astype(np.uint8)
    labels = rng.integers(0, 2, 40)
    same = write_onnx_classifier(tmp_path / "same.onnx", 8)  # predicts what the reference predicts
    other = write_onnx_classifier(tmp_path / "other.onnx", 8, seed=3)
    with create_runner(identify(same), threads=1) as runner:
        reference = predict(runner, images.astype(np.float32))
    ctx = ExportContext(
        None,
        ["a", "b"],
        {},
        workdir_parent=tmp_path / "work",
        score=ArtifactScorer(images, labels, 1),
        reference_top1=1.01,  # unreachable: no recipe meets the budget, so every one gets its turn
        validation=(images, labels),
        reference_probabilities=reference,
    )
    called = []

    def costly():
        called.append("costly")
        return Attempt("fine-tuning", _copy_of(other))

    recipes = [
        Recipe("plain", lambda: Attempt("a copy of the reference", _copy_of(same))),
        Recipe("costly fine-tuning", costly, needs_real_loss=True),
        Recipe("another", lambda: Attempt("another network", _copy_of(other))),
    ]
    try:
        details = within_budget(ctx, tmp_path / "kept.onnx", "onnx-fp32", recipes)
    finally:
        ctx.close()
    budget = details["int8_budget"]
    assert isinstance(budget, Int8Budget)  # passed as it is, not flattened to a dict
    first, skipped, last = budget.attempts
    assert not called and skipped["recipe"] == "costly fine-tuning"
    assert "not distinguishable from FP32" in skipped["skipped"]
    assert first["lost"] == 0 and first["gained"] == 0
    assert last["attempt"] == 3 and last["top1"] is not None  # the recipe after the skipped one still ran
    assert budget.met is False and (tmp_path / "kept.onnx").is_file()
    assert details["made_from"] in ("same.onnx", "other.onnx")


def test_a_costly_recipe_runs_when_there_is_nothing_to_judge_the_loss_by(tmp_path):
    ctx = ExportContext(None, ["a", "b"], {}, workdir_parent=tmp_path / "work")  # no validation images
    source = write_onnx_classifier(tmp_path / "m.onnx", 8)
    try:
        details = within_budget(
            ctx, tmp_path / "kept.onnx", "onnx-fp32", [Recipe("costly", lambda: Attempt("x", _copy_of(source)), True)]
        )
    finally:
        ctx.close()
    assert details["int8_budget"].attempts[0]["recipe"] == "x" and details["int8_budget"].met is None
