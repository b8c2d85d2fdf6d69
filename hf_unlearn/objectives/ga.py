"""Gradient ascent on the forget stream: the forget term of methods 1 and 4-7 of Yao et al. 2024.

    forget_loss = -NLL(f)     (token-weighted mean over the global batch's forget targets)

`forget_nll` (weight 0) logs the NLL itself.
"""

from __future__ import annotations

from ..losses import nll_sum
from .base import LossTerm, Objective, register_objective


@register_objective("ga")
class GradientAscent(Objective):
    kind = stream = "forget"
    terms = ("forget_loss", "forget_nll")
    normalisers = ("forget_tokens",)

    def loss_terms(self, batch, outputs):
        total, count = nll_sum(outputs["logits"], batch["labels"], batch.get("attention_mask"), self.chunk_size)
        return {
            "forget_loss": LossTerm(-total, count, "forget_tokens", self.args.forget_weight),
            "forget_nll": LossTerm(total.detach(), count, "forget_tokens", 0.0),
        }
