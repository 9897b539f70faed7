"""Merge results files from several devices into one table: one latency column group per device."""

from __future__ import annotations

from edgepipe.report.literal import md_code, md_text
from edgepipe.report.table import analyse_many, device_name, oversubscription_lines, pareto_points, recommendation_line
from edgepipe.results import Results


def merge(results_list: list[Results], analysed=None) -> str:
    """Markdown: one row per (artifact format, engine, engine device, threads, batch), a p50/p90/images-per-second
    group per device."""
    devices = [device_name(r) for r in results_list]
    rows: dict[tuple, dict[int, object]] = {}
    for i, results in enumerate(results_list):
        for record in results.records:
            key = (
                record.format or record.artifact,
                record.engine,
                record.device or "cpu",
                record.threads,
                record.batch_size,
            )
            rows.setdefault(key, {})[i] = record
    header = (
        "| artifact | engine | engine device | threads | batch | top-1 (%) | "
        + " | ".join(f"{d}: p50 (ms) | {d}: p90 (ms) | {d}: images/s" for d in map(md_text, devices))
        + " |"
    )
    lines = [header, "|---|---|---|--:|--:|--:|" + "--:|--:|--:|" * len(devices)]
    for (fmt, engine, engine_device, threads, batch), per_device in rows.items():
        top1 = next((r.top1 for r in per_device.values() if r.top1 is not None), None)
        cells = [
            md_code(fmt, in_table=True),
            md_text(engine or "–"),
            md_text(engine_device),
            str(threads),
            str(batch),
            "–" if top1 is None else f"{top1 * 100:.2f}",
        ]
        for i in range(len(devices)):
            record = per_device.get(i)
            lat = record.latency_ms if record is not None else None
            if lat:
                cells += [f"{lat['p50']:.3f}", f"{lat['p90']:.3f}", f"{lat['images_per_s']:.1f}"]
            else:
                cells += [str(record.status) if record is not None else "not measured", "–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    conditions = []
    for d, results in zip(devices, results_list):
        c = results.conditions
        conditions.append(
            f"- {md_text(d)}: threads {c.get('threads')}, batch {c.get('batch_size', c.get('batch_sizes'))}, "
            f"{c.get('warmup')} warm-up calls, at least {c.get('min_iterations')} calls and "
            f"{c.get('min_duration_s')} s; measured {results.created}"
        )
    table_rows, verdicts = analysed or analyse_many(results_list)
    recommendations = [f"- {recommendation_line(s, v)}" for s, v in verdicts.items()]
    recommendations += [f"- {line}" for line in oversubscription_lines(table_rows)]
    return (
        "# edgepipe: results merged across devices\n\n"
        + "\n".join(lines)
        + "\n\n## Recommendation per device\n\n"
        + "\n".join(recommendations)
        + "\n\n## Conditions\n\n"
        + "\n".join(conditions)
        + "\n"
    )


def merged_pareto_plot(results_list: list[Results], path, analysed=None) -> bool:
    """Accuracy against latency, one panel per device setting; False when nothing has both."""
    from edgepipe.report.plots import pareto_plot

    all_rows, _ = analysed or analyse_many(results_list)
    points = pareto_points(all_rows)
    if points:
        pareto_plot(points, path, "Top-1 accuracy against p50 latency per device")
    return bool(points)
