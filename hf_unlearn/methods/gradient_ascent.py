"""Method 1 of Yao et al. 2024: gradient ascent (GA).

    loss = -forget_weight * NLL(f)

NLL(f) is the token-weighted mean next-token negative log-likelihood of the forget chunks f over the global batch.
"""

from ..registry import register_method
from ..trainer import UnlearningTrainer


@register_method("ga")
class GradientAscentTrainer(UnlearningTrainer):
    paper_name = "Gradient ascent"
    forget_loss = "ga"
    retain_loss = "none"


GradientAscentConfig = GradientAscentTrainer.config_class
