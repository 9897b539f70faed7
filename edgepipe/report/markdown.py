"""The Markdown report (CI job summaries, pull-request comments): the accuracy and latency table,
the published reference figures, the recommendation, and links to everything else in the run."""

from __future__ import annotations

from typing import Any

from edgepipe.report.literal import md_code, md_text
from edgepipe.report.table import analyse, describe_settings, oversubscription_lines, recommendation_line
from edgepipe.results import SCHEMA, Results
from edgepipe.significance import describe

#: files of a run directory the report links to, with what they hold
LINKS = [
    ("report.html", "this report with its plots embedded"),
    ("pareto.png", "accuracy against latency, frontier marked"),
    ("dataset.json", "dataset summary: images per class and split, image sizes, rejected files"),
    ("history.png", "training curves"),
    ("history.csv", "training history"),
    ("confusion_matrix.png", "held-out confusion matrix"),
    ("training.json", "training summary, per-class precision and recall"),
    ("results.json", f"every measured number (schema {SCHEMA})"),
    ("results.csv", "the table as CSV"),
]


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def pct(value: float | None) -> str:
    return fmt(None if value is None else value * 100, ".2f")


TABLE_HEADER = [
    "artifact",
    "format",
    "precision",
    "engine",
    "setting",
    "size (MB)",
    "top-1 (%)",
    "top-5 (%)",
    "Δ top-1 vs FP32 (pp)",
    "verification",
    "p50 (ms)",
    "spread of round p50s",
    "p90 (ms)",
    "p99 (ms)",
    "images/s",
    "speed-up vs FP32 reference",
    "memory after load / peak (MB)",
    "efficiency (GMAC/s, % of peak)",
    "status",
]
#: the columns of TABLE_HEADER that hold numbers (right-aligned)
NUMERIC_COLUMNS = set(range(5, 18))


def table_cells(row: dict[str, Any]) -> list[str]:
    """The accuracy table's cells for one row, as plain text (both renderers use them)."""
    efficiency = "–"
    if row.get("gmacs_per_s") is not None:
        efficiency = f"{row['gmacs_per_s']:.1f}"
        if row.get("fraction_of_peak") is not None:
            efficiency += f" ({row['fraction_of_peak'] * 100:.1f}%)"
    status = row["status"] if row["status"] == "ok" else f"{row['status']}: {row.get('reason')}"
    marks = (" ★" if row.get("recommended") else "") + (" ◆" if row.get("frontier") else "")
    settings = describe_settings(row)
    memory = "–"
    if row.get("peak_rss_mb") is not None:
        memory = f"{fmt(row.get('rss_after_load_mb'), '.0f')} / {row['peak_rss_mb']:.0f}"
    return [
        str(row["artifact"]) + marks,
        row["format"],
        str(row["precision"] or "–"),
        str(row.get("engine") or "–"),
        (f"{row['threads']} thr, batch {row['batch_size']}" + (f", {settings}" if settings else ""))
        if row.get("threads")
        else "–",
        fmt(row.get("size_mb"), ".2f"),
        pct(row.get("top1")),
        pct(row.get("top5")),
        fmt(row.get("top1_change_pp"), "+.2f"),
        str(row.get("verification") or "–")
        + (f": {row['verification_reason']}" if row.get("verification_reason") else ""),
        fmt(row.get("p50_ms"), ".3f"),
        fmt(None if row.get("rounds_spread") is None else row["rounds_spread"] * 100, ".1f", "%"),
        fmt(row.get("p90_ms"), ".3f"),
        fmt(row.get("p99_ms"), ".3f"),
        fmt(row.get("images_per_s"), ".1f"),
        fmt(row.get("speedup_vs_keras"), ".2f", "x"),
        memory,
        efficiency,
        status,
    ]


