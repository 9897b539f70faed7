"""The rows every report shows, the Pareto frontier of accuracy against latency, and the recommendation.

One row per record (artifact x engine x device setting). Reports in Markdown,
HTML and CSV all render these rows, so they can never disagree.
"""

from __future__ import annotations

from typing import Any

from edgepipe.defaults import ACCURACY_BUDGET_PP
from edgepipe.report.literal import md_code, md_text
from edgepipe.results import Record, Results, verification_skipped

DEFAULT_BUDGET_PP = ACCURACY_BUDGET_PP


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
    reference = {
        (r.threads, r.batch_size): r
        for r in reversed(results.records)  # the first (cpu) one wins
        if r.format == results.reference_format and r.latency_ms
    }
    labels = (results.heldout or {}).get("labels")
    for r in results.records:
        lat = r.latency_ms or {}
        ref = reference.get((r.threads, r.batch_size))
        efficiency = r.efficiency or {}
        memory = r.memory or {}
        spread = (r.rounds or {}).get("spread")
        usable = results.device.get("usable_cores")
        oversubscribed = r.oversubscribed
        if oversubscribed is None and lat and r.threads and usable:  # files from before it was recorded
            oversubscribed = r.threads > usable
        out.append(
            {
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
                "top1_interval": _top1_interval(r, labels),
                "top5": r.top5,
                "top1_change_pp": r.top1_change_pp,
                "agreement": (r.agreement_with_reference or {}).get("top1_agreement"),
                "verification": _verification(results, r),
                "verification_reason": verification_skipped(r.verification),
                "load_ms": r.load_ms,
                "first_inference_ms": r.first_inference_ms,
                **{f"{k}_ms": lat.get(k) for k in ("min", "mean", "std", "p50", "p90", "p95", "p99", "max")},
                "iterations": lat.get("iterations"),
                "images_per_s": lat.get("images_per_s"),
                "rounds_spread": spread,
                "rounds_p50_ms": (r.rounds or {}).get("p50_ms"),
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
                "oversubscribed": oversubscribed,
                "usable_cores": usable,
                "cpu_quota": results.device.get("cpu_quota"),
                "reference": r.format == results.reference_format,
                "reference_format": results.reference_format,
            }
        )
    return out


def _verification(results: Results, record: Record) -> str | None:
    """The verification cell: reference, passed, failed, skipped (its reason is a column of its own), or None."""
    if record.format == results.reference_format:
        return "reference"
    if verification_skipped(record.verification):
        return "skipped"
    return None if record.verified is None else ("passed" if record.verified else "failed")


def _top1_interval(record, labels: list[int] | None) -> list[float] | None:
    """The record's top-1 95% bootstrap interval in percent over the held-out images, from its per-image
    predictions; None when the file has none to pair with the labels (files from before they were recorded)."""
    if record.top1 is None or not labels or not record.predictions or len(record.predictions) != len(labels):
        return None
    import numpy as np

    from edgepipe.significance import top1_interval

    return top1_interval(np.asarray(record.predictions) == np.asarray(labels))[1]


def pareto(all_rows: list[dict[str, Any]], budget_pp: float = DEFAULT_BUDGET_PP) -> dict[str, dict[str, Any]]:
    """Mark the frontier (no other artifact is both faster and at least as accurate) in each setting,
    and pick per setting the fastest artifact whose top-1 is within ``budget_pp`` of the FP32 reference;
    when others are tied with the fastest (see :func:`tied`), the pick among them follows :func:`choose`.

    Returns {setting: {"recommended": row or None, "reference_top1": float or None, "reason": str,
    "tied": the rows tied with the fastest, the fastest first (empty when nothing is tied)}}.
    """
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for row in all_rows:
        row["frontier"] = False
        row["recommended"] = False
        by_setting.setdefault(row["setting"], []).append(row)
    verdicts = {}
    for setting, group in by_setting.items():
        if len(by_setting) > 1 and all(r["threads"] is None and not r["usable"] for r in group):
            continue  # the records that were never measured (skipped, failed): no setting to recommend in
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
            eligible, basis = points, "no FP32 accuracy to budget against"
            reason = "fastest artifact (no FP32 accuracy to budget against)" if points else "nothing was measured"
        else:
            floor = reference["top1"] - budget_pp / 100
            eligible = [r for r in points if r["top1"] is not None and r["top1"] >= floor - 1e-12]
            basis = f"within {budget_pp:g} pp of {reference['format']} top-1 ({reference['top1'] * 100:.2f}%)"
            reason = f"fastest {basis}"
        ties = tie_group(eligible)
        choice = choose(ties) if ties else (eligible[0] if eligible else None)
        if ties:
            reason = f"{basis}; {tie_text(ties, choice)}"
        if choice is not None:
            choice["recommended"] = True
        verdicts[setting] = {
            "recommended": choice,
            "reference_top1": reference["top1"] if reference else None,
            "reason": reason,
            "tied": ties,
        }
    return verdicts


