"""Unlearning with adversarial samples: the forget term of method 3 of Yao et al. 2024.

    forget_loss = NLL(f ; a)    a_t = argmax_{a != w_t} P_theta0(a | w_<t)

Each target is the original model's most likely *wrong* token at that position (exactly the paper's formula; see
`hf_unlearn.losses.adversarial_targets`). The targets are computed once before training by the frozen original
model, split across processes (`hf_unlearn.precompute`); the original model is released as soon as they exist, so
training holds no second model. With `cache_dir` set they are cached, keyed by the weights and the data.
"""

from __future__ import annotations

import gc

import torch

from ..data import as_hf_dataset
from ..losses import adversarial_targets
from ..precompute import precompute, weights_fingerprint
from ..streams import UnlearningCollator
from .base import register_objective
from .substitute import SubstituteTargets


@register_objective("adversarial")
class AdversarialTargets(SubstituteTargets):
    token_columns = ("adversarial_labels",)
    summary = "descent towards the original model's most likely wrong token"

    def prepare(self, dataset):
        trainer = self.trainer
        dataset = as_hf_dataset(dataset)
        state: dict = {}

        def original():
            if "model" not in state:
                state["model"] = trainer.frozen_original_model()
            return state["model"]

        collator = UnlearningCollator(pad_token_id=trainer.pad_token_id, padding_side="right")

        def compute_batch(indices: list[int]) -> list[torch.Tensor]:
            rows = [dataset[i] for i in indices]
            batch = collator([{k: row[k] for k in ("input_ids", "attention_mask", "labels")} for row in rows])
            batch = {k: v.to(trainer.args.device) for k, v in batch.items()}
            with torch.no_grad():
                logits = trainer.reference_forward(batch, original()).logits
            targets = adversarial_targets(logits, batch["labels"], batch["attention_mask"]).cpu()
            return [targets[row, : len(r["input_ids"])] for row, r in enumerate(rows)]

        values = precompute(
            dataset,
            compute_batch,
            kind="adversarial_targets",
            batch_size=self.args.adversarial_batch_size,
            accelerator=trainer.accelerator,
            cache_dir=self.args.cache_dir,
            model_fingerprint=lambda: weights_fingerprint(trainer.unwrapped_original(original()), trainer.accelerator),
            expected_lengths=[len(ids) for ids in dataset["input_ids"]],
        )
        release(state.pop("model", None))
        return dataset.add_column("adversarial_labels", [v.tolist() for v in values])


def release(model) -> None:
    """Free a frozen model as soon as its job is done (a DeepSpeed engine keeps partitioned weights until destroyed)."""
    if model is None:
        return
    if hasattr(model, "destroy"):
        model.destroy()
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
