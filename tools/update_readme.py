"""Regenerate the README's config reference table from edgepipe.config (run after changing config keys)."""

from pathlib import Path

from edgepipe.config import reference_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
START = "| key | default | meaning |\n"
END = "\n## Development"

text = README.read_text(encoding="utf-8")
head, rest = text.split(START, 1)
_, tail = rest.split(END, 1)
README.write_text(head + reference_markdown() + END + tail, encoding="utf-8")
print(f"updated the config reference in {README}")
