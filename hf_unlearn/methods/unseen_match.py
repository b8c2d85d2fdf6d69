"""Unseen-level matching with descent on retain data: every forget example is pushed to the NLL unseen
same-domain data has under the original model (its own quantile of it), and no further.

    loss = forget_weight * mean_s 1/2 (NLL(s)/|s| - tau_s)^2 + retain_weight * NLL(r)

See `hf_unlearn.objectives.unseen_match` for the targets tau_s and the derivation. Pass the unseen data as
`unseen_dataset=` (tokenised or raw, like `train_dataset`); without it the targets come from the retain data.
"""

from __future__ import annotations

from ..registry import register_method
from ..trainer import UnlearningTrainer


@register_method("unseen_match")
class UnseenMatchTrainer(UnlearningTrainer):
    """Unseen-level matching; `unseen_dataset`: same-domain examples the original model never saw (the paper's
    "approximate" data), whose NLLs under the original model are the targets."""

    paper_name = "Unseen-level matching (per-example NLL targets from unseen data)"
    forget_loss = "unseen_match"
    retain_loss = "nll"


UnseenMatchConfig = UnseenMatchTrainer.config_class