def reference_rows(results: Results) -> list[list[str]]:
    """Published ImageNet figures of the architecture beside what this run measured."""
    arch = results.architecture or {}
    ref = arch.get("reference") or {}
    measured = results.reference
    top1, top5, size = (None, None, None) if measured is None else (measured.top1, measured.top5, measured.size_mb)
    params = ref.get("params")
    return [
        ["ImageNet top-1 (%)", fmt(ref.get("top1"), ".1f"), "– (your data: " + pct(top1) + ")"],
        ["ImageNet top-5 (%)", fmt(ref.get("top5"), ".1f"), "– (your data: " + pct(top5) + ")"],
        [
            "parameters",
            "–" if params is None else f"{params:,} ({ref.get('params_counted', 'all')})",
            "–" if arch.get("params") is None else f"{arch['params']:,} (with your head)",
        ],
        ["size (MB)", fmt(ref.get("size_mb"), ".0f"), fmt(size, ".2f")],
        ["depth", fmt(ref.get("depth"), "d"), "–"],
        ["MACs per image", "–", "–" if arch.get("macs") is None else f"{arch['macs'] / 1e6:,.1f}M"],
        ["source", ref.get("source") or "–", "this run"],
    ]


def _table(header: list[str], body: list[list[str]], right: set[int] | None = None) -> list[str]:
    right = right or set()
    lines = [
        "| " + " | ".join(md_text(h) for h in header) + " |",
        "|" + "|".join("--:" if i in right else "---" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(md_text(c) for c in cells) + " |" for cells in body]
    return lines


def summary_lines(results: Results) -> list[str]:
    arch = results.architecture or {}
    device = results.device
    cond = results.conditions
    held = results.heldout or {}
    training = results.training or {}
    lines = []
    if arch:
        lines.append(
            f"Input {arch.get('input_size')}x{arch.get('input_size')}x{arch.get('channels')} raw pixels; "
            f"{arch.get('num_classes')} classes; {arch.get('params', 0):,} parameters; "
            f"weights: {md_text(arch.get('weights'))}."
        )
    lines += classes_lines(results)
    if training.get("strategy"):
        lines.append(f"Training: strategy {md_code(training['strategy'])} on {training.get('train_images')} images.")
    if held:
        lines.append(accuracy_line(held, results.selection))
    gpu = device.get("gpu") or {}
    lines.append(
        f"Latency: {md_text(device.get('cpu_model'))} ({device.get('usable_cores')} usable cores, {device.get('machine')}"
        + (f", {device['cpu_mhz']:.0f} MHz" if device.get("cpu_mhz") else "")
        + ")"
        + (f", GPU {md_text(gpu.get('gpu_name'))}" if gpu else "")
        + (f", board {md_text(device['board_model'])}" if device.get("board_model") else "")
        + (f", power mode {md_text(device['power_mode'])}" if device.get("power_mode") else "")
        + f"; {cond.get('threads')} thread(s), batch {cond.get('batch_size', cond.get('batch_sizes'))}, warm-up at least "
        f"{cond.get('warmup')} calls and {cond.get('warmup_s', 0)} s, then at least {cond.get('min_iterations')} calls and "
        f"{cond.get('min_duration_s')} s; {cond.get('timing')}."
    )
    if results.extra.get("upgraded_from"):
        lines.append(f"Read from a results file of schema {results.extra['upgraded_from']}.")
    return lines


def accuracy_line(held: dict[str, Any], selection: dict[str, Any] | None) -> str:
    """Which split the accuracy is reported on and which split made the choices (one line); results written
    before the choosing split was recorded get the reporting split alone."""
    where = f"`{held['split']}` split, {held['images']} images"
    if held.get("carved"):
        where += f" held out of the training images ({held.get('fraction', 0):g} of each class, seeded)"
    if selection is None:
        return f"Accuracy: on the held-out {where}, through each artifact's own runtime."
    if held.get("took_part_in_choices"):
        return (
            f"Accuracy: on the {where}, through each artifact's own runtime: **the same images that made the "
            f"choices** (early stopping, INT8 recipe and budget), as {held.get('note')}; set data.test_fraction "
            "or add a test/ folder for a figure no choice has seen."
        )
    return (
        f"Accuracy: on the held-out {where}, through each artifact's own runtime; the choices (early stopping, "
        f"INT8 recipe and budget) were made on the `{selection['split']}` split, {selection['images']} images, "
        "which the reported accuracy does not use."
    )


def classes_lines(results: Results, shown: int = 20) -> list[str]:
    """The model's class names, each as written (a code span), the first ``shown`` of them."""
    names = results.classes or []
    if not names:
        return []
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return [f"Classes: {', '.join(md_code(n) for n in names[:shown])}{more}."]


def render(results: Results, budget_pp: float | None = None, files: list[str] | None = None, analysed=None) -> str:
    """The report; ``files``: names in the run directory to link (default: none); ``analysed``: what
    table.analyse returned, when the caller has it already."""
    table_rows, verdicts = analysed or analyse(results, budget_pp)
    arch = results.architecture or {}
    title = arch.get("architecture", "model") + (f" (alpha {arch['alpha']})" if arch.get("alpha") is not None else "")
    lines = [f"# edgepipe report: {md_text(title)}", ""]
    lines += [f"- {line}" for line in summary_lines(results)]
    lines += ["", "## Recommendation", ""]
    lines += [f"- {recommendation_line(s, v)}" for s, v in verdicts.items()]
    lines += [f"- {line}" for line in oversubscription_lines(table_rows)]
    lines += [
        "",
        "## Accuracy and latency",
        "",
        *_table(TABLE_HEADER, [table_cells(r) for r in table_rows], right=NUMERIC_COLUMNS),
        "",
        "★ recommended; ◆ on the Pareto frontier (nothing else is both faster and more accurate). "
        "Latency: every artifact timed in alternating rounds in one process (A B C, then C B A, ...), so drift "
        "of the machine affects them alike; the spread is (max - min) / median of the rounds' p50s. Memory: "
        "resident size after loading and peak while running, each artifact in a fresh process. "
        "Efficiency: multiply-accumulates per second at the median latency, against the CPU's estimated "
        "peak for the threads used.",
        "",
    ]
    if arch.get("reference"):
        lines += [
            "## Published reference figures",
            "",
            *_table(
                ["", f"published ({arch.get('architecture')}, ImageNet)", "measured here"], reference_rows(results)
            ),
            "",
            "ImageNet figures are for the 1000-class ImageNet validation set at the architecture's "
            "default input size; your accuracy is on your classes and held-out split.",
            "",
        ]
    lines += _baseline_section(results) + _budget_section(results) + _profile_section(results)
    calibration = results.calibration
    if calibration:
        lines += [
            f"INT8 calibration set: {calibration['images']} training images (seed {calibration['seed']}), "
            f"sha256 `{calibration['sha256'][:16]}`.",
            "",
        ]
    links = [(name, what) for name, what in LINKS if name in (files or [])]
    if links:
        lines += ["## Files", ""] + [f"- [`{name}`]({name}): {what}" for name, what in links] + [""]
    lines += [f"Measured {results.created} with edgepipe {results.edgepipe}; results schema `{SCHEMA}`.", ""]
    return "\n".join(lines)


def _baseline_section(results: Results) -> list[str]:
    baseline = results.baseline_from_scratch
    if not baseline:
        return []
    top1 = None if results.reference is None else results.reference.top1
    gain = None if top1 is None else (top1 - baseline["top1"]) * 100
    return [
        "## Transfer against training from scratch",
        "",
        "| model | top-1 (%) on held-out |",
        "|---|--:|",
        f"| transfer ({md_text((results.training or {}).get('strategy'))}), Keras FP32 | {pct(top1)} |",
        f"| same network trained from scratch on the target data alone ({baseline['epochs']} epochs) | {baseline['top1'] * 100:.2f} |",
        "",
        f"Gain from transfer: {fmt(gain, '+.2f')} percentage points.",
        "",
    ]


def budget_lines(results: Results) -> list[str]:
    lines = []
    seen = set()
    for r in results.records:
        b = r.int8_budget
        if b is None or r.format in seen:  # one budget per artifact, however many engines measured it
            continue
        seen.add(r.format)
        verdict = {True: "met", False: "**not met**", None: "not judged (no validation images)"}[b.met]
        lines.append(
            f"- {md_code(r.format)}: budget {b.budget_pp} pp of validation top-1, {verdict} "
            f"(attempt {b.chosen_attempt} kept)." + (f" {b.note}." if b.note else "")
        )
        if b.significance and b.met is not False:
            lines.append(f"  - on the validation split: {describe(b.significance)}.")
        if b.kept_higher_precision:
            lines.append(f"  - kept in higher precision: {', '.join(md_code(n) for n in b.kept_higher_precision)}")
        for a in b.attempts:
            took = f" ({a['seconds']:.1f} s)" if a.get("seconds") is not None else ""
            if "error" in a:
                lines.append(f"  - attempt {a['attempt']} ({a['recipe']}){took}: could not run: {md_text(a['error'])}")
            elif "skipped" in a:
                lines.append(f"  - attempt {a['attempt']} ({a['recipe']}): not tried: {md_text(a['skipped'])}")
            elif a.get("top1") is not None:
                kept = (
                    f"; kept in float: {', '.join(md_text(n) for n in a['kept_float'])}" if a.get("kept_float") else ""
                )
                changed = (
                    f"; {a['lost']} lost, {a['gained']} gained, McNemar p {a['mcnemar_p']:.3g}"
                    if a.get("lost") is not None
                    else ""
                )
                lines.append(
                    f"  - attempt {a['attempt']}: {a['recipe']}{took}: top-1 {a['top1'] * 100:.2f}%, "
                    f"{a['drop_pp']:+.2f} pp below FP32{changed}{kept}"
                )
            lines += sensitivity_lines(a) + qat_lines(a)
    return lines


def qat_lines(attempt: dict[str, Any]) -> list[str]:
    """What quantization-aware fine-tuning did and cost, when an attempt used it."""
    q = attempt.get("qat")
    if not q:
        return []
    line = (
        f"    - quantization-aware fine-tuning: {q.get('epochs_completed')} of {q.get('epochs')} epoch(s) on "
        f"{q.get('training_images')} training images, {q.get('training_seconds', 0):.0f} s of training "
        f"({q.get('seconds', 0):.0f} s in all)"
        + (", stopped at export.qat.max_seconds" if q.get("stopped_at_time_limit") else "")
    )
    v = q.get("validation") or {}
    if v.get("fake_quant_top1_before") is not None and v.get("fake_quant_top1_after") is not None:
        line += (
            f"; simulated int8 top-1 {v['fake_quant_top1_before']:.2%} before, {v['fake_quant_top1_after']:.2%} "
            f"after (FP32 {v['fp32_top1']:.2%})"
        )
    return [line]


def sensitivity_lines(attempt: dict[str, Any], shown: int = 5) -> list[str]:
    """The most sensitive layers an attempt measured, with their effect: what keeping each one alone in higher
    precision does to the divergence from FP32 (mean KL) and to top-1 agreement on validation images."""
    found = attempt.get("sensitivity")
    if not found or not found.get("ranked"):
        return []
    base = found.get("all_integer") or {}
    head = (
        f"    - most sensitive layers by measured effect ({found.get('candidates')} candidates on "
        f"{found.get('images')} validation images, {found.get('seconds', 0):.0f} s"
        + (f"; all integer: KL {base['kl']:.4f}, agreement {base['agreement']:.1%}" if "kl" in base else "")
        + "):"
    )
    rows = [
        f"      - {md_code(op.get('name') or op.get('op'))}"
        + (f" ({md_text(op['type'])})" if op.get("type") else "")
        + f": in higher precision alone, KL {op['kl']:.4f}"
        + (f" ({-op['kl_reduction']:+.4f})" if op.get("kl_reduction") is not None else "")
        + f", agreement {op['agreement']:.1%}"
        for op in found["ranked"][:shown]
    ]
    return [head, *rows]


def significance_lines(results: Results) -> list[str]:
    """Each artifact against the FP32 model, image by image, on the held-out split (one line per format)."""
    lines, seen = [], set()
    for r in results.records:
        if r.significance and r.format not in seen:
            seen.add(r.format)
            lines.append(f"- {md_code(r.format)}: {describe(r.significance)}.")
    return lines


def _budget_section(results: Results) -> list[str]:
    lines = budget_lines(results)
    paired = significance_lines(results)
    out = ["## INT8 accuracy budget", "", *lines, ""] if lines else []
    if paired:
        out += [
            "## Against the FP32 model, image by image",
            "",
            "Held-out images each artifact gets wrong that the Keras FP32 model gets right (lost) and the "
            "reverse (gained); McNemar's exact test says whether the difference could be chance.",
            "",
            *paired,
            "",
        ]
    return out


def _profile_section(results: Results) -> list[str]:
    """'Where the time goes': the profiles (bench --profile), rendered from edgepipe.report.profile's sections."""
    from edgepipe.report.profile import INTRO, sections

    if not results.profiles:
        return []
    out = ["## Where the time goes", "", INTRO, ""]
    for section in sections(results.profiles):
        out += [f"### {section.title}", "", *section.lines, ""]
        for table in section.tables:
            out += (
                ([f"{table.caption}:", ""] if table.caption else [])
                + _table(table.header, table.rows, table.numeric)
                + [""]
            )
    return out
