"""Weighted gradient ascent (WGA; Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective
and Go Beyond"), the forget term:

    forget_loss = -mean_t sg(p_t)^beta * NLL_t

p_t the model's probability of the true token (a detached weight): tokens the model already finds unlikely stop
pulling. No reference (open-unlearning loads one anyway; we do not). Default beta 1, retain NLL weight 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import register_objective
from .weighted import WeightedAscent


@dataclass
class WGAParams:
    """WGA's hyperparameters.

    Parameters:
        wga_beta (`float`, *optional*, defaults to `1.0`):
            Exponent beta of the token weight p^beta.
    """

    wga_beta: float = field(default=1.0, metadata={"help": "WGA's exponent of the token weight p^beta."})


@register_objective("wga")
class WeightedGradientAscent(WeightedAscent):
    params = WGAParams

    def exponents(self):
        return self.args.wga_beta, 0.0
