"""Method 3 of Yao et al. 2024: unlearning with adversarial samples.

    loss = forget_weight * NLL(f ; a)    a_t = argmax_{a != w_t} P_theta0(a | w_<t)

See `hf_unlearn.objectives.adversarial` (targets precomputed once; the original model is released before training).
"""

from ..registry import register_method
from ..trainer import UnlearningTrainer


@register_method("adversarial")
class AdversarialTrainer(UnlearningTrainer):
    paper_name = "Unlearning with adversarial samples"
    forget_loss = "adversarial"
    retain_loss = "none"


AdversarialConfig = AdversarialTrainer.config_class
