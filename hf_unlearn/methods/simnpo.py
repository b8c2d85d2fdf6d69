"""SimNPO (Fan et al. 2024) with descent on retain data, open-unlearning's `SimNPO` defaults.

loss = 0.125 * SimNPO(f) + 1 * NLL(r)        (beta 4.5, delta 0)
"""

from ..registry import register_method
from ..trainer import UnlearningTrainer


@register_method("simnpo")
class SimNPOTrainer(UnlearningTrainer):
    paper_name = "SimNPO (Fan et al. 2024)"
    config_defaults = {"forget_weight": 0.125}
    forget_loss = "simnpo"
    retain_loss = "nll"


SimNPOConfig = SimNPOTrainer.config_class
