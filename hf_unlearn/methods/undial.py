"""UNDIAL (Dong et al. 2024): self-distillation towards adjusted logits, plus descent on retain data (beta 10)."""

from ..registry import register_method
from ..trainer import UnlearningTrainer


@register_method("undial")
class UndialTrainer(UnlearningTrainer):
    paper_name = "UNDIAL (Dong et al. 2024)"
    forget_loss = "undial"
    retain_loss = "nll"


UndialConfig = UndialTrainer.config_class
