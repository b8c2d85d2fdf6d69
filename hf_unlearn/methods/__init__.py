"""The paper's unlearning methods, one per file; importing this package registers them."""

from .adversarial import AdversarialConfig, AdversarialTrainer
from .ga_descent import GradientAscentDescentTrainer
from .ga_kl import GradientAscentKLTrainer
from .gradient_ascent import GradientAscentTrainer
from .random_label import RandomLabelConfig, RandomLabelTrainer

__all__ = [
    "AdversarialConfig",
    "AdversarialTrainer",
    "GradientAscentDescentTrainer",
    "GradientAscentKLTrainer",
    "GradientAscentTrainer",
    "RandomLabelConfig",
    "RandomLabelTrainer",
]
