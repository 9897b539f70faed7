"""The report's line naming the split that chose and the split that reported, in both renderers."""

from edgepipe.report import html, render_markdown
from edgepipe.results import SCHEMA, Results

CHOSE = {"split": "val", "images": 153, "carved": False, "used_for": ["the INT8 recipe and its accuracy budget"]}


def _results(heldout, selection):
    data = {"schema": SCHEMA, "device": {"cpu_model": "Test CPU"}, "records": [], "heldout": heldout}
    if selection is not None:
        data["selection"] = selection
    return Results.from_dict(data)


def test_a_held_out_test_split_and_the_choosing_split_are_both_named():
    results = _results(
        {
            "split": "test",
            "images": 140,
            "carved": True,
            "carved_from": "train",
            "fraction": 0.2,
            "took_part_in_choices": False,
        },
        CHOSE,
    )
    md = render_markdown(results)
    assert "on the held-out `test` split, 140 images held out of the training images (0.2 of each class, seeded)" in md
    assert "were made on the `val` split, 153 images, which the reported accuracy does not use" in md
    page = html.render(results)
    assert "<code>test</code> split, 140 images held out" in page and "<code>val</code> split, 153 images" in page


def test_accuracy_on_the_choosing_split_says_so_and_why():
    results = _results(
        {
            "split": "val",
            "images": 153,
            "carved": False,
            "took_part_in_choices": True,
            "note": "data.test_fraction is 0 and the data has no test split",
        },
        CHOSE,
    )
    md = render_markdown(results)
    assert "Accuracy: on the `val` split, 153 images" in md
    assert "**the same images that made the choices**" in md and "data.test_fraction is 0" in md
    assert "<strong>the same images that made the choices</strong>" in html.render(results)


def test_results_written_before_the_choosing_split_was_recorded_still_read_and_render():
    results = _results({"split": "val", "images": 153}, None)
    assert results.selection is None
    assert "Accuracy: on the held-out `val` split, 153 images, through each artifact's own runtime." in render_markdown(
        results
    )
