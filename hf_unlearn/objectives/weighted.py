"""Shared by the token-weighted gradient-ascent objectives (WGA, SatImp): -mean_t sg(w_t) * NLL_t."""

from __future__ import annotations

from ..losses import weighted_ascent_sums
from .base import LossTerm, Objective


class WeightedAscent(Objective):
    """forget_loss = -sum_t sg(p_t^beta1 (1 - p_t)^beta2) NLL_t / forget tokens; `forget_nll` logs the plain NLL."""

    kind = stream = "forget"
    terms = ("forget_loss", "forget_nll")
    normalisers = ("forget_tokens",)

    def exponents(self) -> tuple[float, float]:
        raise NotImplementedError

    def loss_terms(self, batch, outputs):
        beta1, beta2 = self.exponents()
        loss, count, nll = weighted_ascent_sums(
            outputs["logits"], batch["labels"], batch.get("attention_mask"), beta1, beta2, self.chunk_size
        )
        return {
            "forget_loss": LossTerm(loss, count, "forget_tokens", self.args.forget_weight),
            "forget_nll": LossTerm(nll, count, "forget_tokens", 0.0),
        }
