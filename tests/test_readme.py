"""The README's commands and reference stay true."""

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


def test_config_reference_lists_every_key():
    for key, _, _ in cfg.reference():
        assert f"`{key}`" in README, key
    assert cfg.reference_markdown() in README, "regenerate it: python tools/update_readme.py"


def test_example_configs_validate():
    for path in (ROOT / "examples").glob("*.yaml"):
        cfg.load(path)
