"""The documentation: the site builds with every link and anchor valid, the generated reference pages match the
code, and the README's and CONTRIBUTING's links point at files that exist."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from edgepipe import config as cfg

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _update_docs():
    spec = importlib.util.spec_from_file_location("update_docs", ROOT / "tools" / "update_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
    reason="mkdocs and mkdocs-material are not installed (pip install '.[test]')",
)


@needs_mkdocs
def test_the_site_builds_strictly(tmp_path):
    result = _mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert (tmp_path / "site" / "formats" / "index.html").exists()
    assert "fonts.googleapis.com" not in (tmp_path / "site" / "index.html").read_text(
        encoding="utf-8"
    )  # builds and opens offline


@needs_mkdocs
@pytest.mark.parametrize(
    "breakage", ["a link to a missing page", "a link to a missing anchor", "a page not in the nav"]
)
def test_a_broken_link_or_an_unlisted_page_fails_the_build(tmp_path, breakage):
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    index = tmp_path / "docs" / "index.md"
    if breakage == "a page not in the nav":
        (tmp_path / "docs" / "orphan.md").write_text("# Orphan\n", encoding="utf-8")
    else:
        target = "no-such-page.md" if breakage == "a link to a missing page" else "formats.md#no-such-anchor"
        index.write_text(index.read_text(encoding="utf-8") + f"\n[broken]({target})\n", encoding="utf-8")
    result = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0, breakage
    assert "no-such" in result.stderr or "orphan.md" in result.stderr, result.stderr[-2000:]


def test_generated_pages_match_the_code():
    assert _update_docs().stale_pages() == [], "regenerate them: python tools/update_docs.py"


def test_a_stale_generated_block_is_found_and_rewritten():
    update_docs = _update_docs()
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `seed`"))
    stale = text.replace(row + "\n", "")
    assert stale != text and update_docs.regenerated("configuration.md", stale) == text
    formats_text = (DOCS / "formats.md").read_text(encoding="utf-8")
    assert update_docs.regenerated("formats.md", formats_text.replace("≥ 90%", "≥ 80%")) == formats_text
    with pytest.raises(ValueError, match="marker"):
        update_docs.regenerated("formats.md", "# Formats\n")


def test_config_reference_lists_every_key():
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for key, _, _ in cfg.reference():
        assert f"`{key}`" in text, key
    assert cfg.reference_markdown() in text, "regenerate it: python tools/update_docs.py"


def test_config_reference_help_lines_show_as_written():
    """A help line's ``runs/<name>`` is text, not an HTML tag a browser would hide."""
    for line in cfg.reference_markdown().splitlines():
        assert "<" not in re.sub(r"`[^`]*`", "", line), line


def test_formats_page_gives_every_format_its_tolerance():
    from edgepipe.backends import BUILTIN, formats

    text = (DOCS / "formats.md").read_text(encoding="utf-8")
    for name, fmt in formats():
        if fmt.backend in BUILTIN and not fmt.reference:
            row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
            tolerance = fmt.tolerance
            assert tolerance.min_agreement is None or f"agreement ≥ {tolerance.min_agreement:.0%}" in row, row


def _slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension gives a heading (its default slugify)."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", ["README.md", "CONTRIBUTING.md"])
def test_links_from_the_repository_root_resolve(page):
    text = (ROOT / page).read_text(encoding="utf-8")
    links = [target for target in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"\w+://", target)]
    assert links, page
    for target in links:
        file, _, anchor = target.partition("#")
        path = ROOT / file if file else ROOT / page
        assert path.is_file(), f"{page} links to {target}: no such file"
        if anchor:
            assert anchor in _anchors(path), f"{page} links to {target}: {file or page} has no such heading"


def test_the_slug_is_the_one_mkdocs_gives():
    assert _slug("What edgepipe will never do, and exit codes") == "what-edgepipe-will-never-do-and-exit-codes"
    assert _slug("Which engine is fastest, measured") == "which-engine-is-fastest-measured"


def test_generated_pages_do_not_depend_on_which_backend_loaded_first():
    """Backends load when first asked for; a process that imported one directly registered it first."""
    code = (
        "import sys; sys.path.insert(0, 'tools'); import edgepipe.backends.openvino.backend; "
        "import edgepipe.backends.tensorrt.backend; import update_docs; print(update_docs.stale_pages())"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr
