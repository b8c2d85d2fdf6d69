"""Robustness attacks on an unlearned model: does the forgetting survive quantisation or a little fine-tuning?

Both attacks work on a **copy** of the model (`copy.deepcopy`): the model passed in is never modified, nothing is
written to disk, and each attack returns the metric values before and after, so any metric callable
(`model -> float`) can be re-measured, e.g. TOFU's forget truth ratio or a forget-set NLL.

- `quantize_weights` / `quantization_attack`: weight-only round-to-nearest (RTN) quantisation, symmetric, per group
  of `group_size` consecutive input features of each output row of every `nn.Linear` (the output head excepted, see
  `quantize_weights`). Zhang et al. 2024 ("Catastrophic failure of LLM unlearning via quantization") report that
  4-bit RTN restores much of what gradient-ascent-style unlearning removed: unlearning that moves weights by less
  than the quantisation step is undone by rounding.
- `relearning_attack`: fine-tune the copy for a few steps on a small relearn set (e.g. half of the forget set, or
  other data) and re-measure on held-out data (e.g. the other half): knowledge that was hidden rather than removed
  comes back after far fewer steps than learning it took (Lynch et al. 2024; Hu et al. 2024).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..streams import UnlearningCollator

MetricFn = Callable[[nn.Module], float]
# What the attacks re-measure: {name: callable(model) -> float}, or one callable(model) -> {name: float}.
Metrics = Mapping[str, MetricFn] | Callable[[nn.Module], Mapping[str, float]]

# Modules kept in full precision by default: the output head (weight-only quantisers such as GPTQ / AWQ keep it,
# and when tied to the input embeddings quantising it would also quantise the embedding table).
DEFAULT_SKIP = ("lm_head",)


def quantize_tensor(weight: torch.Tensor, bits: int, group_size: int = 128) -> torch.Tensor:
    """Symmetric round-to-nearest quantisation of a 2-D weight `[out, in]`, dequantised back to its dtype.

    Each row is cut into groups of `group_size` consecutive input features (the last group may be shorter); a group
    `g` gets the scale `s = max|g| / q` with `q = 2**(bits-1) - 1` (127 for 8 bits, 7 for 4 bits) and each element
    becomes `s * round(w / s)`. The integer `round(w / s)` lies in `[-q, q]` because `|w / s| <= q`, so no clamping
    happens and the grid is symmetric around 0 (one of the 2**bits codes, -q-1, is unused).

    Error bound (derived): for every element, `|w - s * round(w / s)| = s * |w/s - round(w/s)| <= s / 2`, since
    rounding to the nearest integer moves a real number by at most 1/2. With `s = max|g| / q` this is
    `|error| <= max|g| / (2q)`: 1/254 of the group's largest magnitude at 8 bits, 1/14 at 4 bits. The computation is
    done in float32 (rounding error ~1e-7 relative, far below s/2) and cast back. An all-zero group (s = 0) stays 0.
    """
    if weight.dim() != 2:
        raise ValueError(f"quantize_tensor expects a 2-D [out, in] weight; got shape {tuple(weight.shape)}.")
    if bits < 2:
        raise ValueError(f"bits={bits}: symmetric quantisation needs at least 2 bits.")
    if group_size < 1:
        raise ValueError(f"group_size={group_size} must be at least 1.")
    out_features, in_features = weight.shape
    q = 2 ** (bits - 1) - 1
    w = weight.detach().to(torch.float32)
    pad = (-in_features) % group_size
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    groups = w.reshape(out_features, -1, group_size)
    scale = groups.abs().amax(dim=-1, keepdim=True) / q
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    dequantised = torch.round(groups / safe) * scale
    return dequantised.reshape(out_features, -1)[:, :in_features].to(weight.dtype)


def quantize_weights(
    model: nn.Module, bits: int, group_size: int = 128, skip: Sequence[str] = DEFAULT_SKIP, inplace: bool = False
) -> nn.Module:
    """Weight-only RTN quantisation (`quantize_tensor`: symmetric, per group over the input dimension) of every
    `nn.Linear` whose qualified name does not end with a name in `skip` (default: the output head `lm_head`).

    Embeddings (`nn.Embedding`), norms and biases keep full precision. The weights are quantised and dequantised
    ("fake quantisation"): the model keeps its dtype and runs as before, with exactly the values a real int-`bits`
    kernel would use.

    Contract: with `inplace=False` (default) the model is deep-copied first and the copy is returned (the input is
    untouched); with `inplace=True` the input itself is changed and returned.
    """
    target = model if inplace else copy.deepcopy(model)
    skip = tuple(skip)
    with torch.no_grad():
        for name, module in target.named_modules():
            if isinstance(module, nn.Linear) and not any(name == s or name.endswith("." + s) for s in skip):
                module.weight.copy_(quantize_tensor(module.weight, bits, group_size))
    return target


def _measure(model: nn.Module, metrics: Metrics) -> dict[str, float]:
    """`metrics` on `model`: a mapping name -> callable(model) -> float, or one callable(model) -> {name: float}
    (several numbers from one pass, e.g. every forget metric of one scoring run)."""
    if callable(metrics):
        return {name: float(value) for name, value in metrics(model).items()}
    return {name: float(fn(model)) for name, fn in metrics.items()}


def quantization_attack(
    model: nn.Module,
    metrics: Metrics,
    bits: Sequence[int] = (8, 4),
    group_size: int = 128,
    skip: Sequence[str] = DEFAULT_SKIP,
    before: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Re-measure `metrics` on RTN-quantised copies of `model` (`quantize_weights`), one per bit width.

    Args:
        metrics: name -> callable(model) -> float (e.g. the forget set's truth ratio, a forget NLL), or one
            callable(model) -> {name: float}.
        bits: bit widths to try (8 and 4 by default).
        before: the metric values of the unquantised model if already known (saves one measurement).

    Returns:
        `{"before": {name: value}, "8bit": {...}, "4bit": {...}, "settings": {...}}`; the input model is unchanged
        and each quantised copy is freed before the next is made.
    """
    result: dict[str, Any] = {"before": dict(before) if before is not None else _measure(model, metrics)}
    for width in bits:
        quantised = quantize_weights(model, width, group_size, skip)
        result[f"{width}bit"] = _measure(quantised, metrics)
        del quantised
    result["settings"] = {
        "method": "RTN, symmetric, per group over the input dim, weight-only",
        "bits": list(bits),
        "group_size": group_size,
        "skipped_modules": list(skip),
    }
    return result


