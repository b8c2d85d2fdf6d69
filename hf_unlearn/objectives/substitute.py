"""Shared by the objectives that descend towards substitute targets instead of the true tokens (methods 2, 3)."""

from __future__ import annotations

from ..losses import substitute_nll_sums
from .base import LossTerm, Objective


class SubstituteTargets(Objective):
    """forget_loss = NLL(f ; substitute targets in `token_columns[0]`); `forget_nll` logs the true-label NLL."""

    kind = stream = "forget"
    terms = ("forget_loss", "forget_nll")
    normalisers = ("forget_tokens",)

    def loss_terms(self, batch, outputs):
        total, count, true_total, true_count = substitute_nll_sums(
            outputs["logits"],
            batch[self.token_columns[0]],
            batch["labels"],
            batch.get("attention_mask"),
            self.chunk_size,
        )
        return {
            "forget_loss": LossTerm(total, count, "forget_tokens", self.args.forget_weight),
            "forget_nll": LossTerm(true_total, true_count, "forget_tokens", 0.0),
        }
