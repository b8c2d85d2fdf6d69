"""Methods as named presets of (forget objective, retain objective); importing this registers them.

The paper's methods first, in its order (methods 1-7; 4/6 and 5/7 differ only in the retain data, so they share a
preset), then the field's later methods. `list_methods()` reports this order.
"""

from .gradient_ascent import GradientAscentTrainer  # isort: skip
from .random_label import RandomLabelConfig, RandomLabelTrainer  # isort: skip
from .adversarial import AdversarialConfig, AdversarialTrainer  # isort: skip
from .ga_descent import GradientAscentDescentTrainer  # isort: skip
from .ga_kl import GradientAscentKLTrainer  # isort: skip
from .npo import NPOTrainer  # isort: skip
from .simnpo import SimNPOConfig, SimNPOTrainer  # isort: skip
from .idk import IdkTrainer  # isort: skip
from .idk_dpo import IdkDPOTrainer  # isort: skip
from .rmu import RMUConfig, RMUTrainer  # isort: skip
from .undial import UndialTrainer  # isort: skip
from .wga import WGATrainer  # isort: skip
from .satimp import SatImpTrainer  # isort: skip
from .unseen_match import UnseenMatchConfig, UnseenMatchTrainer  # isort: skip

__all__ = [
    "AdversarialConfig",
    "AdversarialTrainer",
    "GradientAscentDescentTrainer",
    "GradientAscentKLTrainer",
    "GradientAscentTrainer",
    "IdkDPOTrainer",
    "IdkTrainer",
    "NPOTrainer",
    "RMUConfig",
    "RMUTrainer",
    "SatImpTrainer",
    "SimNPOConfig",
    "SimNPOTrainer",
    "UndialTrainer",
    "UnseenMatchConfig",
    "UnseenMatchTrainer",
    "WGATrainer",
    "RandomLabelConfig",
    "RandomLabelTrainer",
]
