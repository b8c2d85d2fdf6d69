"""Unseen-level matching with descent on retain data: every forget example is pushed to the NLL unseen
same-domain data has under the original model (its own quantile of it), and no further.

    loss = forget_weight * mean_s 1/2 (NLL(s)/|s| - tau_s)^2 + retain_weight * NLL(r)

See `hf_unlearn.objectives.unseen_match` for the targets tau_s and the derivation. Pass the unseen data as
`unseen_dataset=` (tokenised or raw, like `train_dataset`); without it the targets come from the retain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import UnlearningConfig
from ..registry import register_method
from ..trainer import UnlearningTrainer


@dataclass
class UnseenMatchConfig(UnlearningConfig):
    """`UnlearningConfig` with unseen-level matching's settings.

    Args:
        unseen_match_target_nll (`float` or `None`, *optional*, defaults to `None`):
            One target mean NLL (nats per token) for every forget example. `None`: the targets come from the
            original model's NLL on the unseen data (or the retain data), see `unseen_match_quantiles`.
        unseen_match_quantiles (`bool`, *optional*, defaults to `True`):
            Give each forget example the unseen levels' quantile of its rank (by the original model's NLL), so the
            forget NLLs end with the unseen NLLs' distribution; `False`: every example gets the unseen data's
            token-weighted mean NLL.
        unseen_match_two_sided (`bool`, *optional*, defaults to `True`):
            Pull an example that went past its target back to it; `False`: only stop pushing there.
    """

    method: str = field(default="unseen_match", metadata={"help": "Unlearning method name."})
    unseen_match_target_nll: float | None = field(
        default=None, metadata={"help": "One target mean NLL for every forget example (None: from the unseen data)."}
    )
    unseen_match_quantiles: bool = field(
        default=True, metadata={"help": "Per-example targets: the unseen NLL quantile of the example's rank."}
    )
    unseen_match_two_sided: bool = field(
        default=True, metadata={"help": "Pull examples that went past their target back (False: only stop pushing)."}
    )

    def __post_init__(self):
        super().__post_init__()
        target = self.unseen_match_target_nll
        if target is not None and not (0.0 < float(target) < float("inf")):
            raise ValueError(
                f"unseen_match_target_nll={target} must be a positive finite mean NLL (nats per token), or None to "
                "take the targets from the unseen data."
            )


@register_method("unseen_match")
class UnseenMatchTrainer(UnlearningTrainer):
    """Unseen-level matching; `unseen_dataset`: same-domain examples the original model never saw (the paper's
    "approximate" data), whose NLLs under the original model are the targets."""

    paper_name = "Unseen-level matching (per-example NLL targets from unseen data)"
    config_class = UnseenMatchConfig
    forget_loss = "unseen_match"
    retain_loss = "nll"
