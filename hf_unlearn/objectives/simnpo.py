"""SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM
Unlearning"), the forget term, in open-unlearning's parameterisation:

    forget_loss = -(2 / beta) * mean_s log sigmoid(beta * (NLL(s) / |s| - delta))

NLL(s) / |s| is the sequence's mean next-token NLL over its |s| targets; no reference model. Sign convention: the
paper writes -(2/beta) log sigmoid(-(beta/|s|) log p(s) - gamma); since -log p(s) = NLL(s) this is the formula
above with gamma = beta * delta. We follow open-unlearning (delta inside), so its configs carry over. Differences
from open-unlearning: |s| counts the next-token targets exactly (open-unlearning counts labels != -100 before the
shift, one more for document data whose first token is a label). Defaults: beta 4.5, delta 0, forget weight 0.125,
retain NLL weight 1 (open-unlearning's `SimNPO.yaml`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..losses import simnpo_sum
from .base import LossTerm, Objective, register_objective
from .npo import sequence_logp


@dataclass
class SimNPOParams:
    """SimNPO's hyperparameters.

    Parameters:
        simnpo_beta (`float`, *optional*, defaults to `4.5`):
            beta of the formula above (open-unlearning's `SimNPO.yaml`: 4.5).
        simnpo_delta (`float`, *optional*, defaults to `0.0`):
            the margin delta of the formula above (open-unlearning: 0).
    """

    simnpo_beta: float = field(default=4.5, metadata={"help": "SimNPO's beta (open-unlearning: 4.5)."})
    simnpo_delta: float = field(default=0.0, metadata={"help": "SimNPO's margin delta (open-unlearning: 0)."})


@register_objective("simnpo")
class SimpleNegativePreference(Objective):
    params = SimNPOParams
    kind = stream = "forget"
    terms = ("forget_loss", "forget_nll")
    normalisers = ("forget_sequences", "forget_tokens")

    def loss_terms(self, batch, outputs):
        _, nll, counts = sequence_logp(outputs["logits"], batch, self.chunk_size)
        total = simnpo_sum(nll, counts, self.args.simnpo_beta, self.args.simnpo_delta)
        return {
            "forget_loss": LossTerm(total, (counts > 0).sum(), "forget_sequences", self.args.forget_weight),
            "forget_nll": LossTerm(nll.detach().sum(), counts.sum(), "forget_tokens", 0.0),
        }
