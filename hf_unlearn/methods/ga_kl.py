"""Methods 5 and 7 of Yao et al. 2024: gradient ascent on forget data + KL to the original model on retain data.

    loss = -forget_weight * NLL(f) + retain_weight * KL(P_theta0 || P_theta)(r)

The KL is summed over the vocabulary and averaged over the real (non-padding) next-token positions of the retain
chunks r; it is the true KL, so it is 0 at the start of training. Method 5 takes r from the forget set's domain,
method 7 from a general corpus. theta0 is the frozen original model (`ref_model`), sharded like the policy.
With `retain_weight=0` neither the retain nor the reference forward pass runs.
"""

from __future__ import annotations

from ..losses import kl_sum
from ..registry import register_method
from ..trainer import LossTerm, UnlearningTrainer


@register_method("ga_kl")
class GradientAscentKLTrainer(UnlearningTrainer):
    paper_name = "GA + KL on in-distribution (method 5) or general (method 7) data"
    needs_retain = True
    needs_reference = True

    def unlearning_terms(self, model, inputs):
        forget, retain = self.split_inputs(inputs)
        terms = self.ascent_terms(model, forget)
        if self.args.retain_weight > 0:
            ref = self.reference_logits(retain)
            total, count = kl_sum(ref, self.logits(model, retain), retain["labels"])
            terms["retain_loss"] = LossTerm(total, count, "retain", self.args.retain_weight)
        return terms
