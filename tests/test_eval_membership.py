"""Membership inference (`hf_unlearn.evaluation.membership`): attack scores and their summaries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_unlearn.evaluation.membership import attack_scores, percent_name, summarize_attacks
from hf_unlearn.evaluation.scores import ExampleScores


def test_summaries_name_every_attack_and_fpr():
    """Two non-members cannot resolve an FPR of 1% (needs 100) or 5% (needs 20): those TPRs are None, not the
    TPR at FPR 0 under a misleading name; 50% (needs 2) is reported, with its interval."""
    scores = {"loss": np.array([1.0, 2.0])}
    summary = summarize_attacks(scores, {"loss": np.array([0.0, 1.5])}, fprs=(0.01, 0.05, 0.5))
    assert set(summary["loss"]) == {
        "auc",
        "auc_ci",
        "tpr@1%fpr",
        "tpr@1%fpr_ci",
        "tpr@5%fpr",
        "tpr@5%fpr_ci",
        "tpr@50%fpr",
        "tpr@50%fpr_ci",
    }
    assert summary["loss"]["tpr@1%fpr"] is None and summary["loss"]["tpr@5%fpr_ci"] is None
    assert summary["loss"]["tpr@50%fpr"] == 1.0 and len(summary["loss"]["tpr@50%fpr_ci"]) == 2
    assert set(summarize_attacks(scores, {"loss": np.array([0.0])}, fprs=(0.5,), n_resamples=0)["loss"]) == {
        "auc",
        "tpr@50%fpr",
    }
    assert percent_name(0.125) == "12.5"


def hand_scores(nll_sums, tokens):
    return ExampleScores(
        nll_sum=torch.tensor(nll_sums, dtype=torch.float64),
        tokens=torch.tensor(tokens),
        correct=torch.zeros(len(tokens)),
    )


def test_examples_without_targets_are_excluded_from_membership_inference():
    """An example with no target token (all labels -100, or a single token) has NLL 0 / 0; scored as NLL 0 it
    would be the strongest member. It is left out, and counted.

    Members: NLLs 1.0 and 3.0 (sums 2 and 6 over 2 tokens each) plus one example without targets;
    non-members: 1.5, 2.5, 3.2, 3.5 (one token each).
    LOSS AUC = P(member NLL < non-member NLL): 1.0 beats all 4, 3.0 beats 3.2 and 3.5 -> 6/8 = 0.75 (with the
    empty example scored as NLL 0 it would be 10/12). TPR at FPR <= 25%: the threshold that admits one
    non-member (1.5) admits the member 1.0 only -> 1/2 (2/3 with the empty example). The token-weighted mean
    NLL is (2 + 6) / 4 = 2.0 either way."""
    from hf_unlearn.evaluation import membership

    members = hand_scores([2.0, 0.0, 6.0], [2, 0, 2])
    nonmembers = hand_scores([1.5, 2.5, 3.2, 3.5], [1, 1, 1, 1])
    assert membership.loss_auc(members, nonmembers) == pytest.approx(0.75)
    assert membership.scored_mask(members).tolist() == [True, False, True]
    attacks = {name: attack_scores(scores) for name, scores in (("m", members), ("n", nonmembers))}
    assert attacks["m"]["loss"].tolist() == [-1.0, -3.0]
    summary = summarize_attacks(attacks["m"], attacks["n"], fprs=(0.25,))["loss"]
    assert summary["auc"] == pytest.approx(0.75) and summary["tpr@25%fpr"] == pytest.approx(0.5)
    assert members.mean_nll == pytest.approx(2.0)
