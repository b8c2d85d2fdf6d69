"""Negative Preference Optimization (NPO; Zhang et al. 2024, "Negative Preference Optimization: From Catastrophic
Collapse to Effective Unlearning"), the forget term:

    forget_loss = -(2 / beta) * mean_s log sigmoid(-beta * (log p_theta(s) - log p_ref(s)))

s a forget sequence (its target tokens summed), the mean over sequences of the global batch (normaliser
`forget_sequences`). The reference enters only as one number per sequence, log p_ref(s): it is precomputed once
before training (`objectives.frozen`) and the original model is released, so NPO trains at gradient ascent's
memory with no second model (open-unlearning keeps a full reference replica). Defaults: beta 0.1
(open-unlearning's `NPO.yaml`), retain NLL with weight 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data import as_hf_dataset
from ..losses import TokenLogits, npo_sum, sequence_nll
from .base import LossTerm, Objective, register_objective
from .frozen import precompute_with_original

REF_LOGP = "ref_logp"


@dataclass
class NPOParams:
    """NPO's hyperparameters.

    Parameters:
        npo_beta (`float`, *optional*, defaults to `0.1`):
            beta of the formula above (open-unlearning's `NPO.yaml`: 0.1).
    """

    npo_beta: float = field(default=0.1, metadata={"help": "NPO's beta (open-unlearning: 0.1)."})


def add_reference_logp(setup, dataset):
    """`dataset` with a `ref_logp` column: log p_ref(s), summed over each example's targets, from the original
    model, computed once (`objectives.frozen`)."""
    dataset = as_hf_dataset(dataset)
    values = precompute_with_original(
        setup,
        dataset,
        "sequence_logp",
        lambda output, batch: (
            -sequence_nll(
                output.token_logits, batch["labels"], batch["attention_mask"], setup.unlearning_args.loss_chunk_size
            )[0]
        ),
        per_token=False,
    )
    return dataset.add_column(REF_LOGP, [float(v[0]) for v in values])


def sequence_logp(
    logits: TokenLogits, batch: dict[str, torch.Tensor], chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row summed target log-probabilities of `logits` on `batch`, per-row NLL sums and target counts."""
    nll, counts = sequence_nll(logits, batch["labels"], batch.get("attention_mask"), chunk_size)
    return -nll, nll, counts


@register_objective("npo")
class NegativePreference(Objective):
    params = NPOParams
    precomputes = True
    kind = stream = "forget"
    terms = ("forget_loss", "forget_nll")
    normalisers = ("forget_sequences", "forget_tokens")
    example_columns = (REF_LOGP,)

    def prepare(self, dataset):
        return add_reference_logp(self.setup, dataset)

    def loss_terms(self, batch, outputs):
        logp, nll, counts = sequence_logp(outputs["logits"], batch, self.chunk_size)
        rows = counts > 0
        total = npo_sum(logp, batch[REF_LOGP].to(logp.device), self.args.npo_beta, rows)
        return {
            "forget_loss": LossTerm(total, rows.sum(), "forget_sequences", self.args.forget_weight),
            "forget_nll": LossTerm(nll.detach().sum(), counts.sum(), "forget_tokens", 0.0),
        }
