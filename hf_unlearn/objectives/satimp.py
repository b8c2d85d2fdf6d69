"""SatImp (Yang et al. 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning"), the forget term:

    forget_loss = -mean_t sg(p_t)^beta1 * sg(1 - p_t)^beta2 * NLL_t

a saturation weight (p^beta1) times an importance weight ((1 - p)^beta2), both detached. No reference
(open-unlearning loads one anyway; we do not). Defaults: beta1 5, beta2 1, retain NLL weight 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import register_objective
from .weighted import WeightedAscent


@dataclass
class SatImpParams:
    """SatImp's hyperparameters.

    Parameters:
        satimp_beta1 (`float`, *optional*, defaults to `5.0`):
            Saturation exponent beta1 (weight p^beta1).
        satimp_beta2 (`float`, *optional*, defaults to `1.0`):
            Importance exponent beta2 (weight (1 - p)^beta2).
    """

    satimp_beta1: float = field(default=5.0, metadata={"help": "SatImp's saturation exponent (p^beta1)."})
    satimp_beta2: float = field(default=1.0, metadata={"help": "SatImp's importance exponent ((1-p)^beta2)."})


@register_objective("satimp")
class SaturationImportance(WeightedAscent):
    params = SatImpParams

    def exponents(self):
        return self.args.satimp_beta1, self.args.satimp_beta2
