"""Per-example values from the frozen original model, computed once before training (adversarial targets, reference
log-probabilities). The original model is loaded only when something must be computed (never on a cache hit, never
for a PEFT policy, whose adapter-free base is the original) and released right after, so training holds no copy."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..data import as_hf_dataset
from ..forward import ForwardOutput
from ..losses import IGNORE_INDEX
from ..precompute import precompute, weights_fingerprint
from ..streams import UnlearningCollator
from .base import RunSetup


def precompute_with_original(
    setup: RunSetup,
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
            state["model"] = setup.original.borrow()
        return state["model"]

    collator = UnlearningCollator(pad_token_id=setup.pad_token_id, padding_side="right")

    def compute_batch(indices: list[int]) -> list[torch.Tensor]:
        rows = [dataset[i] for i in indices]
        batch = collator([{k: row[k] for k in ("input_ids", "attention_mask", "labels") if k in row} for row in rows])
        batch = {k: v.to(setup.args.device) for k, v in batch.items()}
        with torch.no_grad():
            output = setup.original.forward(batch, original(), full_logits=setup.unlearning_args.loss_chunk_size <= 0)
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
        batch_size=setup.unlearning_args.precompute_batch_size,
        accelerator=setup.accelerator,
        cache_dir=setup.unlearning_args.cache_dir,
        model_fingerprint=lambda: weights_fingerprint(setup.original.weights(original()), setup.accelerator),
        expected_lengths=lengths,
        value_range=value_range,
        ignore_value=IGNORE_INDEX,
    )
    setup.original.give_back(state.pop("model", None))
    return values
