"""KL to the original model on the retain stream: the retain term of methods 5 and 7 of Yao et al. 2024.

    retain_loss = KL(P_theta0 || P_theta)(r)

summed over the vocabulary and averaged over the retain stream's real next-token positions; it is the true KL, so
it is 0 at the start of training. theta0 is the frozen original model (`ref_model`, sharded like the policy, or the
policy with its adapter disabled).
"""

from __future__ import annotations

from ..losses import kl_sum
from .base import LossTerm, Objective, register_objective


@register_objective("kl")
class RetainKL(Objective):
    kind = stream = "retain"
    terms = ("retain_loss",)
    normalisers = ("retain_tokens",)
    needs_reference = True

    def loss_terms(self, batch, outputs):
        total, count = kl_sum(
            outputs["reference"], outputs["logits"], batch["labels"], batch.get("attention_mask"), self.chunk_size
        )
        return {"retain_loss": LossTerm(total, count, "retain_tokens", self.args.retain_weight)}
