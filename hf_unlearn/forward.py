"""The one forward pass every unlearning objective uses (policy and reference alike).

- `use_cache=False`: training and scoring never need a KV cache (at 7B one 4096-token sequence's cache is ~2 GB).
- Position ids come from the attention mask, so a left-padded row gets the same positions as the same row padded
  on the right (models with absolute position embeddings would otherwise shift; RoPE models agree exactly).
- Optionally the output of decoder layer `layer` (0-based, `get_decoder().layers[layer]`), for representation-level
  objectives (RMU), read by a forward hook on that layer: `output_hidden_states` is not a layer's output for the
  last layer (its last entry is after the final norm in transformers 5).
- `full_logits=False`: the `[batch, seq, vocab]` logits are not computed. The model is still called
  through its wrapper (DDP / DeepSpeed / PEFT see the forward pass) with `logits_to_keep=1`, so its LM head runs on
  the last position only; the final hidden states (after the final norm) are read by a forward hook on the
  model's decoder (`get_decoder()`, whose output is the `last_hidden_state` the head reads), and the loss applies
  the head chunk by chunk (`hf_unlearn.losses.TokenLogits`). The head is the innermost model's
  `get_output_embeddings()` called as a module (ZeRO-3 gathers it, a LoRA on it applies), followed by the logit
  post-processing of the model's forward (Gemma 2/3 `final_logit_softcapping`, Cohere `logit_scale`, Granite
  `logits_scaling`). Every call checks that route against the model's own logits at the last position, which the
  forward pass returns anyway: a model whose forward does something else to its logits (or that takes no
  `logits_to_keep`, or has no decoder / output embedding to hook) gets full logits instead, with one warning per
  model class. No extra memory: the hook keeps a reference to a tensor the forward pass makes anyway.

It works for plain models, DDP / DeepSpeed engines (called like the model) and PEFT models.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from .losses import TokenLogits

logger = logging.getLogger(__name__)

# Model classes whose hidden-state route did not reproduce their logits (they get full logits from then on).
_MISMATCHED: set[type] = set()


@dataclass
class ForwardOutput:
    """The output of `forward`.

    Attributes:
        logits: `[batch, seq, vocab]`, or None when `forward(..., full_logits=False)` could avoid them.
        hidden: when asked for, the output of one decoder layer `[batch, seq, hidden]`.
        token_logits: what the losses read: the full logits, or the final hidden states with the output head.
    """

    logits: torch.Tensor | None
    hidden: torch.Tensor | None = None
    token_logits: TokenLogits | None = None

    def __post_init__(self):
        if self.token_logits is None and self.logits is not None:
            self.token_logits = TokenLogits(self.logits)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over each row's real tokens (padding gets 0), whichever side the padding is on."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@lru_cache(maxsize=128)
def _parameters(forward_type: type) -> Mapping[str, inspect.Parameter] | None:
    """The parameters of `forward_type.forward`, or None when its signature cannot be read."""
    try:
        return inspect.signature(forward_type.forward).parameters
    except (TypeError, ValueError):
        return None


def _accepts(forward_type: type, argument: str) -> bool:
    """Whether `forward_type.forward` takes `argument` (by name or through **kwargs; yes when unreadable)."""
    parameters = _parameters(forward_type)
    return parameters is None or argument in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _names(forward_type: type, argument: str) -> bool:
    """Whether `forward_type.forward` names `argument` explicitly (not only through **kwargs; no when unreadable)."""
    parameters = _parameters(forward_type)
    return parameters is not None and argument in parameters


def _innermost(model: nn.Module) -> nn.Module:
    """The module whose forward signature decides the arguments (through DDP / DeepSpeed / PEFT wrappers)."""
    seen = 0
    while hasattr(model, "module") and isinstance(model.module, nn.Module) and seen < 4:
        model, seen = model.module, seen + 1
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def _logit_postprocess(config) -> list:
    """The elementwise steps the model's forward applies after its LM head, read from its config."""
    steps = []
    model_type = str(getattr(config, "model_type", ""))
    if model_type.startswith("cohere") and getattr(config, "logit_scale", None) is not None:
        scale = float(config.logit_scale)
        steps.append(lambda logits: logits * scale)
    if model_type.startswith("granite") and getattr(config, "logits_scaling", None) is not None:
        scaling = float(config.logits_scaling)
        steps.append(lambda logits: logits / scaling)
    cap = getattr(config, "final_logit_softcapping", None)
    if cap is not None:
        cap = float(cap)
        steps.append(lambda logits: torch.tanh(logits / cap) * cap)
    return steps


