"""Top-1/top-5, per-class precision and recall, and the confusion matrix."""

import numpy as np
import pytest

from edgepipe.evaluation import evaluate, format_evaluation


def _onehot(predicted, classes):
    return np.eye(classes)[predicted]


def test_precision_recall_and_confusion_matrix():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 0])
    result = evaluate(_onehot(predicted, 3), labels, ["a", "b", "c"])
    assert result["top1"] == pytest.approx(4 / 6)
    assert "top5" not in result  # three classes: top-5 is meaningless
    assert result["per_class"]["a"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3), "support": 3}
    assert result["per_class"]["b"]["precision"] == pytest.approx(2 / 3) and result["per_class"]["b"]["recall"] == 1.0
    assert result["per_class"]["c"] == {"precision": None, "recall": 0.0, "support": 1}
    assert result["confusion_matrix"]["counts"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert "c" in format_evaluation(result)


def test_top5_and_matrix_restricted_to_classes_seen():
    rng = np.random.default_rng(0)
    probabilities = rng.random((4, 1000)) * 0.1
    labels = np.array([3, 3, 7, 900])
    probabilities[np.arange(4), labels] += 0.5  # right class ranks first...
    probabilities[3, 11] += 0.9  # ...except here, where it is second
    result = evaluate(probabilities, labels, [f"c{i}" for i in range(1000)])
    assert result["top1"] == pytest.approx(0.75) and result["top5"] == pytest.approx(1.0)
    assert result["confusion_matrix"]["classes"] == ["c3", "c7", "c11", "c900"]
