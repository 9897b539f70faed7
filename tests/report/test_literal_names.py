"""Names are data, never markup: class and file names with dollar signs, pipes, angle brackets, asterisks or
backticks reach the plots, report.md and report.html as the same characters, and never stop a stage."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html import escape, unescape
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgepipe.report.literal import inline_html, md_code, md_text, visible

NAMES = [
    "a$b$c",
    "$x^$",
    "x|y",
    "<b>z</b>",
    "under_score*star*",
    "**bold**",
    "`tick`",
    "a\\|b",
    "_lead",
    "&amp;",
    "[link](http://example.com)",
    "new\nline",
    "~~gone~~",
    "#1 + 2",
]
#: class folder names (no "/" or newline in a folder name here) for the run through the command line
FOLDERS = ["a$b$c", "$x^$", "x|y", "<b>z", "under_score*star*"]


def _markdown():
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark").enable("table")


@pytest.mark.parametrize("name", NAMES)
def test_a_name_renders_as_its_own_characters_in_markdown_and_html(name):
    md = _markdown()
    shown = escape(visible(name), quote=False)
    line = f"class {md_text(name)} and {md_code(name)}"
    expected = f"class {shown} and <code>{shown}</code>"
    assert md.renderInline(line) == expected  # a real CommonMark renderer
    assert inline_html(line).replace("&#x27;", "'").replace("&quot;", '"') == expected  # the HTML report's reading
    table = md.render(f"| name | code |\n|---|---|\n| {md_text(name)} | {md_code(name, in_table=True)} |\n")
    assert re.findall(r"<td>(.*?)</td>", table) == [shown, f"<code>{shown}</code>"]


def test_control_characters_are_shown_not_obeyed():
    assert md_text("a\nb\x1b[31m") == "a\\\\nb\\\\x1b\\[31m"  # the shown backslashes are text too
    assert "\n" not in md_code("one\ntwo")


def _svg_texts(path: Path) -> str:
    """All text the SVG draws, one string per text element, joined by newlines."""
    root = ET.parse(path).getroot()
    return "\n".join("".join(e.itertext()) for e in root.iter() if e.tag.endswith("}text"))


@pytest.fixture
def svg_text():
    """Plots saved as SVG with text kept as text, so what was drawn can be read back."""
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none"}):
        yield


def test_confusion_plot_draws_class_names_literally(tmp_path, svg_text):
    from edgepipe.report.plots import confusion_plot

    names = [n for n in NAMES if "\n" not in n]
    counts = [[int(i == j) for j in range(len(names))] for i in range(len(names))]
    evaluation = {"top1": 1.0, "images": len(names), "confusion_matrix": {"classes": names, "counts": counts}}
    confusion_plot(evaluation, tmp_path / "cm.svg", title="cost $5 | $x^$")
    drawn = _svg_texts(tmp_path / "cm.svg").splitlines()
    for name in names:
        assert drawn.count(name) == 2, name  # once as a row label, once as a column label
    assert any("cost $5 | $x^$" in line for line in drawn)


def test_history_and_pareto_plots_draw_names_literally(tmp_path, svg_text):
    from edgepipe.report.plots import history_plot, pareto_plot

    history_plot({"loss": [1.0, 0.5], "accuracy": [0.5, 0.9]}, tmp_path / "h.svg", title="run $x^$ on a$b$c")
    assert "run $x^$ on a$b$c" in _svg_texts(tmp_path / "h.svg")
    points = [
        {
            "device": "board $1$ <b>",
            "label": label,
            "latency_ms": ms,
            "top1": 0.9,
            "size_mb": 1.0,
            "frontier": True,
            "recommended": False,
        }
        for label, ms in (("my$model$.tflite", 1.0), ("x|y^$", 2.0))
    ]
    pareto_plot(points, tmp_path / "p.svg", "speed of $a$")
    drawn = _svg_texts(tmp_path / "p.svg")
    for text in ("my$model$.tflite", "x|y^$", "board $1$ <b>", "speed of $a$"):
        assert text in drawn, text


def _tiny_config(tmp_path: Path, data: Path) -> Path:
    from tests.conftest import tiny_overrides

    flat = tiny_overrides(
        tmp_path / "run",
        **{
            "data.path": str(data),
            "data.classes": None,
            "train.epochs": 1,
            "export.formats": ["tflite-fp32"],
            "bench.memory": False,
        },
    )
    nested: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = tmp_path / "names.yaml"
    path.write_text(yaml.safe_dump(nested))
    return path


def test_class_folders_named_like_markup_run_through_train_and_report(tmp_path):
    from edgepipe.cli import main
    from tests.conftest import make_image_folder

    data = make_image_folder(tmp_path / "data", classes=FOLDERS, per_class=5, size=16)
    result = CliRunner().invoke(main, ["run", str(_tiny_config(tmp_path, data))])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    run = tmp_path / "run"
    report_md = (run / "report.md").read_text(encoding="utf-8")
    report_html = (run / "report.html").read_text(encoding="utf-8")
    md = _markdown()
    classes_md = next(line for line in report_md.splitlines() if line.startswith("- Classes:"))
    classes_html = next(part for part in report_html.split("<li>") if part.startswith("Classes:"))
    for name in FOLDERS:
        assert f"<code>{escape(name, quote=False)}</code>" in md.renderInline(classes_md), name
        assert f"<code>{escape(name)}</code>" in classes_html, name
    assert unescape(report_html).count("a$b$c") >= 1
    for plot in ("history.png", "confusion_matrix.png", "pareto.png"):
        assert (run / plot).stat().st_size > 0
    assert report_html.count("data:image/png;base64,") == 3
