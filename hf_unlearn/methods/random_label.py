"""Method 2 of Yao et al. 2024: fine-tuning with random labels.

    loss = forget_weight * NLL(f ; y~)    y~_t ~ Uniform(vocabulary) at every target position of f

See `hf_unlearn.objectives.random_label` for how the labels are drawn (`random_label_seed`).
"""

from ..registry import register_method
from ..trainer import UnlearningTrainer


@register_method("random_label")
class RandomLabelTrainer(UnlearningTrainer):
    paper_name = "Fine-tuning with random labels"
    forget_loss = "random_label"
    retain_loss = "none"


RandomLabelConfig = RandomLabelTrainer.config_class
