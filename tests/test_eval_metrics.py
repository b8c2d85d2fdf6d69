"""The pure metrics (`hf_unlearn.evaluation.metrics`) against hand-derived values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hf_unlearn.evaluation import metrics

LN2 = math.log(2)


def test_language_modelling_metrics():
    """NLL sums [2, 4] over [1, 3] tokens: mean 6 / 4 = 1.5, perplexity e^1.5; 1 correct of 4 tokens: 0.25."""
    assert metrics.mean_token_nll([2.0, 4.0], [1, 3]) == 1.5
    assert metrics.perplexity(1.5) == pytest.approx(math.exp(1.5))
    assert metrics.token_accuracy([1, 0], [1, 3]) == 0.25
    assert math.isnan(metrics.mean_token_nll([0.0], [0]))


def test_loss_and_reference_scores():
    """LOSS = -NLL; reference = NLL_ref - NLL: [3 - 1, 2 - 2] = [2, 0]."""
    np.testing.assert_array_equal(metrics.loss_score([1.0, 2.0]), [-1.0, -2.0])
    np.testing.assert_array_equal(metrics.reference_score([1.0, 2.0], [3.0, 2.0]), [2.0, 0.0])


def test_zlib_score():
    """zlib compresses "a" to 9 bytes (2 header + 3 deflate + 4 Adler-32): score = -2 / 9."""
    assert metrics.zlib_entropy("a") == 9
    np.testing.assert_allclose(metrics.zlib_score([2.0], ["a"]), [-2 / 9])
    with pytest.raises(ValueError, match="one text per example"):
        metrics.zlib_score([1.0, 2.0], ["a"])


def test_min_k_mean():
    """Values [-1, -5, -3, -2]: K=50% averages the floor(0.5 * 4) = 2 lowest, (-5 - 3) / 2 = -4; K=10% takes
    floor(0.4) = 0, raised to 1 token: -5; K=100% is the plain mean -2.75. 0.3 x 10 = 3.0000000000000004 -> 3."""
    values = [np.array([-1.0, -5.0, -3.0, -2.0])]
    assert metrics.min_k_mean(values, 0.5)[0] == -4.0
    assert metrics.min_k_mean(values, 0.1)[0] == -5.0
    assert metrics.min_k_mean(values, 1.0)[0] == -2.75
    assert metrics.min_k_count(10, 0.3) == 3 and metrics.min_k_count(10, 0.29) == 2
    assert math.isnan(metrics.min_k_mean([np.array([])], 0.5)[0])
    with pytest.raises(ValueError, match="k=0"):
        metrics.min_k_mean(values, 0)


def test_min_k_plus_plus_token_score():
    """(log p - mu) / sigma = (-1 - (-2)) / 0.5 = 2."""
    np.testing.assert_allclose(metrics.min_k_plus_plus_token_scores([-1.0], [-2.0], [0.5]), [2.0])


def test_roc_auc_by_hand_and_against_sklearn():
    """Members [3, 2] vs non-members [1, 2.5]: 3 of the 4 (member, non-member) pairs are ordered right -> 0.75.
    A tie counts one half: [1] vs [1] -> 0.5. On random scores the AUC equals sklearn's and the Mann-Whitney
    U statistic / (n1 n2)."""
    from scipy.stats import mannwhitneyu
    from sklearn.metrics import roc_auc_score

    assert metrics.roc_auc([3.0, 2.0], [1.0, 2.5]) == 0.75
    assert metrics.roc_auc([1.0], [1.0]) == 0.5
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(0.5, 1, 40), rng.normal(0, 1, 60)
    labels = np.r_[np.ones(40), np.zeros(60)]
    expected = roc_auc_score(labels, np.r_[members, nonmembers])
    assert metrics.roc_auc(members, nonmembers) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(mannwhitneyu(members, nonmembers).statistic / (40 * 60), abs=1e-12)
    with pytest.raises(ValueError, match="members and non-members"):
        metrics.roc_auc([], [1.0])


def test_tpr_at_fpr():
    """Members [0.9, 0.8, 0.3], non-members [0.85, 0.1, 0.2, 0.05]. Above 0.85 only the member 0.9: FPR 0,
    TPR 1/3. At threshold 0.8: FPR 1/4 (0.85), TPR 2/3. At 0.3: FPR still 1/4, TPR 1."""
    members, nonmembers = [0.9, 0.8, 0.3], [0.85, 0.1, 0.2, 0.05]
    assert metrics.tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(1 / 3)
    assert metrics.tpr_at_fpr(members, nonmembers, 0.25) == 1.0
    assert metrics.tpr_at_fpr(members, nonmembers, 0.2) == pytest.approx(1 / 3)


def test_orientation_members_with_lower_loss_score_higher():
    """Member NLLs [1.0, 1.2, 2.5] vs non-member NLLs [2.0, 2.2, 1.1]: a member wins a pair when its NLL is
    lower: 1.0 wins 3, 1.2 wins 2 (not against 1.1), 2.5 wins 0 -> AUC 5/9 > 0.5. Swapping the roles: 4/9."""
    member_nll, nonmember_nll = [1.0, 1.2, 2.5], [2.0, 2.2, 1.1]
    auc = metrics.roc_auc(metrics.loss_score(member_nll), metrics.loss_score(nonmember_nll))
    assert auc == pytest.approx(5 / 9)
    assert metrics.roc_auc(metrics.loss_score(nonmember_nll), metrics.loss_score(member_nll)) == pytest.approx(4 / 9)


def test_privleak():
    """(0.6 - 0.5) / 0.5 = 0.2."""
    assert metrics.privleak(0.6, 0.5) == pytest.approx(0.2)


def test_rouge_l_and_common_prefix():
    """ "the cat sat" vs "the cat sat on the mat": LCS 3 words; recall 3/6, precision 1, F = 2/3."""
    assert metrics.rouge_l(["the cat sat"], ["the cat sat on the mat"], "recall")[0] == pytest.approx(0.5)
    assert metrics.rouge_l(["the cat sat"], ["the cat sat on the mat"])[0] == pytest.approx(2 / 3)
    assert metrics.common_prefix_length([1, 2, 3, 4], [1, 2, 5, 4]) == 2
    assert metrics.common_prefix_length([], [1]) == 0


def test_tofu_metrics_by_hand():
    """Truth ratio R = exp(NLL(para) - mean NLL(perturbed)) = exp(1 - 2.5) = e^-1.5 = 0.22313.
    Forget score min(R, 1/R) = 0.22313; retain score max(0, 1 - R) = 0.77687.
    Prob.: NLLs [0, ln 2] -> mean(1, 1/2) = 0.75. Normalised: P(answer) = 1/2 against two perturbed answers of
    1/4: 0.5 / (0.5 + 0.25 + 0.25) = 0.5. KS test of [1..5] vs [10..14]: statistic 1, exact p = 2 / C(10, 5)
    = 2 / 252. Harmonic mean of [1, 0.5] = 2 / (1 + 2) = 2/3; any 0 gives 0."""
    ratio = metrics.truth_ratio([1.0], [[2.0, 3.0]])
    assert ratio[0] == pytest.approx(math.exp(-1.5))
    assert metrics.truth_ratio_score(ratio, forget=True) == pytest.approx(math.exp(-1.5))
    assert metrics.truth_ratio_score(ratio, forget=False) == pytest.approx(1 - math.exp(-1.5))
    assert metrics.answer_probability([0.0, LN2]) == pytest.approx(0.75)
    assert metrics.normalized_answer_probability([LN2], [[2 * LN2, 2 * LN2]]) == pytest.approx(0.5)
    assert metrics.forget_quality([1, 2, 3, 4, 5], [10, 11, 12, 13, 14]) == pytest.approx(2 / 252)
    assert metrics.forget_quality([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert metrics.model_utility([1.0, 0.5]) == pytest.approx(2 / 3)
    assert metrics.model_utility([1.0, 0.0]) == 0.0
    with pytest.raises(ValueError, match="no perturbed answer"):
        metrics.truth_ratio([1.0], [[]])


def test_auc_and_tpr_are_nan_for_nan_scores_and_rank_infinities():
    """a nan score (a model that blew up) makes the AUC and TPR undefined (nan), not an
    exception; +-inf are ordered values: members [inf, 1] vs non-members [0, -inf] are perfectly separated
    (AUC 1, TPR 1 at FPR 0 <= 50%)."""
    assert math.isnan(metrics.roc_auc([math.nan, 1.0], [0.0, 0.5]))
    assert math.isnan(metrics.tpr_at_fpr([math.nan, 1.0], [0.0, 0.5], 0.5))
    assert metrics.roc_auc([math.inf, 1.0], [0.0, -math.inf]) == 1.0
    assert metrics.tpr_at_fpr([math.inf, 1.0], [0.0, -math.inf], 0.5) == 1.0
