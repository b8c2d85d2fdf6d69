"""Unseen-level matching of the mean and of the tail, with descent on retain data: every forget example is pushed
until its mean next-token NLL and the mean NLL of its 10% least likely tokens both reach the levels unseen
same-domain data has under the original model (their quantiles of its rank), and no further.

    loss = forget_weight * mean_s [1/2 (m_s - tau_s)^2 + 1/2 (t_s - kappa_s)^2] + retain_weight * NLL(r)

`unseen_match` with `unseen_match_tail_k = 0.1` (what Min-K% 10% reads); see `hf_unlearn.objectives.unseen_match`.
"""

from __future__ import annotations

from ..registry import register_method
from .unseen_match import UnseenMatchTrainer


@register_method("unseen_match_tail")
class UnseenMatchTailTrainer(UnseenMatchTrainer):
    """Unseen-level matching of each example's mean NLL and of its 10% tail; `unseen_dataset` as for
    `unseen_match`."""

    paper_name = "Unseen-level matching of the mean and the 10% tail (per-example targets from unseen data)"
    config_defaults = {"unseen_match_tail_k": 0.1}


UnseenMatchTailConfig = UnseenMatchTailTrainer.config_class
