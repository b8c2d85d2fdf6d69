"""Methods 4 and 6 of Yao et al. 2024: gradient ascent on forget data + gradient descent on retain data.

    loss = -forget_weight * NLL(f) + retain_weight * NLL(r)

Method 4 takes r from the forget set's own domain, seen in pre-training ("in-distribution"); method 6 takes r
from a general corpus. The loss is the same: which one you run is the choice of `retain_dataset`.
With `retain_weight=0` the retain forward pass is skipped.
"""

from ..registry import register_method
from ..trainer import UnlearningTrainer


@register_method("ga_descent")
class GradientAscentDescentTrainer(UnlearningTrainer):
    paper_name = "GA + descent on in-distribution (method 4) or general (method 6) data"
    forget_loss = "ga"
    retain_loss = "nll"


GradientAscentDescentConfig = GradientAscentDescentTrainer.config_class
