"""IdkDPO (TOFU): DPO preferring refusals over the true answers, plus descent on retain data (beta 0.1).

loss = DPO(idk > answer) + NLL(r)        (QA forget data; references precomputed)
"""

from ..registry import register_method
from ..trainer import UnlearningTrainer


@register_method("idk_dpo")
class IdkDPOTrainer(UnlearningTrainer):
    paper_name = "DPO with IDK answers (TOFU's IdkDPO)"
    forget_loss = "idk_dpo"
    retain_loss = "nll"


IdkDPOConfig = IdkDPOTrainer.config_class