def round_range(row: dict[str, Any]) -> tuple[float, float]:
    """(fastest, slowest) of a row's interleaved rounds' p50s in ms; (p50, p50) for a row without rounds."""
    per_round = row.get("rounds_p50_ms") or []
    return (min(per_round), max(per_round)) if per_round else (row["p50_ms"], row["p50_ms"])


def tied(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two rows' latencies are within the spread of their rounds: the ranges [fastest round p50,
    slowest round p50] of the two overlap, i.e. the slower one's best round was no slower than the faster
    one's worst round, so the rounds do not order them. A row without rounds is its p50 alone."""
    low_a, high_a = round_range(a)
    low_b, high_b = round_range(b)
    return low_a <= high_b and low_b <= high_a


def tie_group(eligible: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fastest of ``eligible`` (sorted by p50) and every other row tied with it (not rows tied only with
    one of those: ties are not chained); empty when none is tied with the fastest."""
    if not eligible:
        return []
    fastest = eligible[0]
    group = [fastest] + [r for r in eligible[1:] if tied(fastest, r)]
    return group if len(group) > 1 else []


def _tie_key(row: dict[str, Any]) -> tuple:
    inf = float("inf")
    return (
        inf if row.get("p90_ms") is None else row["p90_ms"],
        inf if row.get("size_mb") is None else row["size_mb"],
        str(row["format"]),
        str(row.get("engine") or ""),
        str(row["artifact"]),
    )


def choose(group: list[dict[str, Any]]) -> dict[str, Any]:
    """The pick among tied rows: the lower p90, then the smaller file, then the name (format, engine,
    artifact) so the same results always give the same pick."""
    return min(group, key=_tie_key)


def tie_text(group: list[dict[str, Any]], choice: dict[str, Any]) -> str:
    """'`a` (p50 0.974 ms) and `b` (p50 1.027 ms) are tied within the spread of their rounds (64.8%, 8.6%);
    chose `b` by the tie rule (...): lower p90 (1.100 ms against 1.900 ms)'."""
    names = {id(r): _tie_name(r, group) for r in group}
    members = [f"{names[id(r)]} (p50 {r['p50_ms']:.3f} ms)" for r in group]
    listed = ", ".join(members[:-1]) + f" and {members[-1]}"
    spreads = ", ".join(
        "no rounds" if r.get("rounds_spread") is None else f"{r['rounds_spread'] * 100:.1f}%" for r in group
    )
    runner_up = sorted(group, key=_tie_key)[1]
    lower = "lower" if len(group) == 2 else "lowest"
    if _tie_key(choice)[0] != _tie_key(runner_up)[0]:
        why = f"{lower} p90 ({_ms(choice.get('p90_ms'))} against {_ms(runner_up.get('p90_ms'))})"
    elif _tie_key(choice)[1] != _tie_key(runner_up)[1]:
        why = (
            f"same p90 ({_ms(choice.get('p90_ms'))}), smaller file ({_mb(choice.get('size_mb'))} against "
            f"{_mb(runner_up.get('size_mb'))})"
        )
    else:
        why = "same p90 and file size, first by name"
    return (
        f"{listed} are tied within the spread of their rounds ({spreads}); chose {names[id(choice)]} by the tie "
        f"rule (lower p90, then smaller file, then name): {why}"
    )


def _tie_name(row: dict[str, Any], group: list[dict[str, Any]]) -> str:
    """`format`, with its engine when another tied row has the same format."""
    shared = sum(1 for r in group if r["format"] == row["format"]) > 1
    return f"`{row['format']}`" + (f" with {row.get('engine')}" if shared else "")


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f} ms"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} MB"


