"""The rows every report shows, the Pareto frontier of accuracy against latency, and the recommendation.

One row per record (artifact x engine x device setting). Reports in Markdown,
HTML and CSV all render these rows, so they can never disagree.
"""

from __future__ import annotations

from typing import Any, Optional

from edgepipe.report.literal import md_code, md_text
from edgepipe.results import Results

DEFAULT_BUDGET_PP = 1.0


def device_name(results: Results) -> str:
    device = results.device
    name = device.get("board_model") or device.get("cpu_model") or "unknown device"
    return f"{name} ({device.get('hostname', '?')})"


def setting_label(results: Results, record) -> str:
    """The conditions artifacts are compared under: machine, device, threads and batch (engines compete within);
    tuned records compete with each one's best settings, whatever thread count that is."""
    threads = "tuned settings" if record.tuning else f"{record.threads} thread(s)"
    return f"{device_name(results)}, {record.device or 'cpu'}, {threads}, batch {record.batch_size}"


def rows(results: Results) -> list[dict[str, Any]]:
    """Flat rows for one results file; speed-up is against the FP32 reference model in the same setting."""
    out = []
    reference = {(r.threads, r.batch_size): r for r in reversed(results.records)  # the first (cpu) one wins
                 if r.format == results.reference_format and r.latency_ms}
    for r in results.records:
        lat = r.latency_ms or {}
        ref = reference.get((r.threads, r.batch_size))
        efficiency = r.efficiency or {}
        memory = r.memory or {}
        spread = (r.rounds or {}).get("spread")
        out.append({
            "device": device_name(results),
            "setting": setting_label(results, r),
            "artifact": r.artifact,
            "format": r.format or r.artifact,
            "precision": r.precision,
            "engine": r.engine,
            "engine_device": r.device,
            "threads": r.threads,
            "batch_size": r.batch_size,
            "engine_settings": r.settings,
            "size_mb": r.size_mb,
            "top1": r.top1,
            "top5": r.top5,
            "top1_change_pp": r.top1_change_pp,
            "agreement": (r.agreement_with_reference or {}).get("top1_agreement"),
            "verification": "reference" if r.format == results.reference_format else
                            (None if r.verified is None else ("passed" if r.verified else "failed")),
            "load_ms": r.load_ms,
            "first_inference_ms": r.first_inference_ms,
            **{f"{k}_ms": lat.get(k) for k in ("min", "mean", "std", "p50", "p90", "p95", "p99", "max")},
            "iterations": lat.get("iterations"),
            "images_per_s": lat.get("images_per_s"),
            "rounds_spread": spread,
            "speedup_vs_keras": (ref.latency_ms["p50"] / lat["p50"]) if ref and lat.get("p50") else None,
            "rss_after_load_mb": memory.get("rss_after_load_mb"),
            "peak_rss_mb": memory.get("peak_rss_mb"),
            "gmacs_per_s": efficiency.get("gmacs_per_s"),
            "fraction_of_peak": efficiency.get("fraction_of_peak"),
            "peak_basis": efficiency.get("peak_basis"),
            "status": r.status.value,
            "reason": r.reason,
            "usable": r.usable,
            "tuned": bool(r.tuning),
            "reference": r.format == results.reference_format,
        })
    return out


