"""UNDIAL (Dong et al. 2024, "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large
Language Models"), the forget term:

    forget_loss = mean_t CE( softmax(z_ref,t - beta * onehot(y_t)),  p_theta(. | w_<t) )

descent towards the original model's distribution with the true token's logit lowered by beta. It needs the
original model's full distribution at every position, so the reference runs during training (too large to
precompute: vocabulary x tokens). Difference from open-unlearning: its UNDIAL applies the adjustment at every
position, including prompt and padding positions whose -100 labels wrap to a real token id in the one-hot; here
only real next-token targets count. Default beta 10, retain NLL weight 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..losses import undial_sums
from .base import LossTerm, Objective, register_objective


@dataclass
class UndialParams:
    """UNDIAL's hyperparameters.

    Parameters:
        undial_beta (`float`, *optional*, defaults to `10.0`):
            beta of the formula above: how far the true token's reference logit is lowered.
    """

    undial_beta: float = field(default=10.0, metadata={"help": "UNDIAL's logit adjustment of the true token."})


@register_objective("undial")
class AdjustedSelfDistillation(Objective):
    params = UndialParams
    kind = stream = "forget"
    terms = ("forget_loss", "forget_nll")
    normalisers = ("forget_tokens",)
    needs_reference = True

    def loss_terms(self, batch, outputs):
        total, count, nll = undial_sums(
            outputs["reference"],
            outputs["logits"],
            batch["labels"],
            batch.get("attention_mask"),
            self.args.undial_beta,
            self.chunk_size,
        )
        return {
            "forget_loss": LossTerm(total, count, "forget_tokens", self.args.forget_weight),
            "forget_nll": LossTerm(nll, count, "forget_tokens", 0.0),
        }
