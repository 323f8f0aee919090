"""Paired statistics of the confirmation runs: bootstrap interval, McNemar's exact test, Holm, the verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import significance as sig


def _runs(rates, n, *, seeds=3, seed=0):
    """(seeds, n) 0/1 results whose every row has exactly round(rate * n) correct examples."""
    rng = np.random.default_rng(seed)
    out = []
    for rate in rates:
        rows = []
        for _ in range(seeds):
            row = np.zeros(n)
            row[rng.choice(n, round(rate * n), replace=False)] = 1
            rows.append(row)
        out.append(np.array(rows))
    return out


def test_a_large_difference_is_significant():
    a, b = _runs([0.8, 0.4], 400)
    result = sig.compare(a, b, samples=2000)
    assert result.diff_points == pytest.approx(40.0)
    assert 30 < result.ci_low < result.diff_points < result.ci_high < 50
    assert result.p_value < 1e-10
    p_holm = sig.holm([result.p_value, 0.5, 0.9])[0]
    assert sig.significant(p_holm, result.ci_low, result.ci_high)


def test_identical_results_are_not_significant():
    (a,) = _runs([0.6], 200)
    result = sig.compare(a, a.copy(), samples=2000)
    assert result.diff_points == 0 and result.ci_low == 0 and result.ci_high == 0
    assert result.p_value == 1.0 and result.a_better == result.b_better == 0
    assert not sig.significant(result.p_value, result.ci_low, result.ci_high)


def test_a_small_difference_on_few_examples_is_not_significant():
    # 12 examples, 2 seeds: A is right on 7 of them in both seeds, B on 6 (one discordant example).
    a = np.array([[1] * 7 + [0] * 5] * 2)
    b = np.array([[1] * 6 + [0] * 6] * 2)
    result = sig.compare(a, b, samples=2000)
    assert result.diff_points == pytest.approx(100 / 12)
    assert result.a_better == 1 and result.b_better == 0
    assert result.p_value == 1.0  # one discordant pair: P(X >= 1) two-sided = 1
    assert result.ci_low <= 0 < result.ci_high
    assert not sig.significant(result.p_value, result.ci_low, result.ci_high)


def test_mcnemar_matches_the_exact_binomial_by_hand():
    # One seed; A right where B is wrong on 8 examples, B right where A is wrong on 2, 10 concordant.
    a = np.array([1] * 8 + [0] * 2 + [1] * 5 + [0] * 5)
    b = np.array([0] * 8 + [1] * 2 + [1] * 5 + [0] * 5)
    p, a_better, b_better = sig.mcnemar_exact(a, b)
    # Two-sided exact: 2 * P(X <= 2), X ~ Bin(10, 1/2) = 2 * (1 + 10 + 45) / 1024
    assert (a_better, b_better) == (8, 2)
    assert p == pytest.approx(2 * 56 / 1024)


def test_mcnemar_counts_an_example_once_over_seeds():
    # Over 3 seeds, A is right 2 of 3 times on example 0 and B once: one discordant example, not three runs.
    a = np.array([[1, 1], [1, 0], [0, 0]])
    b = np.array([[1, 1], [0, 0], [0, 0]])
    assert sig.mcnemar_exact(a, b)[1:] == (1, 0)


def test_holm_matches_a_hand_computed_case():
    # Sorted: 0.01*4 = 0.04, 0.02*3 = 0.06, 0.03*2 = 0.06, 0.5*1 = 0.5; input order kept.
    adjusted = sig.holm([0.03, 0.01, 0.5, 0.02])
    assert adjusted == pytest.approx([0.06, 0.04, 0.5, 0.06])
    # Monotone: a larger raw p never gets a smaller adjusted one, and nothing exceeds 1.
    assert sig.holm([0.04, 0.045, 0.9]) == pytest.approx([0.12, 0.12, 0.9])
    assert sig.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_bootstrap_resamples_seeds_too():
    # The same examples, but seed 0 favours A by 20 points and seed 1 favours B by 20: the pooled difference is
    # 0, and with seeds resampled the interval spans the two seeds' disagreement.
    n = 100
    a = np.array([np.r_[np.ones(60), np.zeros(40)], np.r_[np.ones(40), np.zeros(60)]])
    b = np.array([np.r_[np.ones(40), np.zeros(60)], np.r_[np.ones(60), np.zeros(40)]])
    low, high = sig.paired_bootstrap(a, b, samples=4000)  # fractions, not points
    assert low < -0.1 and high > 0.1 and a.shape == (2, n)


def test_mean_interval_is_student_t():
    mean, std, low, high = sig.mean_interval([0.2, 0.4])
    assert mean == pytest.approx(0.3) and std == pytest.approx(math.sqrt(0.02))
    half = 12.706204736 * std / math.sqrt(2)  # t(0.975, 1 df)
    assert (low, high) == pytest.approx((0.3 - half, 0.3 + half))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        sig.mean_interval([0.5])


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        sig.compare(np.ones((2, 5)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="0/1"):
        sig.compare(np.full((1, 3), 0.5), np.ones((1, 3)))
