"""The README's commands and Python examples stay true (the docs pages: tests/test_docs.py)."""

import re
from pathlib import Path

from edgepipe import config as cfg

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _bash_blocks() -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", README, re.S)]


def test_ci_runs_the_readme_test_command():
    test_command = _bash_blocks()[1]
    assert "pytest" in test_command
    ci_lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_quickstart_command_installs_and_runs():
    assert _bash_blocks()[0].endswith("edgepipe run")


def test_example_configs_validate():
    for path in (ROOT / "examples").glob("*.yaml"):
        cfg.load(path)


def test_python_api_examples_run(tmp_path):
    """The README's Python examples, run in order in one fresh interpreter, as a user would paste them."""
    import subprocess
    import sys

    section = README.split("### From Python", 1)[1].split("\n## ", 1)[0]
    code = "\n\n".join(b.strip() for b in re.findall(r"```python\n(.*?)```", section, re.S))
    assert code.count("edgepipe.") >= 4
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "tflite-int8 litert" in result.stdout and "ok" in result.stdout
    assert (tmp_path / "runs" / "api-demo" / "results.json").exists()
    assert (tmp_path / "exports" / "lenet5" / "artifacts.json").exists()
