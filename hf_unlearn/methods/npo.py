"""NPO (Zhang et al. 2024) with descent on retain data, open-unlearning's `NPO` (beta 0.1, alpha = gamma = 1).

    loss = forget_weight * NPO(f) + retain_weight * NLL(r)

See `hf_unlearn.objectives.npo`: the reference log-probabilities are precomputed, no second model is held.
"""

from ..registry import register_method
from ..trainer import UnlearningTrainer


@register_method("npo")
class NPOTrainer(UnlearningTrainer):
    paper_name = "Negative Preference Optimization (Zhang et al. 2024)"
    forget_loss = "npo"
    retain_loss = "nll"


NPOConfig = NPOTrainer.config_class
