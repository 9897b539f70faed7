"""The Markdown report: one row per artifact, with the conditions every number was measured under."""

from __future__ import annotations

from typing import Any, Optional


def _fmt(value: Optional[float], spec: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def artifact_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| artifact | format | precision | runtime | size (MB) | top-1 (%) | Δ top-1 vs Keras FP32 (pp) | agreement with Keras (%) | p50 (ms) | p90 (ms) | p99 (ms) | images/s | status |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results["records"]:
        lat = r.get("latency_ms") or {}
        agree = (r.get("agreement_with_reference") or {}).get("top1_agreement")
        status = r["status"] if r["status"] == "ok" else f"**{r['status']}**: {r.get('reason')}"
        lines.append(
            f"| `{r['file']}` | {r['format']} | {r['precision']} | {r.get('runtime', '–')} | {_fmt(r.get('size_mb'), '.2f')} "
            f"| {_fmt(None if r.get('top1') is None else r['top1'] * 100, '.2f')} "
            f"| {_fmt(r.get('top1_change_pp'), '+.2f')} "
            f"| {_fmt(None if agree is None else agree * 100, '.1f')} "
            f"| {_fmt(lat.get('p50'), '.3f')} | {_fmt(lat.get('p90'), '.3f')} | {_fmt(lat.get('p99'), '.3f')} "
            f"| {_fmt(lat.get('images_per_s'), '.1f')} | {status} |"
        )
    return lines


def render(results: dict[str, Any]) -> str:
    arch = results.get("architecture", {})
    device = results["device"]
    cond = results["conditions"]
    held = results["heldout"]
    title = arch.get("architecture", "model")
    if arch.get("alpha") is not None:
        title += f" (alpha {arch['alpha']})"
    lines = [
        f"# edgepipe report: {title}",
        "",
        f"- Input: {arch.get('input_size')}x{arch.get('input_size')}x{arch.get('channels')} raw pixels; "
        f"{arch.get('num_classes')} classes; {arch.get('params', 0):,} parameters; weights: {arch.get('weights')}.",
        f"- Training: strategy `{results['training'].get('strategy')}` on {results['training'].get('train_images')} images.",
        f"- Accuracy: top-1 on the held-out `{held['split']}` split, {held['images']} images, through each artifact's own runtime.",
        f"- Latency: {device['cpu_model']} ({device['usable_cores']} usable cores, {device['machine']}), "
        f"{cond['threads']} thread(s), batch {cond['batch_size']}, {cond['warmup']} warm-up calls, then at least "
        f"{cond['min_iterations']} calls and {cond['min_duration_s']} s; {cond['timing']}.",
        "",
        "## Artifacts",
        "",
        *artifact_table(results),
        "",
    ]
    baseline = results.get("baseline_from_scratch")
    if baseline:
        reference = next((r for r in results["records"] if r["format"] == results["reference_format"]), {})
        gain = None if reference.get("top1") is None else (reference["top1"] - baseline["top1"]) * 100
        lines += [
            "## Transfer against training from scratch",
            "",
            "| model | top-1 (%) on held-out |",
            "|---|--:|",
            f"| transfer ({results['training'].get('strategy')}), Keras FP32 | {_fmt(None if reference.get('top1') is None else reference['top1'] * 100, '.2f')} |",
            f"| same network trained from scratch on the target data alone ({baseline['epochs']} epochs) | {baseline['top1'] * 100:.2f} |",
            "",
            f"Gain from transfer: {_fmt(gain, '+.2f')} percentage points.",
            "",
        ]
    budgets = [r for r in results["records"] if r.get("int8_budget")]
    if budgets:
        lines += ["## INT8 accuracy budget", ""]
        for r in budgets:
            b = r["int8_budget"]
            verdict = "met" if b["budget_met"] else "**not met**"
            lines.append(f"- `{r['format']}`: budget {b['accuracy_budget_pp']} pp of validation top-1, {verdict} "
                         f"(attempt {b['chosen_attempt']} kept)." + (f" {b['budget_note']}." if b.get("budget_note") else ""))
            for a in b["attempts"]:
                if "error" in a:
                    lines.append(f"  - attempt {a['attempt']} ({a['recipe']}): could not run: {a['error']}")
                elif a.get("top1") is not None:
                    kept = f"; kept in float: {', '.join(a['kept_float'])}" if a.get("kept_float") else ""
                    lines.append(f"  - attempt {a['attempt']}: {a['recipe']}: top-1 {a['top1'] * 100:.2f}%, "
                                 f"{a['drop_pp']:+.2f} pp below FP32{kept}")
        lines.append("")
    calibration = results.get("calibration")
    if calibration:
        lines += [f"INT8 calibration set: {calibration['images']} training images (seed {calibration['seed']}), "
                  f"sha256 `{calibration['sha256'][:16]}`.", ""]
    lines += [f"Measured {results['created']} with edgepipe {results['edgepipe']}; results schema `{results['schema']}`.", ""]
    return "\n".join(lines)
