"""IDK fine-tuning (TOFU): descent on refusals to the forget questions plus descent on retain data.

loss = NLL(idk answers to the forget questions) + NLL(r)        (QA forget data)
"""

from ..registry import register_method
from ..trainer import UnlearningTrainer


@register_method("idk")
class IdkTrainer(UnlearningTrainer):
    paper_name = "IDK fine-tuning (Maini et al. 2024)"
    forget_loss = "idk"
    retain_loss = "nll"


IdkConfig = IdkTrainer.config_class
