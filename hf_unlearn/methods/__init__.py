"""The paper's unlearning methods, one per file; importing this package registers them.

Imported in the paper's order (methods 1-7), which is the order `list_methods()` reports.
"""

from .gradient_ascent import GradientAscentTrainer  # isort: skip
from .random_label import RandomLabelConfig, RandomLabelTrainer  # isort: skip
from .adversarial import AdversarialConfig, AdversarialTrainer  # isort: skip
from .ga_descent import GradientAscentDescentTrainer  # isort: skip
from .ga_kl import GradientAscentKLTrainer  # isort: skip

__all__ = [
    "AdversarialConfig",
    "AdversarialTrainer",
    "GradientAscentDescentTrainer",
    "GradientAscentKLTrainer",
    "GradientAscentTrainer",
    "RandomLabelConfig",
    "RandomLabelTrainer",
]
