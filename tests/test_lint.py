"""The code is formatted and linted as pyproject.toml configures ruff (the test extra installs it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["edgepipe", "tests", "benchmarks", "tools"]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    if (
        shutil.which("ruff") is None
        and subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True).returncode != 0
    ):
        pytest.skip("ruff is not installed (pip install '.[test]')")
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *CHECKED], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_the_code_is_formatted():
    result = _ruff("format", "--check")
    assert result.returncode == 0, "run 'ruff format':\n" + result.stdout + result.stderr


def test_the_linter_finds_nothing():
    result = _ruff("check", "--no-cache")
    assert result.returncode == 0, "run 'ruff check --fix', then fix what is left:\n" + result.stdout + result.stderr
