"""DPO with "I don't know" answers (TOFU's IdkDPO; Rafailov et al. 2023 with Maini et al. 2024's refusals):

    forget_loss = -(2 / beta) * mean_pairs log sigmoid(beta * ((log p(idk) - log p_ref(idk)) - (log p(ans) - log p_ref(ans))))

preferred = the refusal (the aligned "idk" stream), rejected = the true answer (the forget stream), each log p
summed over the answer's tokens. Both reference log-probabilities are precomputed once (`objectives.frozen`), so
no reference model is held during training (open-unlearning keeps one). Defaults: beta 0.1, retain NLL weight 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..losses import dpo_sum
from .base import LossTerm, Pass, register_objective
from .idk import IDK, IdkParams, IdkStream
from .npo import REF_LOGP, add_reference_logp, sequence_logp


@dataclass
class IdkDPOParams(IdkParams):
    """IdkDPO's hyperparameters: `IdkParams` (the refusals' seed) and

    Parameters:
        dpo_beta (`float`, *optional*, defaults to `0.1`):
            beta of the formula above (open-unlearning's `IdkDPO.yaml`: 0.1).
    """

    dpo_beta: float = field(default=0.1, metadata={"help": "IdkDPO's beta (open-unlearning: 0.1)."})


@register_objective("idk_dpo")
class IdkPreference(IdkStream):
    params = IdkDPOParams
    precomputes = True
    terms = ("forget_loss", "forget_nll")
    normalisers = ("forget_sequences", "forget_tokens")
    example_columns = (REF_LOGP,)

    def prepare(self, dataset):
        return add_reference_logp(self.setup, dataset)

    def prepare_idk(self, dataset):
        return add_reference_logp(self.setup, dataset)

    def passes(self):
        return {"forget": Pass("forget"), "idk": Pass(IDK)}

    def loss_terms(self, inputs, outputs):
        forget, idk = inputs["forget"], inputs[IDK]
        logp_rejected, nll, counts = sequence_logp(outputs["forget"], forget, self.chunk_size)
        logp_chosen, _, idk_counts = sequence_logp(outputs["idk"], idk, self.chunk_size)
        rows = (counts > 0) & (idk_counts > 0)
        total = dpo_sum(
            logp_chosen,
            idk[REF_LOGP].to(logp_chosen.device),
            logp_rejected,
            forget[REF_LOGP].to(logp_rejected.device),
            self.args.dpo_beta,
            rows,
        )
        return {
            "forget_loss": LossTerm(total, rows.sum(), "forget_sequences", self.args.forget_weight),
            "forget_nll": LossTerm(nll.detach().sum(), counts.sum(), "forget_tokens", 0.0),
        }
