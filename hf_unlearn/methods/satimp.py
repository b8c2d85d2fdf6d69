"""SatImp (Yang et al. 2025): saturation x importance weighted gradient ascent, plus descent on retain data."""

from ..registry import register_method
from ..trainer import UnlearningTrainer


@register_method("satimp")
class SatImpTrainer(UnlearningTrainer):
    paper_name = "SatImp (Yang et al. 2025)"
    forget_loss = "satimp"
    retain_loss = "nll"


SatImpConfig = SatImpTrainer.config_class
