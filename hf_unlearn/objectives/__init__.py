"""Forget and retain objectives, one per file; a method is one of each (see `base`).

Importing this package registers the built-in objectives:

- forget: `ga` (gradient ascent), `random_label`, `adversarial` (Yao et al. 2024); `npo`, `simnpo`, `idk`,
  `idk_dpo`, `wga`, `satimp`, `undial`, `rmu` (the field since); `unseen_match` (per-example unseen-level targets);
- retain: `none`, `nll` (descent), `kl` (KL to the original model), `rmu_retain` (RMU's activation matching).
"""

from .base import (  # noqa: F401
    FORGET_OBJECTIVES,
    NO_RETAIN,
    POLICY,
    REFERENCE,
    RETAIN_OBJECTIVES,
    LossTerm,
    Objective,
    Outputs,
    Pass,
    get_objective,
    register_objective,
)

from .ga import GradientAscent  # noqa: F401  isort: skip
from .random_label import RandomLabels  # noqa: F401  isort: skip
from .adversarial import AdversarialTargets  # noqa: F401  isort: skip
from .npo import NegativePreference  # noqa: F401  isort: skip
from .simnpo import SimpleNegativePreference  # noqa: F401  isort: skip
from .idk import IdkFineTuning  # noqa: F401  isort: skip
from .idk_dpo import IdkPreference  # noqa: F401  isort: skip
from .wga import WeightedGradientAscent  # noqa: F401  isort: skip
from .satimp import SaturationImportance  # noqa: F401  isort: skip
from .undial import AdjustedSelfDistillation  # noqa: F401  isort: skip
from .rmu import RepresentationMisdirection, RepresentationRetain  # noqa: F401  isort: skip
from .unseen_match import UnseenLevelMatch  # noqa: F401  isort: skip
from .retain_nll import RetainNLL  # noqa: F401  isort: skip
from .retain_kl import RetainKL  # noqa: F401  isort: skip