def oversubscription_lines(all_rows: list[dict[str, Any]]) -> list[str]:
    """One line per setting and thread count whose measured records ran more threads than the device's
    usable cores (CPU affinity and cgroup quota, the smaller): their latency includes threads waiting for a
    core."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in all_rows:
        if r.get("oversubscribed"):
            groups.setdefault((r["setting"], r["threads"], r.get("usable_cores"), r.get("cpu_quota")), []).append(r)
    lines = []
    for (setting, threads, usable, quota), group in groups.items():
        basis = f"cgroup CPU quota {quota:g}" if quota is not None else "CPU affinity"
        names = ", ".join(f"`{r['format']}`" + (f" with {r['engine']}" if r.get("engine") else "") for r in group)
        lines.append(
            f"{setting}: oversubscribed: {threads} thread(s) on {usable} usable core(s) ({basis}) for "
            f"{len(group)} record(s) ({names}); their latency includes threads waiting for a core."
        )
    return lines


def analyse(results: Results, budget_pp: float | None = None):
    """(rows with frontier and recommendation marked, verdict per setting) for one results file."""
    return analyse_many([results], budget_pp)


def analyse_many(results_list: list[Results], budget_pp: float | None = None):
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


def _reference_name(row: dict[str, Any]) -> str:
    """What the speed-up is against: the Keras FP32 model, or the run's own FP32 reference (the classifier
    joined on a foreign backbone, under its format's name)."""
    from edgepipe.backends import reference_format

    name = row.get("reference_format")
    return "the Keras FP32 model" if name in (None, reference_format().name) else f"the FP32 reference ({name})"


def recommendation_line(setting: str, verdict: dict[str, Any]) -> str:
    choice = verdict["recommended"]
    if choice is None:
        return f"{md_text(setting)}: no artifact qualifies ({verdict['reason']})."
    accuracy = "" if choice["top1"] is None else f", top-1 {choice['top1'] * 100:.2f}%"
    speed = (
        "" if choice["speedup_vs_keras"] is None else f", {choice['speedup_vs_keras']:.1f}x {_reference_name(choice)}"
    )
    engine = f" with {choice['engine']}" + (f" ({describe_settings(choice)})" if describe_settings(choice) else "")
    size = "" if choice["size_mb"] is None else f", {choice['size_mb']:.2f} MB"
    return (
        f"{md_text(setting)}: use {md_code(choice['format'])}{engine} (p50 {choice['p50_ms']:.3f} ms{accuracy}{size}{speed}): "
        f"{verdict['reason']}."
    )


def pareto_points(all_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "device": r["setting"],
            "label": f"{r['format']} [{r['engine']}]",
            "latency_ms": r["p50_ms"],
            "top1": r["top1"],
            "top1_interval": r["top1_interval"],
            "size_mb": r["size_mb"],
            "frontier": r["frontier"],
            "recommended": r["recommended"],
        }
        for r in all_rows
        if r["usable"] and r["top1"] is not None
    ]


CSV_COLUMNS = [
    "device",
    "setting",
    "artifact",
    "format",
    "precision",
    "engine",
    "engine_device",
    "threads",
    "batch_size",
    "size_mb",
    "top1",
    "top5",
    "top1_change_pp",
    "agreement",
    "verification",
    "verification_reason",
    "load_ms",
    "first_inference_ms",
    "min_ms",
    "mean_ms",
    "std_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "iterations",
    "images_per_s",
    "rounds_spread",
    "speedup_vs_keras",
    "rss_after_load_mb",
    "peak_rss_mb",
    "gmacs_per_s",
    "fraction_of_peak",
    "status",
    "reason",
    "oversubscribed",
]


def to_csv(all_rows: list[dict[str, Any]]) -> str:
    """One line per artifact and setting; units in the column names (ms, MB, fractions for accuracy)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in all_rows:
        writer.writerow(
            {
                k: ("" if row.get(k) is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]))
                for k in CSV_COLUMNS
            }
        )
    return out.getvalue()


__all__ = [
    "analyse",
    "analyse_many",
    "choose",
    "device_name",
    "oversubscription_lines",
    "pareto",
    "pareto_points",
    "recommendation_line",
    "rows",
    "tie_group",
    "tied",
    "to_csv",
]
