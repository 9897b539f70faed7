"""Paired comparison of an artifact with the FP32 model: McNemar's exact test and the bootstrap interval."""

import numpy as np
import pytest
from scipy.stats import binomtest

from edgepipe.significance import describe, mcnemar_exact, paired_comparison


@pytest.mark.parametrize("lost, gained", [(0, 0), (3, 0), (2, 1), (10, 0), (7, 3), (40, 12)])
def test_mcnemar_exact_matches_the_binomial_test(lost, gained):
    expected = 1.0 if lost + gained == 0 else binomtest(lost, lost + gained, 0.5).pvalue
    assert mcnemar_exact(lost, gained) == pytest.approx(expected)


def test_losing_three_of_a_hundred_and_fifty_is_not_distinguishable_from_chance():
    labels = np.arange(150) % 3
    reference = labels.copy()
    reference[:10] = (labels[:10] + 1) % 3  # the FP32 model is wrong on the first ten
    artifact = reference.copy()
    artifact[10:13] = (labels[10:13] + 1) % 3  # three more wrong: lost
    result = paired_comparison(artifact, reference, labels, ["a", "b", "c"])
    assert (result["lost"], result["gained"]) == (3, 0)
    assert result["top1_difference_pp"] == pytest.approx(-2.0)
    assert result["mcnemar_p"] == pytest.approx(0.25) and not result["distinguishable"]
    low, high = result["interval_95_pp"]
    assert low < -2.0 < high <= 0.0
    assert set(result["recall_change_pp"]) <= {"a", "b", "c"} and sum(result["recall_change_pp"].values()) < 0
    assert "not distinguishable from no change" in describe(result)


def test_a_large_consistent_loss_is_distinguishable():
    labels = np.zeros(200, np.int64)
    artifact = labels.copy()
    artifact[:30] = 1
    result = paired_comparison(artifact, labels, labels)
    assert result["distinguishable"] and result["mcnemar_p"] < 1e-6
    assert result["interval_95_pp"][1] < 0
