"""Methods as named presets of (forget objective, retain objective); importing this registers them.

The paper's methods first, in its order (methods 1-7; 4/6 and 5/7 differ only in the retain data, so they share a
preset), then the field's later methods. `list_methods()` reports this order. A method file defines its trainer;
`register_method` builds its config class (`<Name>Config`, the trainer's `config_class`) from its objectives.
"""

from .gradient_ascent import GradientAscentConfig, GradientAscentTrainer  # isort: skip
from .random_label import RandomLabelConfig, RandomLabelTrainer  # isort: skip
from .adversarial import AdversarialConfig, AdversarialTrainer  # isort: skip
from .ga_descent import GradientAscentDescentConfig, GradientAscentDescentTrainer  # isort: skip
from .ga_kl import GradientAscentKLConfig, GradientAscentKLTrainer  # isort: skip
from .npo import NPOConfig, NPOTrainer  # isort: skip
from .simnpo import SimNPOConfig, SimNPOTrainer  # isort: skip
from .idk import IdkConfig, IdkTrainer  # isort: skip
from .idk_dpo import IdkDPOConfig, IdkDPOTrainer  # isort: skip
from .rmu import RMUConfig, RMUTrainer  # isort: skip
from .undial import UndialConfig, UndialTrainer  # isort: skip
from .wga import WGAConfig, WGATrainer  # isort: skip
from .satimp import SatImpConfig, SatImpTrainer  # isort: skip
from .unseen_match import UnseenMatchConfig, UnseenMatchTrainer  # isort: skip
from .unseen_match_tail import UnseenMatchTailConfig, UnseenMatchTailTrainer  # isort: skip

__all__ = [
    "AdversarialConfig",
    "AdversarialTrainer",
    "GradientAscentConfig",
    "GradientAscentDescentConfig",
    "GradientAscentDescentTrainer",
    "GradientAscentKLConfig",
    "GradientAscentKLTrainer",
    "GradientAscentTrainer",
    "IdkConfig",
    "IdkDPOConfig",
    "IdkDPOTrainer",
    "IdkTrainer",
    "NPOConfig",
    "NPOTrainer",
    "RMUConfig",
    "RMUTrainer",
    "RandomLabelConfig",
    "RandomLabelTrainer",
    "SatImpConfig",
    "SatImpTrainer",
    "SimNPOConfig",
    "SimNPOTrainer",
    "UndialConfig",
    "UndialTrainer",
    "UnseenMatchConfig",
    "UnseenMatchTailConfig",
    "UnseenMatchTailTrainer",
    "UnseenMatchTrainer",
    "WGAConfig",
    "WGATrainer",
]
