"""Names are data, never markup: class names, file names and device names placed into Markdown (as text, as
code or in a table cell) render as the same characters, and the Markdown lines the HTML report reuses turn into
HTML with those characters intact."""

from __future__ import annotations

import re
import unicodedata
from html import escape

#: characters that start Markdown (or GitHub's math, HTML, entity and table) syntax wherever they appear in a line
_ALWAYS = set("\\`*[]<>|$~&")
_PUNCTUATION = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def visible(name: str) -> str:
    """``name`` on one line: control characters (newline, tab, escape sequences) shown as Python escapes."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c) == "Cc" else c for c in str(name))


def md_text(name: str) -> str:
    """``name`` as Markdown text that renders as exactly its characters (and, in a table cell, stays in its cell).

    An underscore between two letters or digits is left alone: Markdown never reads it as emphasis, and
    ``mobilenet_v2`` stays readable in the raw file."""
    name = visible(name)
    out = []
    for i, c in enumerate(name):
        inside_word = c == "_" and 0 < i < len(name) - 1 and name[i - 1].isalnum() and name[i + 1].isalnum()
        out.append("\\" + c if c in _ALWAYS or (c == "_" and not inside_word) else c)
    return "".join(out)


def md_code(name: str, in_table: bool = False) -> str:
    """``name`` as a Markdown code span, whatever backticks it holds (the fence is longer than any run of them);
    ``in_table``: its pipes escaped so a table row keeps its cells (GitHub shows ``\\|`` in a code span as ``|``)."""
    name = visible(name)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", name)), default=0) + 1)
    pad = " " if name.startswith("`") or name.endswith("`") or (name.startswith(" ") and name.endswith(" ")) else ""
    span = f"{fence}{pad}{name}{pad}{fence}"
    return span.replace("|", "\\|") if in_table else span


def inline_html(line: str) -> str:
    """HTML for one Markdown line as the reports write them: backslash escapes, code spans (any fence length) and
    **bold**; everything else is text, HTML-escaped."""
    out, i, bold = [], 0, False
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] in _PUNCTUATION:
            out.append(escape(line[i + 1]))
            i += 2
        elif c == "`":
            fence = re.match(r"`+", line[i:]).group()
            close = re.compile(r"(?<!`)" + fence + r"(?!`)").search(line, i + len(fence))
            if close is None:  # no closing fence: the backticks are text
                out.append(fence)
                i += len(fence)
                continue
            code = line[i + len(fence) : close.start()]
            if len(code) > 1 and code.startswith(" ") and code.endswith(" ") and code.strip():
                code = code[1:-1]
            out.append(f"<code>{escape(code)}</code>")
            i = close.end()
        elif line.startswith("**", i):
            out.append("</strong>" if bold else "<strong>")
            bold = not bold
            i += 2
        else:
            out.append(escape(c))
            i += 1
    return "".join(out) + ("</strong>" if bold else "")
