"""The paper's methods as named presets of (forget objective, retain objective); importing this registers them.

Imported in the paper's order (methods 1-7), which is the order `list_methods()` reports. Methods 4/6 and 5/7
differ only in the retain data (in-distribution or general), so they share a preset.
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
