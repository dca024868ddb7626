"""McNemar's exact test of two models on the same images: a hand-worked example, the edge
cases, and the counting of discordant images."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stages.lib.metrics import SIGNIFICANCE, mcnemar_p, paired_comparison


def test_hand_worked_example():
    # b = 2 images only model A gets right, c = 8 only model B: n = b + c = 10 discordant.
    # Under "no difference" each discordant image is A's with probability 1/2, so the count
    # of A's is Binomial(10, 1/2). The one-sided tail at min(b, c) = 2:
    #   P(K <= 2) = (C(10,0) + C(10,1) + C(10,2)) / 2^10 = (1 + 10 + 45) / 1024 = 56 / 1024
    # and two-sided p = 2 * 56 / 1024 = 112 / 1024 = 0.109375: within noise at 5%,
    # although B got four times as many of them right.
    assert mcnemar_p(2, 8) == 112 / 1024 == 0.109375
    assert mcnemar_p(8, 2) == 0.109375  # symmetric


def test_smallest_real_difference():
    # 0 vs 5: p = 2 * C(5,0) / 2^5 = 2/32 = 0.0625, not real; 0 vs 6: 2/64 = 0.03125, real.
    assert mcnemar_p(0, 5) == 0.0625 and mcnemar_p(0, 5) >= SIGNIFICANCE
    assert mcnemar_p(0, 6) == 0.03125 and mcnemar_p(0, 6) < SIGNIFICANCE


def test_edge_cases():
    assert mcnemar_p(0, 0) == 1.0  # no discordant image: nothing tells the two apart
    assert mcnemar_p(5, 5) == 1.0  # 2 * P(K <= 5) > 1 for n = 10: capped at 1
    assert mcnemar_p(0, 1) == 1.0  # 2 * 1/2
    assert mcnemar_p(1, 2) == 1.0  # 2 * (1 + 3) / 8
    # Large counts stay exact (integers), no overflow, no underflow to a negative or NaN.
    assert mcnemar_p(500, 520) == pytest.approx(2 * sum(math.comb(1020, k) for k in range(501)) / 2**1020)
    assert 0.0 < mcnemar_p(0, 1000) < 1e-300
    with pytest.raises(ValueError, match=">= 0"):
        mcnemar_p(-1, 3)


def test_agrees_with_scipy_binomtest():
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(12, 18), (6, 12), (68, 181), (3, 0), (40, 40), (17, 25)]:
        assert mcnemar_p(b, c) == pytest.approx(stats.binomtest(b, b + c).pvalue, rel=1e-9)


def test_paired_comparison_counts_the_discordant_images():
    a = np.array([1, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
    b = np.array([1, 0, 0, 1, 0, 1, 1, 1], dtype=bool)
    # only A right: images 1, 2; only B right: images 3, 6; both right: 0, 5, 7; neither: 4.
    c = paired_comparison(a, b)
    assert (c["only_a"], c["only_b"], c["n"]) == (2, 2, 8)
    assert c["accuracy_a"] == c["accuracy_b"] == 5 / 8
    assert c["p"] == 1.0
    assert paired_comparison(a, a)["p"] == 1.0
    with pytest.raises(ValueError, match="same"):
        paired_comparison(a, b[:-1])
    with pytest.raises(ValueError, match="non-zero"):
        paired_comparison([], [])
