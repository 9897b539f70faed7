"""Merge results files from several devices into one table: one latency column group per device."""

from __future__ import annotations

from typing import Any


def device_name(results: dict[str, Any]) -> str:
    device = results.get("device", {})
    name = device.get("board_model") or device.get("cpu_model") or "unknown device"
    return f"{name} ({device.get('hostname', '?')})"


def merge(results_list: list[dict[str, Any]], analysed=None) -> str:
    """Markdown: one row per (artifact format, threads, batch), a p50/p90/images-per-second group per device."""
    devices = [device_name(r) for r in results_list]
    rows: dict[tuple, dict[int, dict]] = {}
    for i, results in enumerate(results_list):
        for record in results.get("records", []):
            key = (record["format"], record.get("device") or "cpu", record.get("threads"), record.get("batch_size"))
            rows.setdefault(key, {})[i] = record
    header = "| artifact | engine device | threads | batch | top-1 (%) | " + " | ".join(
        f"{d}: p50 (ms) | {d}: p90 (ms) | {d}: images/s" for d in devices) + " |"
    lines = [header, "|---|---|--:|--:|--:|" + "--:|--:|--:|" * len(devices)]
    for (fmt, engine_device, threads, batch), per_device in rows.items():
        top1 = next((r["top1"] for r in per_device.values() if r.get("top1") is not None), None)
        cells = [f"`{fmt}`", engine_device, str(threads), str(batch), "–" if top1 is None else f"{top1 * 100:.2f}"]
        for i in range(len(devices)):
            record = per_device.get(i)
            lat = (record or {}).get("latency_ms")
            if lat:
                cells += [f"{lat['p50']:.3f}", f"{lat['p90']:.3f}", f"{lat['images_per_s']:.1f}"]
            else:
                status = (record or {}).get("status", "not measured")
                cells += [status, "–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    conditions = []
    for d, results in zip(devices, results_list):
        c = results.get("conditions", {})
        conditions.append(f"- {d}: threads {c.get('threads')}, batch {c.get('batch_size', c.get('batch_sizes'))}, "
                          f"{c.get('warmup')} warm-up calls, at least {c.get('min_iterations')} calls and "
                          f"{c.get('min_duration_s')} s; measured {results.get('created')}")
    from edgepipe.report.table import analyse_many, recommendation_line

    _, verdicts = analysed or analyse_many(results_list)
    recommendations = [f"- {recommendation_line(s, v)}" for s, v in verdicts.items()]
    return ("# edgepipe: results merged across devices\n\n" + "\n".join(lines) + "\n\n## Recommendation per device\n\n"
            + "\n".join(recommendations) + "\n\n## Conditions\n\n" + "\n".join(conditions) + "\n")


def merged_pareto_plot(results_list: list[dict[str, Any]], path, analysed=None) -> bool:
    """Accuracy against latency, one panel per device setting; False when nothing has both."""
    from edgepipe.report.plots import pareto_plot
    from edgepipe.report.table import analyse_many, pareto_points

    all_rows, _ = analysed or analyse_many(results_list)
    points = pareto_points(all_rows)
    if points:
        pareto_plot(points, path, "Top-1 accuracy against p50 latency per device")
    return bool(points)