class OutputHead:
    """The model's logits from its final hidden states: output embedding (called as a module) + post-processing."""

    def __init__(self, embedding: nn.Module, config):
        self.embedding = embedding
        self.steps = _logit_postprocess(config)

    def parameters(self):
        """The output embedding's parameters (those a gradient of the logits reaches)."""
        return self.embedding.parameters()

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.embedding(hidden)
        for step in self.steps:
            logits = step(logits)
        return logits

    def into(self, hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The logits of `hidden` as `self(hidden)` gives them, written into `out` where that is the same
        computation: without gradients or autocast, for a bias-free plain `nn.Linear` output embedding with no
        hooks (no ZeRO-3 / PEFT / quantisation), `out` of the result's shape, dtype and device. Otherwise the module
        call's own result. Scoring reuses one buffer across blocks of positions, which on CPU saves returning and
        re-faulting a block-sized allocation every block (2-3% of a scoring pass with 2 threads)."""
        embedding = self.embedding
        plain = (
            type(embedding) is nn.Linear
            and embedding.bias is None
            and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled(hidden.device.type)
            and not (embedding._forward_hooks or embedding._forward_pre_hooks)
            and not (nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)
            and out.shape == (hidden.shape[0], embedding.out_features)
            and out.dtype == hidden.dtype == embedding.weight.dtype
            and out.device == hidden.device
        )
        if not plain:
            return self(hidden)
        logits = torch.mm(hidden, embedding.weight.t(), out=out)
        for step in self.steps:
            logits = step(logits)
        return logits


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of `model` (through DDP / DeepSpeed / PEFT wrappers): `get_decoder().layers`."""
    inner = _innermost(model)
    try:
        decoder = inner.get_decoder()
    except (AttributeError, NotImplementedError, ValueError):
        decoder = inner
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"{type(inner).__name__} has no decoder layers to read a layer's output from (`get_decoder().layers`); "
            "a representation objective such as RMU needs a decoder-only transformer."
        )
    return layers


def _hidden_route(inner: nn.Module) -> tuple[nn.Module, OutputHead] | None:
    """(decoder to hook, output head) when `inner` can give its final hidden states without full logits."""
    if type(inner) in _MISMATCHED or not _names(type(inner), "logits_to_keep"):
        return None
    try:
        decoder = inner.get_decoder()
        embedding = inner.get_output_embeddings()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if not isinstance(decoder, nn.Module) or not isinstance(embedding, nn.Module) or decoder is inner:
        return None
    config = getattr(inner, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return decoder, OutputHead(embedding, config)


def _last_hidden(output) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _matches(head: OutputHead, hidden: torch.Tensor, logits: torch.Tensor) -> bool:
    """Whether the head applied to the last position's hidden state gives the model's own last-position logits."""
    if hidden.dim() != 3 or logits.dim() != 3 or logits.size(1) != 1 or hidden.shape[:1] != logits.shape[:1]:
        return False
    with torch.no_grad():
        mine = head(hidden[:, -1:].detach()).float()
    theirs = logits.detach().float()
    if mine.shape != theirs.shape:
        return False
    # The same operations on the same tensor: equal up to kernel choice (a few ulps of the logits' dtype). Non-finite
    # logits (a diverged model) must be non-finite in the same places, with the same value.
    relative = 1e-4 if logits.dtype == torch.float32 else 2e-2
    finite = theirs.isfinite()
    if not torch.equal(finite, mine.isfinite()):
        return False
    same_special = (mine == theirs) | (mine.isnan() & theirs.isnan())
    if not bool(same_special[~finite].all()):
        return False
    if not bool(finite.any()):
        return True
    scale = max(1.0, theirs[finite].abs().max().item())
    return bool(((mine[finite] - theirs[finite]).abs().max() <= relative * scale).item())


def forward(
    model: nn.Module, batch: dict[str, torch.Tensor], layer: int | None = None, full_logits: bool = True
) -> ForwardOutput:
    """Run `model` on `batch` (`input_ids`, optional `attention_mask`) without labels or a cache.

    `layer`: also return the output of decoder layer `layer` (0-based) in `hidden`.
    `full_logits=False`: return the final hidden states and the output head in `token_logits` instead of the
    `[batch, seq, vocab]` logits where the model allows it (see the module docstring); `logits` is then None.
    """
    inner_module = _innermost(model)
    inner = type(inner_module)
    kwargs = {"input_ids": batch["input_ids"]}
    if _accepts(inner, "use_cache"):
        kwargs["use_cache"] = False
    mask = batch.get("attention_mask")
    if mask is not None:
        kwargs["attention_mask"] = mask
        if _accepts(inner, "position_ids"):
            kwargs["position_ids"] = position_ids_from_mask(mask)
    route = None if full_logits else _hidden_route(inner_module)
    captured: list[torch.Tensor] = []
    layer_output: list[torch.Tensor] = []
    handles = []
    if layer is not None:
        handles.append(
            decoder_layers(inner_module)[layer].register_forward_hook(
                lambda module, args, output: layer_output.append(_last_hidden(output))
            )
        )
    if route is not None:
        kwargs["logits_to_keep"] = 1
        handles.append(
            route[0].register_forward_hook(lambda module, args, output: captured.append(_last_hidden(output)))
        )
    try:
        output = model(**kwargs)
    finally:
        for handle in handles:
            handle.remove()
    hidden = layer_output[-1] if layer is not None else None
    if route is None:
        return ForwardOutput(logits=output.logits, hidden=hidden)
    final = captured[-1] if len(captured) == 1 else None
    if final is not None and _matches(route[1], final, output.logits):
        return ForwardOutput(logits=None, hidden=hidden, token_logits=TokenLogits(final, route[1]))
    logger.warning(
        "%s: its final hidden states with its output embedding did not reproduce its logits; computing full "
        "logits for this model class instead (more memory at large vocabularies).",
        inner.__name__,
    )
    _MISMATCHED.add(inner)
    kwargs.pop("logits_to_keep")
    return ForwardOutput(logits=model(**kwargs).logits, hidden=hidden)