def _batches(examples: Sequence[Mapping[str, Sequence[int]]], batch_size: int, steps: int, seed: int):
    """`steps` batches drawn by cycling over seeded permutations of `examples` (a new permutation per pass)."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for _ in range(steps):
        batch = []
        while len(batch) < batch_size:
            if not order:
                order = torch.randperm(len(examples), generator=generator).tolist()
            batch.append(examples[order.pop(0)])
        yield batch


def relearn(
    model: nn.Module,
    examples: Sequence[Mapping[str, Sequence[int]]],
    pad_token_id: int,
    steps: int = 10,
    learning_rate: float = 1e-5,
    batch_size: int = 4,
    seed: int = 0,
) -> nn.Module:
    """Fine-tune every parameter of `model` IN PLACE for `steps` AdamW steps (constant lr, no weight decay, no warmup) on tokenised
    `examples` (`input_ids` + `labels`, -100 = not a target; e.g. prompt-masked QA from `build_qa_dataset`), with the
    model's own mean token NLL loss, batches cycling through seeded permutations. Returns the model (eval mode)."""
    if len(examples) == 0:
        raise ValueError("The relearn set is empty.")
    if steps < 1:
        raise ValueError(f"steps={steps} must be at least 1.")
    rows = [examples[i] for i in range(len(examples))]
    device = next(model.parameters()).device
    collator = UnlearningCollator(pad_token_id)  # right padding; labels -100 and attention mask 0 on the padding
    model.requires_grad_(True)  # every parameter, also of a model that was frozen (e.g. used as a reference)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    model.train()
    for batch in _batches(rows, batch_size, steps, seed):
        padded = collator([{key: row[key] for key in ("input_ids", "labels")} for row in batch])
        loss = model(**{key: value.to(device) for key, value in padded.items()}).loss
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"The relearning loss is {loss.item()}; lower learning_rate.")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return model


def relearning_attack(
    model: nn.Module,
    relearn_examples: Sequence[Mapping[str, Sequence[int]]],
    metrics: Metrics,
    pad_token_id: int,
    steps: int = 10,
    learning_rate: float = 1e-5,
    batch_size: int = 4,
    seed: int = 0,
    before: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Relearning attack: fine-tune a deep copy of `model` on `relearn_examples` (`relearn`) and re-measure `metrics`
    (which should measure held-out data, e.g. the half of the forget set not relearned on).

    Returns `{"before": {...}, "after": {...}, "settings": {...}}`; the input model is unchanged (the copy is freed).
    """
    result: dict[str, Any] = {"before": dict(before) if before is not None else _measure(model, metrics)}
    attacked = relearn(copy.deepcopy(model), relearn_examples, pad_token_id, steps, learning_rate, batch_size, seed)
    result["after"] = _measure(attacked, metrics)
    del attacked
    result["settings"] = {
        "optimizer": "AdamW (constant lr, no weight decay)",
        "steps": steps,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "seed": seed,
        "relearn_examples": len(relearn_examples),
    }
    return result
