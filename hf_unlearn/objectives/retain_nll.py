"""Gradient descent on the retain stream: the retain term of methods 4 and 6 of Yao et al. 2024.

retain_loss = NLL(r)     (token-weighted mean over the global batch's retain targets)
"""

from __future__ import annotations

from ..losses import nll_sum
from .base import LossTerm, Objective, register_objective


@register_objective("nll")
class RetainNLL(Objective):
    kind = stream = "retain"
    terms = ("retain_loss",)
    normalisers = ("retain_tokens",)

    def loss_terms(self, batch, outputs):
        total, count = nll_sum(outputs["logits"], batch["labels"], batch.get("attention_mask"), self.chunk_size)
        return {"retain_loss": LossTerm(total, count, "retain_tokens", self.args.retain_weight)}
