"""Per-example values from the frozen original model, computed once before training (adversarial targets, reference
log-probabilities). The original model is loaded only when something must be computed (never on a cache hit, never
for a PEFT policy, whose adapter-free base is the original) and released right after, so training holds no copy."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..data import as_hf_dataset
from ..forward import ForwardOutput
from ..losses import IGNORE_INDEX
from ..precompute import precompute, weights_fingerprint
from ..streams import UnlearningCollator

if TYPE_CHECKING:
    from ..trainer import UnlearningTrainer


def precompute_with_original(
    trainer: UnlearningTrainer,
    dataset,
    kind: str,
    per_batch: Callable[[ForwardOutput, dict[str, torch.Tensor]], torch.Tensor | list[torch.Tensor]],
    per_token: bool,
    value_range: tuple[float, float] | None = None,
) -> list[torch.Tensor]:
    """`per_batch(original model's output, right-padded batch)` -> per-row values, for every example of `dataset`.

    `per_token`: the values are `[batch, seq]` and are cut to each example's length; else one number per row.
    `value_range`: (low, high) every cached value must lie in (-100, a position without a target, aside), else the
    cache entry is recomputed.
    """
    dataset = as_hf_dataset(dataset)
    state: dict = {}

    def original():
        if "model" not in state:
            state["model"] = trainer.frozen_original_model()
        return state["model"]

    collator = UnlearningCollator(pad_token_id=trainer.pad_token_id, padding_side="right")

    def compute_batch(indices: list[int]) -> list[torch.Tensor]:
        rows = [dataset[i] for i in indices]
        batch = collator([{k: row[k] for k in ("input_ids", "attention_mask", "labels") if k in row} for row in rows])
        batch = {k: v.to(trainer.args.device) for k, v in batch.items()}
        with torch.no_grad():
            output = trainer.reference_forward(
                batch, original(), full_logits=trainer.unlearning_args.loss_chunk_size <= 0
            )
            values = per_batch(output, batch)
        values = values.detach().cpu()
        if per_token:
            return [values[row, : len(r["input_ids"])] for row, r in enumerate(rows)]
        return [values[row].reshape(1) for row in range(len(rows))]

    lengths = [len(ids) for ids in dataset["input_ids"]] if per_token else [1] * len(dataset)
    values = precompute(
        dataset,
        compute_batch,
        kind=kind,
        batch_size=trainer.unlearning_args.precompute_batch_size,
        accelerator=trainer.accelerator,
        cache_dir=trainer.unlearning_args.cache_dir,
        model_fingerprint=lambda: weights_fingerprint(trainer.unwrapped_original(original()), trainer.accelerator),
        expected_lengths=lengths,
        value_range=value_range,
        ignore_value=IGNORE_INDEX,
    )
    release(state.pop("model", None), keep=trainer.ref_model)
    return values


def release(model, keep=None) -> None:
    """Free a frozen model once its job is done (a DeepSpeed engine keeps partitioned weights until destroyed);
    `keep` (the trainer's own reference model) is never released."""
    if model is None or model is keep:
        return
    if hasattr(model, "destroy"):
        model.destroy()
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
