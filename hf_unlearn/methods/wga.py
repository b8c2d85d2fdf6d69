"""WGA (Wang et al. 2025): probability-weighted gradient ascent, plus descent on retain data (beta 1)."""

from ..registry import register_method
from ..trainer import UnlearningTrainer


@register_method("wga")
class WGATrainer(UnlearningTrainer):
    paper_name = "Weighted gradient ascent (Wang et al. 2025)"
    forget_loss = "wga"
    retain_loss = "nll"


WGAConfig = WGATrainer.config_class
