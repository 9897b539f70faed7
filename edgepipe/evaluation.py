"""Classification metrics on the held-out split: top-1/top-5, per-class precision and recall,
and the confusion matrix."""

from __future__ import annotations

from typing import Any

import numpy as np


def evaluate(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Metrics of predicted ``probabilities`` (N, classes) against integer ``labels``.

    Top-5 is given when the model has more than five classes. The confusion
    matrix (rows: true class, columns: predicted class, counts) covers the
    classes that occur in the labels or the predictions, so a 1000-class
    network evaluated on a few of its classes gives a readable matrix.
    """
    labels = np.asarray(labels, dtype=np.int64)
    predicted = np.argmax(probabilities, axis=1)
    out: dict[str, Any] = {
        "images": int(len(labels)),
        "top1": float(np.mean(predicted == labels)) if len(labels) else None,
    }
    if probabilities.shape[1] > 5:
        top5 = np.argsort(-probabilities, axis=1)[:, :5]
        out["top5"] = float(np.mean(np.any(top5 == labels[:, None], axis=1)))
    shown = sorted(set(labels.tolist()) | set(predicted.tolist()))
    position = {c: i for i, c in enumerate(shown)}
    matrix = np.zeros((len(shown), len(shown)), dtype=np.int64)
    for t, p in zip(labels, predicted):
        matrix[position[int(t)], position[int(p)]] += 1
    per_class = {}
    for c in shown:
        i = position[c]
        tp, predicted_as, actual = matrix[i, i], matrix[:, i].sum(), matrix[i, :].sum()
        per_class[class_names[c]] = {
            "precision": float(tp / predicted_as) if predicted_as else None,
            "recall": float(tp / actual) if actual else None,
            "support": int(actual),
        }
    out["per_class"] = per_class
    out["confusion_matrix"] = {
        "classes": [class_names[c] for c in shown],
        "rows": "true class",
        "columns": "predicted class",
        "counts": matrix.tolist(),
    }
    return out


def format_evaluation(evaluation: dict[str, Any], limit: int = 20) -> str:
    """Per-class precision and recall as text lines (at most ``limit`` classes, worst recall first)."""
    rows = sorted(evaluation["per_class"].items(), key=lambda kv: (kv[1]["recall"] is None, kv[1]["recall"] or 0))
    width = max([len(name) for name, _ in rows] + [5])
    pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
    lines = [f"  {'class':<{width}}  {'precision':>9}  {'recall':>7}  {'images':>6}"]
    lines += [
        f"  {name:<{width}}  {pct(m['precision']):>9}  {pct(m['recall']):>7}  {m['support']:>6}"
        for name, m in rows[:limit]
    ]
    if len(rows) > limit:
        lines.append(f"  ... {len(rows) - limit} more classes in training.json")
    return "\n".join(lines)
