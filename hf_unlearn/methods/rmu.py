"""RMU (Li et al. 2024, WMDP): steer layer-l activations on forget data to a random direction, keep them on retain
data; only the chosen parameters train. WMDP's defaults: layer 7, c 6.5, alpha (retain_weight) 1200.

    loss = || h_l(f) - c u ||^2 / d + retain_weight * || h_l(r) - h_l^ref(r) ||^2 / d
"""

from ..registry import register_method
from ..trainer import UnlearningTrainer


@register_method("rmu")
class RMUTrainer(UnlearningTrainer):
    paper_name = "Representation Misdirection for Unlearning (Li et al. 2024)"
    config_defaults = {"retain_weight": 1200.0}
    forget_loss = "rmu"
    retain_loss = "rmu_retain"


RMUConfig = RMUTrainer.config_class
