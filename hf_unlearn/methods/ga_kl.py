"""Methods 5 and 7 of Yao et al. 2024: gradient ascent on forget data + KL to the original model on retain data.

    loss = -forget_weight * NLL(f) + retain_weight * KL(P_theta0 || P_theta)(r)

Method 5 takes r from the forget set's domain, method 7 from a general corpus. With `retain_weight=0` neither
the retain nor the reference forward pass runs, and no reference model is loaded.
"""

from ..registry import register_method
from ..trainer import UnlearningTrainer


@register_method("ga_kl")
class GradientAscentKLTrainer(UnlearningTrainer):
    paper_name = "GA + KL on in-distribution (method 5) or general (method 7) data"
    forget_loss = "ga"
    retain_loss = "kl"


GradientAscentKLConfig = GradientAscentKLTrainer.config_class
