"""Forget and retain objectives, one per file; a method is one of each (see `base`).

Importing this package registers the built-in objectives:

- forget: `ga` (gradient ascent), `random_label`, `adversarial`;
- retain: `none`, `nll` (descent), `kl` (KL to the original model).
"""

from .base import (  # noqa: F401
    FORGET_OBJECTIVES,
    NO_RETAIN,
    RETAIN_OBJECTIVES,
    LossTerm,
    Objective,
    get_objective,
    register_objective,
)
from .ga import GradientAscent  # noqa: F401  isort: skip
from .random_label import RandomLabels  # noqa: F401  isort: skip
from .adversarial import AdversarialTargets  # noqa: F401  isort: skip
from .retain_nll import RetainNLL  # noqa: F401  isort: skip
from .retain_kl import RetainKL  # noqa: F401  isort: skip
