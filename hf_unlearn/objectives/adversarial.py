"""Unlearning with adversarial samples: the forget term of method 3 of Yao et al. 2024.

    forget_loss = NLL(f ; a)    a_t = argmax_{a != w_t} P_theta0(a | w_<t)

Each target is the original model's most likely *wrong* token at that position (exactly the paper's formula; see
`hf_unlearn.losses.adversarial_targets`). The targets are computed once before training by the frozen original
model, split across processes (`objectives.frozen`); the original model is released as soon as they exist, so
training holds no second model. With `cache_dir` set they are cached, keyed by the weights and the data.
"""

from __future__ import annotations

from ..data import as_hf_dataset
from ..losses import adversarial_targets
from .base import register_objective
from .frozen import precompute_with_original
from .substitute import SubstituteTargets


@register_objective("adversarial")
class AdversarialTargets(SubstituteTargets):
    precomputes = True
    token_columns = ("adversarial_labels",)

    def vocab_size(self) -> int:
        return self.setup.policy_config().vocab_size

    def prepare(self, dataset):
        dataset = as_hf_dataset(dataset)
        values = precompute_with_original(
            self.setup,
            dataset,
            "adversarial_targets",
            lambda output, batch: adversarial_targets(
                output.token_logits, batch["labels"], batch["attention_mask"], self.chunk_size
            ),
            per_token=True,
            value_range=(0, self.vocab_size() - 1),  # a cached id outside the vocabulary is recomputed
        )
        return dataset.add_column("adversarial_labels", [v.tolist() for v in values])
