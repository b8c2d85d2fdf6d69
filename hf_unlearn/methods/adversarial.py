"""Method 3 of Yao et al. 2024: unlearning with adversarial samples.

    loss = forget_weight * NLL(f ; a)    a_t = argmax_{a != w_t} P_theta0(a | w_<t)

See `hf_unlearn.objectives.adversarial` (targets precomputed once; the original model is released before training).
"""

from dataclasses import dataclass, field

from ..config import UnlearningConfig
from ..registry import register_method
from ..trainer import UnlearningTrainer


@dataclass
class AdversarialConfig(UnlearningConfig):
    """`UnlearningConfig` with `method="adversarial"` (kept for configs and code written against it)."""

    method: str = field(default="adversarial", metadata={"help": "Unlearning method name."})


@register_method("adversarial")
class AdversarialTrainer(UnlearningTrainer):
    paper_name = "Unlearning with adversarial samples"
    config_class = AdversarialConfig
    forget_loss = "adversarial"
    retain_loss = "none"
