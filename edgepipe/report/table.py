"""The rows every report shows, the Pareto frontier of accuracy against latency, and the recommendation.

One row per measured record (artifact x device setting). Reports in Markdown,
HTML and CSV all render these rows, so they can never disagree.
"""

from __future__ import annotations

from typing import Any, Optional

from edgepipe.report.merge import device_name

DEFAULT_BUDGET_PP = 1.0


def setting_label(results: dict[str, Any], record: dict[str, Any]) -> str:
    engine_device = record.get("device") or "cpu"
    return f"{device_name(results)}, {engine_device}, {record.get('threads')} thread(s), batch {record.get('batch_size')}"


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows for one results file; speed-up is against the FP32 Keras model in the same setting."""
    out = []
    records = results.get("records", [])
    reference = {(r.get("threads"), r.get("batch_size")): r for r in reversed(records)  # the first (cpu) one wins
                 if r["format"] == results.get("reference_format") and r.get("latency_ms")}
    for r in records:
        lat = r.get("latency_ms") or {}
        ref = reference.get((r.get("threads"), r.get("batch_size")))
        efficiency = r.get("efficiency") or {}
        agreement = r.get("agreement_with_reference") or {}
        out.append({
            "device": device_name(results),
            "setting": setting_label(results, r),
            "artifact": r.get("file"),
            "format": r["format"],
            "precision": r.get("precision") or _precision_of(r["format"]),
            "runtime": r.get("runtime"),
            "threads": r.get("threads"),
            "batch_size": r.get("batch_size"),
            "size_mb": r.get("size_mb"),
            "top1": r.get("top1"),
            "top5": r.get("top5"),
            "top1_change_pp": r.get("top1_change_pp"),
            "agreement": agreement.get("top1_agreement"),
            "verification": _verification(r, results),
            "load_ms": r.get("load_ms"),
            "first_inference_ms": r.get("first_inference_ms"),
            **{f"{k}_ms": lat.get(k) for k in ("min", "mean", "std", "p50", "p90", "p95", "p99", "max")},
            "iterations": lat.get("iterations"),
            "images_per_s": lat.get("images_per_s"),
            "speedup_vs_keras": (ref["latency_ms"]["p50"] / lat["p50"]) if ref and lat.get("p50") else None,
            "gmacs_per_s": efficiency.get("gmacs_per_s"),
            "fraction_of_peak": efficiency.get("fraction_of_peak"),
            "peak_basis": efficiency.get("peak_basis"),
            "status": r["status"],
            "reason": r.get("reason"),
        })
    return out


def _verification(record: dict[str, Any], results: dict[str, Any]) -> Optional[str]:
    if record["format"] == results.get("reference_format"):
        return "reference"
    verification = record.get("verification")
    if not verification:
        return None
    return "passed" if verification.get("passed") else "failed"


def _precision_of(fmt: str) -> Optional[str]:
    for p in ("int16x8", "int8", "fp16", "fp32", "dynamic"):
        if fmt.endswith(p):
            return p
    return None


def usable(row: dict[str, Any]) -> bool:
    """Measured and not failed: may appear on the frontier and be recommended."""
    return row["status"] == "ok" and row.get("p50_ms") is not None and row.get("verification") != "failed"


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
        points = sorted((r for r in group if usable(r)), key=lambda r: r["p50_ms"])
        best = -1.0
        for r in points:  # fastest first: on the frontier when more accurate than everything faster
            if r["top1"] is not None and r["top1"] > best:
                r["frontier"] = True
                best = r["top1"]
        fp32 = [r for r in points if r["precision"] == "fp32" and r["top1"] is not None]
        keras = [r for r in fp32 if r["format"].startswith("keras")]
        reference = (keras or sorted(fp32, key=lambda r: -r["top1"]) or [None])[0]
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


def analyse(results: dict[str, Any], budget_pp: Optional[float] = None):
    """(rows with frontier and recommendation marked, verdict per setting) for one results file."""
    budget_pp = results.get("accuracy_budget_pp", DEFAULT_BUDGET_PP) if budget_pp is None else budget_pp
    table_rows = rows(results)
    return table_rows, pareto(table_rows, budget_pp)


def analyse_many(results_list: list[dict[str, Any]]):
    """analyse() over several results files (e.g. devices), judged by the first file's budget."""
    budget_pp = results_list[0].get("accuracy_budget_pp", DEFAULT_BUDGET_PP) if results_list else DEFAULT_BUDGET_PP
    table_rows = [row for results in results_list for row in rows(results)]
    return table_rows, pareto(table_rows, budget_pp)


def recommendation_line(setting: str, verdict: dict[str, Any]) -> str:
    choice = verdict["recommended"]
    if choice is None:
        return f"{setting}: no artifact qualifies ({verdict['reason']})."
    accuracy = "" if choice["top1"] is None else f", top-1 {choice['top1'] * 100:.2f}%"
    speed = "" if choice["speedup_vs_keras"] is None else f", {choice['speedup_vs_keras']:.1f}x the Keras FP32 model"
    return (f"{setting}: use `{choice['format']}` (p50 {choice['p50_ms']:.3f} ms{accuracy}, "
            f"{choice['size_mb']:.2f} MB{speed}): {verdict['reason']}.")


def pareto_points(all_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"device": r["setting"], "label": r["format"], "latency_ms": r["p50_ms"], "top1": r["top1"],
             "size_mb": r["size_mb"], "frontier": r["frontier"], "recommended": r["recommended"]}
            for r in all_rows if usable(r) and r["top1"] is not None]


CSV_COLUMNS = ["device", "setting", "artifact", "format", "precision", "runtime", "threads", "batch_size", "size_mb",
               "top1", "top5", "top1_change_pp", "agreement", "verification", "load_ms", "first_inference_ms",
               "min_ms", "mean_ms", "std_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "iterations",
               "images_per_s", "speedup_vs_keras", "gmacs_per_s", "fraction_of_peak", "status", "reason"]


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