def pareto(all_rows: list[dict[str, Any]], budget_pp: float = DEFAULT_BUDGET_PP) -> dict[str, dict[str, Any]]:
    """Mark the frontier (no other artifact is both faster and at least as accurate) in each setting,
    and pick per setting the fastest artifact whose top-1 is within ``budget_pp`` of the FP32 reference.

    Returns {setting: {"recommended": row or None, "reference_top1": float or None, "reason": str}}.
    """
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for row in all_rows:
        row["frontier"] = False
        row["recommended"] = False
        by_setting.setdefault(row["setting"], []).append(row)
    verdicts = {}
    for setting, group in by_setting.items():
        points = sorted((r for r in group if r["usable"]), key=lambda r: r["p50_ms"])
        best = -1.0
        for r in points:  # fastest first: on the frontier when more accurate than everything faster
            if r["top1"] is not None and r["top1"] > best:
                r["frontier"] = True
                best = r["top1"]
        fp32 = [r for r in points if r["precision"] == "fp32" and r["top1"] is not None]
        references = [r for r in fp32 if r["reference"]]
        reference = (references or sorted(fp32, key=lambda r: -r["top1"]) or [None])[0]
        if reference is None:
            choice = points[0] if points else None
            reason = "fastest artifact (no FP32 accuracy to budget against)" if choice else "nothing was measured"
        else:
            floor = reference["top1"] - budget_pp / 100
            within = [r for r in points if r["top1"] is not None and r["top1"] >= floor - 1e-12]
            choice = within[0] if within else None
            reason = (f"fastest within {budget_pp:g} pp of {reference['format']} top-1 "
                      f"({reference['top1'] * 100:.2f}%)")
        if choice is not None:
            choice["recommended"] = True
        verdicts[setting] = {"recommended": choice, "reference_top1": reference["top1"] if reference else None,
                             "reason": reason}
    return verdicts


def analyse(results: Results, budget_pp: Optional[float] = None):
    """(rows with frontier and recommendation marked, verdict per setting) for one results file."""
    return analyse_many([results], budget_pp)


def analyse_many(results_list: list[Results], budget_pp: Optional[float] = None):
    """analyse() over several results files (e.g. devices), judged by the first file's budget."""
    if budget_pp is None:
        first = results_list[0].accuracy_budget_pp if results_list else None
        budget_pp = DEFAULT_BUDGET_PP if first is None else first
    table_rows = [row for results in results_list for row in rows(results)]
    return table_rows, pareto(table_rows, budget_pp)


def describe_settings(row: dict[str, Any]) -> str:
    """The engine settings a row was measured with, as text (threads only when they were tuned)."""
    shown = {k: v for k, v in (row.get("engine_settings") or {}).items() if k != "threads" or row.get("tuned")}
    return ", ".join(f"{k} {v}" for k, v in shown.items())


def recommendation_line(setting: str, verdict: dict[str, Any]) -> str:
    choice = verdict["recommended"]
    if choice is None:
        return f"{md_text(setting)}: no artifact qualifies ({verdict['reason']})."
    accuracy = "" if choice["top1"] is None else f", top-1 {choice['top1'] * 100:.2f}%"
    speed = "" if choice["speedup_vs_keras"] is None else f", {choice['speedup_vs_keras']:.1f}x the Keras FP32 model"
    engine = f" with {choice['engine']}" + (f" ({describe_settings(choice)})" if describe_settings(choice) else "")
    size = "" if choice["size_mb"] is None else f", {choice['size_mb']:.2f} MB"
    return (f"{md_text(setting)}: use {md_code(choice['format'])}{engine} (p50 {choice['p50_ms']:.3f} ms{accuracy}{size}{speed}): "
            f"{verdict['reason']}.")


def pareto_points(all_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"device": r["setting"], "label": f"{r['format']} [{r['engine']}]", "latency_ms": r["p50_ms"],
             "top1": r["top1"], "size_mb": r["size_mb"], "frontier": r["frontier"], "recommended": r["recommended"]}
            for r in all_rows if r["usable"] and r["top1"] is not None]


CSV_COLUMNS = ["device", "setting", "artifact", "format", "precision", "engine", "engine_device", "threads",
               "batch_size", "size_mb", "top1", "top5", "top1_change_pp", "agreement", "verification", "load_ms",
               "first_inference_ms", "min_ms", "mean_ms", "std_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms",
               "iterations", "images_per_s", "rounds_spread", "speedup_vs_keras", "rss_after_load_mb", "peak_rss_mb",
               "gmacs_per_s", "fraction_of_peak", "status", "reason"]


def to_csv(all_rows: list[dict[str, Any]]) -> str:
    """One line per artifact and setting; units in the column names (ms, MB, fractions for accuracy)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in all_rows:
        writer.writerow({k: ("" if row.get(k) is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]))
                         for k in CSV_COLUMNS})
    return out.getvalue()


__all__ = ["analyse", "analyse_many", "device_name", "pareto", "pareto_points", "recommendation_line",
           "rows", "to_csv"]
