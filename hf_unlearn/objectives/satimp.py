"""SatImp (Yang et al. 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning"), the forget term:

    forget_loss = -mean_t sg(p_t)^beta1 * sg(1 - p_t)^beta2 * NLL_t

a saturation weight (p^beta1) times an importance weight ((1 - p)^beta2), both detached. No reference
(open-unlearning loads one anyway; we do not). Defaults: beta1 5, beta2 1, retain NLL weight 1.
"""

from __future__ import annotations

from .base import register_objective
from .weighted import WeightedAscent


@register_objective("satimp")
class SaturationImportance(WeightedAscent):
    def exponents(self):
        return self.args.satimp_beta1, self.args.satimp_beta2
