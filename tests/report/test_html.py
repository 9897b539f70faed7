"""The run's reports: report.md, a self-contained report.html, results.csv and a real Pareto plot."""

import re
import shutil
import subprocess

import pytest

from edgepipe.fileio import read_json


def test_markdown_report_has_the_tables_and_links(tiny_run):
    text = tiny_run.report_md.read_text()
    assert "## Recommendation" in text and "use `" in text
    assert "| `model.keras`" not in text  # artifact names are plain cells, one row per record
    for fmt in ("tflite-int8", "onnx-fp32", "keras-fp32"):
        assert f"| {fmt} |" in text
    assert "## Published reference figures" in text and "| ImageNet top-1 (%) | 71.3 |" in text
    for name in ("dataset.json", "history.png", "confusion_matrix.png", "results.csv", "pareto.png"):
        assert f"]({name})" in text


def test_html_report_is_self_contained(tiny_run):
    html = tiny_run.report_html.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert html.count("data:image/png;base64,") == 3  # Pareto plot, training curves, confusion matrix
    assert "<script" not in html and not re.search(r'src="(?!data:)', html)  # nothing to fetch
    assert "Published reference figures" in html and "Keras Applications table" in html
    assert html.count("<tr") >= 1 + len(read_json(tiny_run.results)["records"])


def test_results_csv_matches_results_json(tiny_run):
    lines = tiny_run.results_csv.read_text().splitlines()
    assert len(lines) == 1 + len(read_json(tiny_run.results)["records"])
    assert lines[0].startswith("device,setting,artifact,format")


def test_pareto_png_is_a_real_plot(tiny_run):
    from PIL import Image

    with Image.open(tiny_run.pareto_png) as image:
        assert image.format == "PNG" and image.width >= 500
        colours = image.convert("RGB").getcolors(maxcolors=100_000)
        assert colours is None or len(colours) > 50  # axes, text, markers: not a blank canvas


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium(tiny_run, tmp_path):
    from PIL import Image

    browser = _chromium()
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*common, "--dump-dom", tiny_run.report_html.as_uri()], capture_output=True, text=True, timeout=120, check=False
    ).stdout
    assert "<table>" in dom and "Recommendation" in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1400,2400", tiny_run.report_html.as_uri()],
        capture_output=True,
        timeout=120,
        check=False,
    )
    with Image.open(shot) as image:
        grey = image.convert("L")
        assert grey.getextrema()[0] < 100  # text and plots were drawn
        assert len(set(grey.getdata())) > 20
