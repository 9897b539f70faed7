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


def test_one_sided_mcnemar_asks_whether_more_were_lost_than_gained():
    from edgepipe.significance import mcnemar_exact, mcnemar_one_sided

    assert mcnemar_one_sided(5, 0) == 1 / 32 and mcnemar_exact(5, 0) == 2 / 32
    assert mcnemar_one_sided(0, 5) == 1.0 and mcnemar_one_sided(0, 0) == 1.0
    assert abs(mcnemar_one_sided(3, 3) - 42 / 64) < 1e-12  # P(X >= 3) for X ~ Binomial(6, 1/2)


def test_a_costly_recipe_is_not_tried_when_the_loss_so_far_is_chance():
    from edgepipe.quantization.budget import _Kept, _loss_within_noise
    from edgepipe.significance import paired_comparison

    labels = np.zeros(100, dtype=np.int64)
    reference = labels.copy()
    two_lost = labels.copy()
    two_lost[:2] = 1
    thirty_lost = labels.copy()
    thirty_lost[:30] = 1
    noise = {1: paired_comparison(two_lost, reference, labels)}
    real = {1: paired_comparison(thirty_lost, reference, labels)}
    best = _Kept(top1=0.98, path=None, details={}, attempt=1)
    reason = _loss_within_noise(noise, best)
    assert reason.startswith("the most accurate recipe so far (attempt 1: 2 image(s) lost, 0 gained)")
    assert _loss_within_noise(real, best) is None
    assert _loss_within_noise({}, None) is None  # nothing measured yet: the recipe runs
