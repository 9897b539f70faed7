"""Is an artifact's accuracy change against the FP32 model distinguishable from chance?

Both models predict the same images, so the comparison is paired: only the images
where exactly one of them is right carry information. McNemar's exact test asks
whether "lost" (FP32 right, artifact wrong) and "gained" (the reverse) differ by
more than a fair coin would make them; a bootstrap over images gives a 95% interval
of the top-1 difference. With a hundred images, losing two or three is usually not
distinguishable from no change, and the report says so instead of a bare "not met".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: the conventional level below which a change is called distinguishable from zero
ALPHA = 0.05
BOOTSTRAP_SAMPLES = 2000


def mcnemar_exact(lost: int, gained: int) -> float:
    """Two-sided exact McNemar p-value: P(a split of lost+gained discordant images at least this uneven
    under a fair coin). 1.0 when no image changed."""
    n = lost + gained
    if n == 0:
        return 1.0
    k = min(lost, gained)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def mcnemar_one_sided(lost: int, gained: int) -> float:
    """One-sided exact McNemar p-value for a loss: P(at least ``lost`` of the lost+gained discordant images
    lost under a fair coin). What a regression gate asks: is the artifact worse, not merely different."""
    n = lost + gained
    if n == 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(lost, n + 1)) / 2.0**n


def bootstrap_interval(
    correct: np.ndarray, reference_correct: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of (top-1 of the artifact - top-1 of the reference), in percentage points,
    resampling images with replacement (seeded, so a report is reproducible)."""
    n = len(correct)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(samples, n))
    difference = (correct[picks].mean(axis=1) - reference_correct[picks].mean(axis=1)) * 100
    low, high = np.percentile(difference, [2.5, 97.5])
    return float(low), float(high)


def top1_interval(correct: np.ndarray) -> tuple[float, list[float]]:
    """Top-1 in percent of one model over images (``correct``: True where its top-1 class is right) and its 95%
    bootstrap interval (``bootstrap_interval`` against a model that is never right, which makes the difference
    the top-1 itself), rounded to 0.01 percentage points. The plots draw this interval for every point."""
    correct = np.asarray(correct, dtype=bool)
    low, high = bootstrap_interval(correct, np.zeros_like(correct))
    return float(correct.mean() * 100), [round(low, 2), round(high, 2)]


def paired_comparison(
    predictions: np.ndarray,
    reference_predictions: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """An artifact against the reference on the same images (top-1 class indices and true labels):
    images gained and lost, the top-1 difference in percentage points with its bootstrap 95% interval,
    McNemar's exact p-value, whether the difference is distinguishable from zero at ``alpha``, and the
    recall change of every class whose recall changed."""
    predictions, reference_predictions, labels = (
        np.asarray(a, dtype=np.int64) for a in (predictions, reference_predictions, labels)
    )
    correct, reference_correct = predictions == labels, reference_predictions == labels
    lost = int(np.sum(reference_correct & ~correct))
    gained = int(np.sum(~reference_correct & correct))
    p_value = mcnemar_exact(lost, gained)
    low, high = bootstrap_interval(correct, reference_correct) if len(labels) else (0.0, 0.0)
    recall_change = {}
    for c in np.unique(labels):
        members = labels == c
        change = (correct[members].mean() - reference_correct[members].mean()) * 100
        if change != 0:
            name = class_names[c] if class_names is not None and c < len(class_names) else str(int(c))
            recall_change[name] = round(float(change), 2)
    return {
        "images": int(len(labels)),
        "gained": gained,
        "lost": lost,
        "top1_difference_pp": float((correct.mean() - reference_correct.mean()) * 100) if len(labels) else 0.0,
        "interval_95_pp": [round(low, 3), round(high, 3)],
        "mcnemar_p": p_value,
        "alpha": alpha,
        "distinguishable": p_value < alpha,
        "recall_change_pp": recall_change,
    }


def describe(comparison: dict[str, Any]) -> str:
    """One sentence for reports: what changed and whether it can be told apart from chance."""
    verdict = (
        "distinguishable from no change" if comparison["distinguishable"] else "not distinguishable from no change"
    )
    low, high = comparison["interval_95_pp"]
    return (
        f"{comparison['lost']} image(s) lost and {comparison['gained']} gained of {comparison['images']} "
        f"({comparison['top1_difference_pp']:+.2f} pp, 95% interval {low:+.2f} to {high:+.2f} pp); "
        f"McNemar exact p = {comparison['mcnemar_p']:.3g}: {verdict} at {comparison['alpha']:g}"
    )
