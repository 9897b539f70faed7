"""Accuracy-aware INT8: try quantization recipes in order until one stays within the accuracy budget."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from edgepipe.exporters.base import ExportContext
from edgepipe.fileio import atomic_path


@dataclass
class Attempt:
    """One recipe: ``build(path)`` writes the artifact and returns details (e.g. layers kept in float)."""

    description: str
    build: Callable[[Path], dict[str, Any]]


def within_budget(ctx: ExportContext, path: Path, attempts: list[Callable[[], Optional[Attempt]]]) -> dict[str, Any]:
    """Run attempts in order; keep the first whose validation top-1 is at most ``ctx.accuracy_budget_pp``
    below the Keras model's, else the best one. Every attempt is reported.

    Each list item is a zero-argument factory so later recipes can depend on
    what earlier ones learned (e.g. the most sensitive layers); a factory may
    return None to say it has nothing to try.
    """
    report: list[dict[str, Any]] = []
    best: Optional[tuple[float, Path, dict]] = None
    for i, factory in enumerate(attempts, start=1):
        try:
            attempt = factory()
            if attempt is None:
                continue
            candidate = ctx.workdir / f"attempt{i}-{path.name}"
            details = attempt.build(candidate)
            top1 = ctx.top1(candidate)
        except Exception as exc:  # a recipe that cannot run here is reported; the others still get their turn
            if i == 1:
                raise
            report.append({"attempt": i, "recipe": getattr(factory, "__name__", "recipe"),
                           "error": str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__})
            continue
        entry: dict[str, Any] = {"attempt": i, "recipe": attempt.description, **details}
        if top1 is None:  # no validation data: the first recipe is all we can judge
            report.append(entry)
            best = (0.0, candidate, details)
            break
        drop = (ctx.reference_top1 - top1) * 100
        entry.update(top1=top1, drop_pp=drop, within_budget=drop <= ctx.accuracy_budget_pp)
        report.append(entry)
        if best is None or top1 > best[0]:
            best = (top1, candidate, details)
        if drop <= ctx.accuracy_budget_pp:
            best = (top1, candidate, details)
            break
    assert best is not None, "no quantization recipe ran"
    with atomic_path(path) as tmp:  # the work folder may be on another filesystem: copy, then rename into place
        shutil.copyfile(best[1], tmp)
    measured = [r for r in report if "error" not in r]
    final = measured[-1] if measured[-1].get("within_budget") else max(measured, key=lambda r: r.get("top1") or 0)
    met = final.get("within_budget")
    return {
        **best[2],
        "accuracy_budget_pp": ctx.accuracy_budget_pp,
        "reference_top1": ctx.reference_top1,
        **_resolution(ctx),
        "budget_met": met,
        "chosen_attempt": final["attempt"],
        "attempts": report,
        **({} if met or ctx.reference_top1 is None else {
            "budget_note": f"no recipe stayed within {ctx.accuracy_budget_pp} pp; kept the most accurate "
                           f"(attempt {final['attempt']}, {final['drop_pp']:.2f} pp below FP32)"
                           + _coarse_note(ctx)}),
    }


def _resolution(ctx: ExportContext) -> dict[str, Any]:
    if ctx.validation is None or not len(ctx.validation[1]):
        return {}
    images = len(ctx.validation[1])
    return {"validation_images": images, "resolution_pp": 100.0 / images}


def _coarse_note(ctx: ExportContext) -> str:
    """Say so when one image of the validation split is worth more than the whole budget."""
    resolution = _resolution(ctx).get("resolution_pp")
    if resolution is None or resolution <= ctx.accuracy_budget_pp:
        return ""
    return (f"; the validation split has {len(ctx.validation[1])} images, so one changed prediction costs "
            f"{resolution:.2f} pp, more than the budget: use a larger validation split (data.val_fraction) "
            f"or a larger export.accuracy_budget_pp")
