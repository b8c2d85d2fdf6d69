"""Bootstrap confidence intervals and TPR resolution (hf_unlearn/evaluation/uncertainty.py) against hand
computations on tiny example sets whose bootstrap distribution can be enumerated exactly.

Monte Carlo tolerance: with R resamples, the share of resamples taking a value of exact probability p has
standard deviation sqrt(p (1 - p) / R); the tests allow 5 of them (a ~1e-6 chance per check for a correct
bootstrap), while a wrong resampling scheme (e.g. not stratified, or per-example instead of token-weighted
means) moves these shares by 0.1 or more.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hf_unlearn.evaluation import metrics
from hf_unlearn.evaluation.uncertainty import (
    bootstrap_auc,
    bootstrap_mean_nll,
    bootstrap_tpr_at_fpr,
    interval,
    minimum_nonmembers,
    percentile_interval,
    tpr_unresolved_reason,
)

R = 8000


def shares(values, support):
    return {value: float(np.isclose(values, value).mean()) for value in support}


def assert_shares(values, expected):
    assert np.isin(np.round(values, 12), list(expected)).all(), sorted(set(values.tolist()))
    for value, p in expected.items():
        observed = float(np.isclose(values, value).mean())
        assert observed == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / R)), (value, observed, p)


def test_auc_bootstrap_matches_the_exact_distribution():
    """Members [3, 1], non-members [2, 0]: AUC 3/4 (1 loses to 2). Each side resamples to one of 4 equally likely
    ordered pairs: {3,3} 1/4, {3,1} 1/2, {1,1} 1/4 and {2,2} 1/4, {2,0} 1/2, {0,0} 1/4. AUC of each combination:
    {3,3}: 1 against anything; {3,1}: 1/2 vs {2,2}, 3/4 vs {2,0}, 1 vs {0,0}; {1,1}: 0, 1/2, 1. So
    P(1) = 1/4 + 1/8 + 1/16 = 7/16, P(3/4) = 1/4, P(1/2) = 1/8 + 1/8 = 1/4, P(0) = 1/16.
    CDF: 1/16 at 0, 5/16 at 1/2, 9/16 at 3/4, 1 at 1. The 50% interval (25% and 75% quantiles) is [1/2, 1]:
    both quantiles are >= 0.06 away from a jump of the CDF, ~20 Monte Carlo standard deviations."""
    members, nonmembers = [3.0, 1.0], [2.0, 0.0]
    values = bootstrap_auc(members, nonmembers, n_resamples=R, seed=0)
    assert_shares(values, {1.0: 7 / 16, 0.75: 4 / 16, 0.5: 4 / 16, 0.0: 1 / 16})
    assert interval(bootstrap_auc, members, nonmembers, confidence=0.5, n_resamples=R) == (0.5, 1.0)
    assert np.array_equal(values, bootstrap_auc(members, nonmembers, n_resamples=R, seed=0))  # seeded
    assert not np.array_equal(values, bootstrap_auc(members, nonmembers, n_resamples=R, seed=1))


def test_tpr_bootstrap_matches_the_exact_distribution():
    """Same sets, TPR at FPR <= 1/2 (one of the two non-members may score above the threshold). Against {2,2}
    both non-members tie, so the threshold must be above 2: TPR = share of members above 2 ({3,3} 1, {3,1} 1/2,
    {1,1} 0). Against {2,0} or {0,0} a threshold just above 0 admits at most one non-member: TPR 1.
    P(1) = 1/4 + 3/4 x 3/4 = 13/16, P(1/2) = 1/2 x 1/4 = 2/16, P(0) = 1/4 x 1/4 = 1/16."""
    values = bootstrap_tpr_at_fpr([3.0, 1.0], [2.0, 0.0], 0.5, n_resamples=R, seed=0)
    assert_shares(values, {1.0: 13 / 16, 0.5: 2 / 16, 0.0: 1 / 16})


def test_vectorised_statistics_equal_the_point_estimates():
    """On random scores (with ties, from rounding) the comparison-matrix AUC and the sorted-threshold TPR of one
    resample that is the identity equal sklearn-based `roc_auc` / `tpr_at_fpr` (exact up to float round-off)."""
    from hf_unlearn.evaluation.uncertainty import comparison_matrix, tpr_at_fpr_sorted

    rng = np.random.default_rng(3)
    members, nonmembers = np.round(rng.normal(0.5, 1, 37), 1), np.round(rng.normal(0, 1, 53), 1)
    assert comparison_matrix(members, nonmembers).mean() == pytest.approx(
        metrics.roc_auc(members, nonmembers), abs=1e-12
    )
    for fpr in (0.02, 0.05, 0.1, 0.5, 1.0):
        fast = tpr_at_fpr_sorted(members[None], -np.sort(-nonmembers)[None], fpr)[0]
        assert fast == pytest.approx(metrics.tpr_at_fpr(members, nonmembers, fpr), abs=1e-12), fpr


def test_mean_nll_bootstrap_is_token_weighted():
    """NLL sums [1, 9] over [1, 3] tokens (per-example NLLs 1 and 3). Resamples: {0,0} 2/2 = 1 (p 1/4), one of
    each (1 + 9) / (1 + 3) = 2.5 (p 1/2; a per-example mean would give 2), {1,1} 18/6 = 3 (p 1/4). The 80%
    interval (10% and 90% quantiles, 0.15 from the CDF's jumps at 1/4 and 3/4) is [1, 3]."""
    values = bootstrap_mean_nll([1.0, 9.0], [1, 3], n_resamples=R, seed=0)
    assert_shares(values, {1.0: 0.25, 2.5: 0.5, 3.0: 0.25})
    assert percentile_interval(values, 0.8) == (1.0, 3.0)


def test_nan_scores_give_nan_intervals():
    assert all(math.isnan(v) for v in interval(bootstrap_auc, [math.nan, 1.0], [0.0], n_resamples=10))
    assert all(
        math.isnan(v) for v in interval(bootstrap_tpr_at_fpr, [math.nan], [0.0, 1.0], max_fpr=0.5, n_resamples=10)
    )
    with pytest.raises(ValueError, match="confidence=1.5"):
        interval(bootstrap_auc, [1.0], [0.0], confidence=1.5)


def test_tpr_needs_enough_nonmembers():
    """TPR at FPR 1% needs ceil(1 / 0.01) = 100 non-members, at 5% 20, at 30% ceil(3.33) = 4."""
    assert (minimum_nonmembers(0.01), minimum_nonmembers(0.05), minimum_nonmembers(0.3)) == (100, 20, 4)
    assert tpr_unresolved_reason(100, 0.01) is None
    reason = tpr_unresolved_reason(99, 0.01)
    assert "at least 100 non-members" in reason and "got 99" in reason
