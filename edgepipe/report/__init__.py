"""Reports rendered from results.json."""

from edgepipe.report.markdown import render as render_markdown

__all__ = ["render_markdown"]
