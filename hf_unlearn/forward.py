"""The one forward pass every unlearning objective uses (policy and reference alike).

- `use_cache=False`: training and scoring never need a KV cache (at 7B one 4096-token sequence's cache is ~2 GB).
- Position ids come from the attention mask, so a left-padded row gets the same positions as the same row padded
  on the right (models with absolute position embeddings would otherwise shift; RoPE models agree exactly).
- Optionally the hidden states after decoder layer `hidden_layer` (0 = the embeddings), for representation-level
  objectives (RMU); they are requested only then.

It works for plain models, DDP / DeepSpeed engines (called like the model) and PEFT models.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn


@dataclass
class ForwardOutput:
    """Logits `[batch, seq, vocab]` and, when asked for, the hidden states of one layer `[batch, seq, hidden]`."""

    logits: torch.Tensor
    hidden: torch.Tensor | None = None


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over each row's real tokens (padding gets 0), whichever side the padding is on."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@lru_cache(maxsize=128)
def _accepts(forward_type: type, argument: str) -> bool:
    """Whether `forward_type.forward` takes `argument` (by name or through **kwargs)."""
    try:
        parameters = inspect.signature(forward_type.forward).parameters
    except (TypeError, ValueError):
        return True
    return argument in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _innermost(model: nn.Module) -> nn.Module:
    """The module whose forward signature decides the arguments (through DDP / DeepSpeed / PEFT wrappers)."""
    seen = 0
    while hasattr(model, "module") and isinstance(model.module, nn.Module) and seen < 4:
        model, seen = model.module, seen + 1
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def forward(model: nn.Module, batch: dict[str, torch.Tensor], hidden_layer: int | None = None) -> ForwardOutput:
    """Run `model` on `batch` (`input_ids`, optional `attention_mask`) without labels or a cache."""
    inner = type(_innermost(model))
    kwargs = {"input_ids": batch["input_ids"]}
    if _accepts(inner, "use_cache"):
        kwargs["use_cache"] = False
    mask = batch.get("attention_mask")
    if mask is not None:
        kwargs["attention_mask"] = mask
        if _accepts(inner, "position_ids"):
            kwargs["position_ids"] = position_ids_from_mask(mask)
    if hidden_layer is not None:
        kwargs["output_hidden_states"] = True
    output = model(**kwargs)
    hidden = output.hidden_states[hidden_layer] if hidden_layer is not None else None
    return ForwardOutput(logits=output.logits, hidden=hidden)
