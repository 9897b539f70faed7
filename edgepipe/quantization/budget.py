"""Accuracy-aware INT8: try quantization recipes in order until one stays within the accuracy budget."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.backends.context import ExportContext
from edgepipe.errors import first_line
from edgepipe.fileio import atomic_path
from edgepipe.progress import step
from edgepipe.results import Int8Budget
from edgepipe.significance import describe, paired_comparison


@dataclass
class Attempt:
    """One recipe: ``build(path)`` writes the artifact and returns details (e.g. layers kept in float)."""

    description: str
    build: Callable[[Path], dict[str, Any]]


@dataclass
class Skipped:
    """What a recipe factory returns when its recipe does not apply here: shown in the record and the report."""

    reason: str


@dataclass(frozen=True)
class Recipe:
    """One INT8 recipe: its name (what the record and the report call it when it is skipped or cannot run), the
    zero-argument factory that makes its Attempt when its turn comes (so it can use what earlier recipes learned;
    it returns None when it has nothing to try, or Skipped with the reason), and whether it is costly enough to be
    skipped when the loss so far is within chance (``needs_real_loss``)."""

    name: str
    factory: Callable[[], Attempt | Skipped | None]
    needs_real_loss: bool = False

    def __call__(self) -> Attempt | Skipped | None:
        """The recipe's attempt (the factory's answer)."""
        return self.factory()


@dataclass
class _Kept:
    """The attempt kept so far: its validation top-1 (0 when unjudged), file, details and number."""

    top1: float
    path: Path
    details: dict[str, Any]
    attempt: int


def within_budget(ctx: ExportContext, path: Path, format_name: str, recipes: list[Recipe]) -> dict[str, Any]:
    """Try ``recipes`` in order; keep the first whose validation top-1 is at most ``ctx.accuracy_budget_pp``
    below the Keras model's, else the most accurate one. Every recipe is reported (with its time); one that is
    skipped or raises is reported with its reason (the first one's error is raised: there is nothing to keep).

    A recipe with ``needs_real_loss`` is skipped, with the reason, when the best recipe so far is not
    distinguishable from FP32. Returns the kept attempt's details with its Int8Budget under ``int8_budget``.
    """
    report: list[dict[str, Any]] = []
    comparisons: dict[int, dict[str, Any]] = {}
    best: _Kept | None = None
    for i, recipe in enumerate(recipes, start=1):
        start = time.perf_counter()
        try:
            noise = _loss_within_noise(comparisons, best) if recipe.needs_real_loss else None
            attempt = Skipped(noise) if noise else recipe()
            if attempt is None:
                continue
            if isinstance(attempt, Skipped):
                report.append({"attempt": i, "recipe": recipe.name, "skipped": attempt.reason})
                ctx.echo(f"    attempt {i} ({report[-1]['recipe']}): not tried: {attempt.reason}")
                continue
            candidate = ctx.workdir / f"attempt{i}-{path.name}"
            with step(ctx.echo, f"    attempt {i}: {attempt.description}"):
                details = attempt.build(candidate)
                evaluation = ctx.score(candidate, format_name) if ctx.score else None
        except Exception as exc:  # a recipe that cannot run here is reported; the others still get their turn
            if i == 1:
                raise
            report.append(
                {
                    "attempt": i,
                    "recipe": recipe.name,
                    "error": first_line(exc),
                    "seconds": round(time.perf_counter() - start, 2),
                }
            )
            continue
        entry: dict[str, Any] = {
            "attempt": i,
            "recipe": attempt.description,
            **details,
            "seconds": round(time.perf_counter() - start, 2),
        }
        if evaluation is not None:
            ctx.echo(f"    attempt {i}: validation top-1 {evaluation.top1:.2%} ({entry['seconds']:.1f} s)")
        if evaluation is None:  # no validation data: the first recipe is all we can judge
            report.append(entry)
            best = _Kept(0.0, candidate, details, i)
            break
        drop = (ctx.reference_top1 - evaluation.top1) * 100
        entry.update(top1=evaluation.top1, drop_pp=drop, within_budget=drop <= ctx.accuracy_budget_pp)
        if ctx.reference_probabilities is not None:
            comparisons[i] = paired_comparison(
                evaluation.probabilities.argmax(1),
                ctx.reference_probabilities.argmax(1),
                ctx.validation_labels,
                ctx.labels,
            )
            entry.update(
                lost=comparisons[i]["lost"], gained=comparisons[i]["gained"], mcnemar_p=comparisons[i]["mcnemar_p"]
            )
        report.append(entry)
        if best is None or evaluation.top1 > best.top1 or drop <= ctx.accuracy_budget_pp:
            best = _Kept(evaluation.top1, candidate, details, i)
        if drop <= ctx.accuracy_budget_pp:
            break
    assert best is not None, "no quantization recipe ran"
    with atomic_path(path) as tmp:  # copy, then rename into place (the work folder may be another filesystem)
        shutil.copyfile(best.path, tmp)
    kept = next(r for r in report if r["attempt"] == best.attempt)
    met = kept.get("within_budget") if ctx.score else None
    budget = Int8Budget(
        budget_pp=ctx.accuracy_budget_pp,
        met=met,
        chosen_attempt=best.attempt,
        attempts=report,
        reference_top1=ctx.reference_top1,
        validation_images=ctx.validation_count,
        kept_higher_precision=list(kept.get("kept_float") or []),
        significance=comparisons.get(best.attempt),
        note=None if met is not False else _note(ctx, kept, comparisons.get(best.attempt)),
    )
    return {**best.details, "int8_budget": budget}


def _loss_within_noise(comparisons: dict[int, dict[str, Any]], best: _Kept | None) -> str | None:
    """Why a costly recipe is not worth trying: the best recipe so far loses no more than chance explains
    (McNemar's exact test against FP32 on the validation split); None when the loss is real or unknown."""
    if best is None or best.attempt not in comparisons:
        return None
    comparison = comparisons[best.attempt]
    if comparison["distinguishable"]:
        return None
    return (
        f"the most accurate recipe so far (attempt {best.attempt}: {comparison['lost']} image(s) lost, "
        f"{comparison['gained']} gained) is not distinguishable from FP32 (McNemar exact p = "
        f"{comparison['mcnemar_p']:.3g}): a larger validation split would tell"
    )


def _note(ctx: ExportContext, kept: dict[str, Any], comparison: dict[str, Any] | None) -> str:
    note = (
        f"no recipe stayed within {ctx.accuracy_budget_pp} pp; kept the most accurate "
        f"(attempt {kept['attempt']}, {kept['drop_pp']:.2f} pp below FP32)"
    )
    if comparison is not None:
        note += "; on the validation split " + describe(comparison)
    images = ctx.validation_count
    if images and 100.0 / images > ctx.accuracy_budget_pp:  # one image is worth more than the whole budget
        note += (
            f"; the validation split has {images} images, so one changed prediction costs "
            f"{100.0 / images:.2f} pp, more than the budget: use a larger validation split (data.val_fraction) "
            f"or a larger export.accuracy_budget_pp"
        )
    return note
