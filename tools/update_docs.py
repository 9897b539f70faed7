"""Regenerate the docs pages' generated blocks: the configuration reference from the config types, and the
formats, engines, devices and verification tolerances from the backend registry.

Run it after changing a config key, a format, an engine, a device or a tolerance:

    python tools/update_docs.py            # rewrite every stale block
    python tools/update_docs.py --check    # exit 1 naming each stale block, write nothing

A generated block sits in a hand-written page between two marker lines:

    <!-- generated: NAME (python tools/update_docs.py) -->
    ...
    <!-- end generated: NAME -->
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: no column breaks, no line breaks, no HTML tags."""
    return " ".join(str(text).replace("|", "/").replace("<", "&lt;").split())


def config_reference() -> str:
    """Every config key with its default and help line, from the config types."""
    from edgepipe.config import reference_markdown

    return reference_markdown()


def _exp(value: float) -> str:
    return f"{value:.0e}".replace("e-0", "e-")  # 1e-4, as the tolerances are written in the code


def _verified_by(fmt) -> str:
    if fmt.reference:
        return "the reference itself"
    tolerance = fmt.tolerance
    checks = []
    if tolerance.max_abs_diff is not None:
        checks.append(f"max \\|Δp\\| ≤ {_exp(tolerance.max_abs_diff)}")
    if tolerance.min_agreement is not None:
        checks.append(f"agreement ≥ {tolerance.min_agreement:.0%}")
    return ", ".join(checks) or "not checked"


def formats_reference() -> str:
    """The formats, containers, engines, devices and verification tolerances the backend registry holds (not what
    this machine can build: `edgepipe formats` says that). Only edgepipe's own backends: a plugin installed here
    changes nothing."""
    from edgepipe.backends import BUILTIN, TOLERANCES, containers, devices, engines, formats

    # in the order of BUILTIN, then by name: registration order depends on which backend a process loaded first
    def order(item):
        return BUILTIN.index(item[1].backend), item[0]

    ours = sorted(((name, fmt) for name, fmt in formats() if fmt.backend in BUILTIN), key=order)
    our_engines = sorted(((name, engine) for name, engine in engines() if engine.backend in BUILTIN), key=order)
    used = {d for _, engine in our_engines for d in engine.devices}

    lines = [
        "## Format list",
        "",
        "| format | backend | file | precision | run by | calibrated | verified by | what it is |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, fmt in ours:
        container = containers().get(fmt.container)
        lines.append(
            f"| `{name}` | {fmt.backend} | `{container.suffixes[0]}` | {fmt.precision} | "
            f"{container.default_engine} | {'yes' if fmt.needs_calibration else 'no'} | {_verified_by(fmt)} | "
            f"{_cell(fmt.description)} |"
        )
    lines += ["", "## Files", "", "| container | suffixes | default engine | what it is |", "|---|---|---|---|"]
    for name, container in sorted(((n, c) for n, c in containers() if c.backend in BUILTIN), key=order):
        lines.append(
            f"| `{name}` | {', '.join(f'`{s}`' for s in container.suffixes)} | {container.default_engine} | "
            f"{_cell(container.description)} |"
        )
    lines += ["", "## Engines", "", "| engine | backend | reads | devices | what it is |", "|---|---|---|---|---|"]
    for name, engine in our_engines:
        lines.append(
            f"| `{name}` | {engine.backend} | {', '.join(engine.reads)} | {', '.join(engine.devices)} | "
            f"{_cell(engine.description)} |"
        )
    lines += ["", "## Devices", "", "| device | what it is |", "|---|---|"]
    lines += [
        f"| `{name}` | {_cell(device.description)} |" for name, device in sorted(devices().items()) if name in used
    ]
    lines += [
        "",
        "## Verification tolerances",
        "",
        "Each format is verified by the tolerance of its precision, or the one it names:",
        "",
        "| tolerance | max \\|Δp\\| | top-1 agreement | formats |",
        "|---|---|---|---|",
    ]
    for key, tolerance in TOLERANCES.items():
        users = [name for name, fmt in ours if not fmt.reference and (fmt.tolerance_key or fmt.precision) == key]
        max_diff = "-" if tolerance.max_abs_diff is None else f"≤ {_exp(tolerance.max_abs_diff)}"
        agreement = "-" if tolerance.min_agreement is None else f"≥ {tolerance.min_agreement:.0%}"
        lines.append(f"| `{key}` | {max_diff} | {agreement} | {', '.join(f'`{u}`' for u in users) or '-'} |")
    return "\n".join(lines) + "\n"


#: page -> {block name: its generator}
BLOCKS: dict[str, dict[str, Callable[[], str]]] = {
    "configuration.md": {"config-reference": config_reference},
    "formats.md": {"formats-reference": formats_reference},
}


def _pattern(name: str) -> re.Pattern:
    return re.compile(
        rf"(<!-- generated: {re.escape(name)} \(python tools/update_docs.py\) -->\n)(.*?)"
        rf"(<!-- end generated: {re.escape(name)} -->)",
        re.S,
    )


def regenerated(page: str, text: str) -> str:
    """``text`` (the page ``page``) with each of its generated blocks rendered afresh; ValueError when a
    block's markers are missing."""
    for name, generate in BLOCKS[page].items():
        pattern = _pattern(name)
        if not pattern.search(text):
            raise ValueError(f"docs/{page} has no generated block '{name}' (its marker lines are missing)")
        body = generate()
        text = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(3), text)
    return text


def stale_pages() -> list[str]:
    """The pages whose generated blocks differ from what the code says now."""
    stale = []
    for page in BLOCKS:
        text = (DOCS / page).read_text(encoding="utf-8")
        if regenerated(page, text) != text:
            stale.append(page)
    return stale


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = stale_pages()
        for page in stale:
            print(f"docs/{page} is stale: run python tools/update_docs.py")
        return 1 if stale else 0
    for page in BLOCKS:
        path = DOCS / page
        text = path.read_text(encoding="utf-8")
        new = regenerated(page, text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # the checkout's edgepipe, not another installed copy
    sys.exit(main(sys.argv[1:]))
