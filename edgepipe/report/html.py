"""The self-contained HTML report: the same rows as the Markdown report, plots embedded as PNG data,
no scripts, no external resources (it opens offline)."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from edgepipe.fileio import inside
from edgepipe.report.literal import inline_html
from edgepipe.report.markdown import (
    LINKS,
    NUMERIC_COLUMNS,
    TABLE_HEADER,
    budget_lines,
    pct,
    reference_rows,
    significance_lines,
    summary_lines,
    table_cells,
)
from edgepipe.report.table import analyse, oversubscription_lines, recommendation_line
from edgepipe.results import SCHEMA, Results, Status

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto; max-width: 1400px;
       padding: 0 1rem; color: #1b1f24; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.5rem; vertical-align: top; }
th { background: #f6f8fa; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.recommended td { background: #e6f4ea; } tr.failed td { background: #fdecea; } tr.skipped td { color: #6e7781; }
.recommendation { background: #e6f4ea; border-left: 4px solid #1a7f37; padding: 0.5rem 1rem; }
img { max-width: 100%; border: 1px solid #d0d7de; } .muted { color: #6e7781; font-size: 0.85rem; }
code { background: #f6f8fa; padding: 0 0.2rem; }
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], body: list[list[str]], classes: list[str] | None = None, numeric=()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    lines = []
    for i, cells in enumerate(body):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        tds = "".join(
            f'<td class="num">{escape(c)}</td>' if j in numeric else f"<td>{escape(c)}</td>"
            for j, c in enumerate(cells)
        )
        lines.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def render(
    results: Results,
    run_dir: Path | None = None,
    budget_pp: float | None = None,
    pareto_png: Path | None = None,
    analysed=None,
) -> str:
    table_rows, verdicts = analysed or analyse(results, budget_pp)
    arch = results.architecture or {}
    title = arch.get("architecture", "model") + (f" (alpha {arch['alpha']})" if arch.get("alpha") is not None else "")
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>edgepipe report: {escape(title)}</title>',
        f"<style>{STYLE}</style></head><body>",
        f"<h1>edgepipe report: {escape(title)}</h1>",
        "<ul>" + "".join(f"<li>{inline_html(line)}</li>" for line in summary_lines(results)) + "</ul>",
        "<h2>Recommendation</h2>",
    ]
    parts += [f'<p class="recommendation">{inline_html(recommendation_line(s, v))}</p>' for s, v in verdicts.items()]
    parts += [f"<p>{inline_html(line)}</p>" for line in oversubscription_lines(table_rows)]
    classes = [
        "recommended"
        if r.get("recommended")
        else ("skipped" if r["status"] == Status.SKIPPED.value else ("failed" if not r["usable"] else ""))
        for r in table_rows
    ]
    parts += [
        "<h2>Accuracy and latency</h2>",
        _table(TABLE_HEADER, [table_cells(r) for r in table_rows], classes, numeric=NUMERIC_COLUMNS),
        '<p class="muted">★ recommended; ◆ on the Pareto frontier (nothing else is both faster and more accurate). '
        "Efficiency: multiply-accumulates per second at the median latency, against the CPU's estimated peak "
        "for the threads used.</p>",
    ]
    if pareto_png is not None and pareto_png.exists():
        parts += [
            "<h2>Accuracy against latency</h2>",
            _img(pareto_png, "accuracy against p50 latency, Pareto frontier"),
        ]
    if arch.get("reference"):
        parts += [
            "<h2>Published reference figures</h2>",
            _table(["", f"published ({arch.get('architecture')}, ImageNet)", "measured here"], reference_rows(results)),
            '<p class="muted">ImageNet figures are for the 1000-class ImageNet validation set at the architecture\'s '
            "default input size; your accuracy is on your classes and held-out split.</p>",
        ]
    training = results.training or {}
    if run_dir is not None:
        for name, heading in (("history.png", "Training curves"), ("confusion_matrix.png", "Confusion matrix")):
            image = inside(run_dir, name)  # never embeds what a link points at
            if image.exists():
                parts += [f"<h2>{heading}</h2>", _img(image, heading)]
    baseline = results.baseline_from_scratch
    if baseline:
        top1 = None if results.reference is None else results.reference.top1
        parts += [
            "<h2>Transfer against training from scratch</h2>",
            _table(
                ["model", "top-1 (%) on held-out"],
                [
                    [f"transfer ({training.get('strategy')}), Keras FP32", pct(top1)],
                    [
                        f"same network from scratch on the target data alone ({baseline['epochs']} epochs)",
                        pct(baseline.get("top1")),
                    ],
                ],
                numeric={1},
            ),
        ]
    for heading, lines in (
        ("INT8 accuracy budget", budget_lines(results)),
        ("Against the FP32 model, image by image", significance_lines(results)),
    ):
        if lines:
            parts += [f"<h2>{heading}</h2><ul>"] + [
                f"<li>{inline_html(line.strip().lstrip('- '))}</li>" for line in lines
            ]
            parts += ["</ul>"]
    parts += _profile_parts(results)
    calibration = results.calibration
    if calibration:
        parts.append(
            f"<p>INT8 calibration set: {calibration['images']} training images (seed {calibration['seed']}), "
            f"sha256 <code>{escape(calibration['sha256'])}</code>.</p>"
        )
    if run_dir is not None:
        links = [(n, w) for n, w in LINKS if n != "report.html" and (run_dir / n).exists()]
        if links:
            parts += ["<h2>Files</h2><ul>"] + [
                f'<li><a href="{escape(n)}">{escape(n)}</a>: {escape(w)}</li>' for n, w in links
            ]
            parts += ["</ul>"]
    parts.append(
        f'<p class="muted">Measured {escape(results.created)} with edgepipe {escape(results.edgepipe)}; '
        f"results schema <code>{escape(SCHEMA)}</code>.</p></body></html>"
    )
    return "\n".join(parts)


def _profile_parts(results: Results) -> list[str]:
    """'Where the time goes' (bench --profile), from the same sections as the Markdown report."""
    from edgepipe.report.profile import INTRO, sections

    if not results.profiles:
        return []
    parts = ["<h2>Where the time goes</h2>", f'<p class="muted">{escape(INTRO)}</p>']
    for section in sections(results.profiles):
        parts += [f"<h3>{escape(section.title)}</h3>"] + [f"<p>{inline_html(line)}</p>" for line in section.lines]
        for table in section.tables:
            parts += ([f"<p>{escape(table.caption)}:</p>"] if table.caption else []) + [
                _table(table.header, table.rows, numeric=table.numeric)
            ]
    return parts
