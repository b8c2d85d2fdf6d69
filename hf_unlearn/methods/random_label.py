"""Method 2 of Yao et al. 2024: fine-tuning with random labels.

    loss = forget_weight * NLL(f ; y~)    y~_t ~ Uniform(vocabulary) at every target position of f

See `hf_unlearn.objectives.random_label` for how the labels are drawn (`random_label_seed`).
"""

from dataclasses import dataclass, field

from ..config import UnlearningConfig
from ..registry import register_method
from ..trainer import UnlearningTrainer


@dataclass
class RandomLabelConfig(UnlearningConfig):
    """`UnlearningConfig` with `method="random_label"` (kept for configs and code written against it)."""

    method: str = field(default="random_label", metadata={"help": "Unlearning method name."})


@register_method("random_label")
class RandomLabelTrainer(UnlearningTrainer):
    paper_name = "Fine-tuning with random labels"
    config_class = RandomLabelConfig
    forget_loss = "random_label"
    retain_loss = "none"
