"""Loading the frozen original model ("reference", theta0) without copying the policy.

- A model object is used as it is (never deep-copied).
- A path or Hub id is loaded with `from_pretrained` in the policy's dtype; `None` means the policy's own
  checkpoint (`model.name_or_path`). Under DeepSpeed ZeRO-3 `from_pretrained` partitions it while loading, and
  it is then wrapped by DeepSpeed like the policy (sharded, not a full replica per process); under DDP or
  ZeRO-1/2 it is an evaluation-mode replica on each process; under FSDP it is sharded like the policy
  (`shard_like_policy`).
- It is frozen (requires_grad False) and in eval mode (no dropout).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .trainer import UnlearningTrainer


def policy_checkpoint(model: nn.Module) -> str | None:
    """The path or Hub id the policy was loaded from, if any."""
    path = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return path or None


def load_reference_model(trainer: UnlearningTrainer, ref_model: nn.Module | str | None) -> nn.Module:
    """Return the frozen reference model for `trainer`, prepared for its accelerator / DeepSpeed set-up."""
    from transformers import AutoModelForCausalLM

    policy = trainer.accelerator.unwrap_model(trainer.model)
    if ref_model is None:
        ref_model = policy_checkpoint(policy)
        if ref_model is None:
            raise ValueError(
                f"Method {trainer.method_name!r} needs the original model, but the policy was not loaded from a "
                "checkpoint (it has no name_or_path). Pass `ref_model=` (a path, a Hub id or a loaded model)."
            )
    if isinstance(ref_model, str):
        dtype = getattr(policy, "dtype", None) if isinstance(getattr(policy, "dtype", None), torch.dtype) else None
        try:
            ref_model = AutoModelForCausalLM.from_pretrained(ref_model, dtype=dtype)
        except OSError as error:
            raise ValueError(
                f"Could not load the reference model from {ref_model!r}: {error}. Pass `ref_model=` with a path "
                "that holds a saved model, or a loaded model."
            ) from error
    ref_model.eval()
    for parameter in ref_model.parameters():
        parameter.requires_grad_(False)
    if trainer.is_deepspeed_enabled:
        from trl.models.utils import prepare_deepspeed

        return prepare_deepspeed(ref_model, trainer.accelerator)
    if trainer.is_fsdp_enabled:
        return shard_like_policy(ref_model, trainer.accelerator)
    return trainer.accelerator.prepare_model(ref_model, evaluation_mode=True)


def shard_like_policy(ref_model: nn.Module, accelerator) -> nn.Module:
    """The frozen reference sharded as the policy is under FSDP (accelerate leaves a model prepared in evaluation
    mode unsharded).

    FSDP2: accelerate's own preparation of the policy (`fsdp2_prepare_model`: one unit per decoder layer, the input
    embedding, the final norm + output head kept gathered after the forward pass, then the root), so the final
    hidden states and the output head that the chunked losses read after the forward pass are plain tensors; a
    model loaded on the meta device on ranks other than 0 (`cpu_ram_efficient_loading`) receives rank 0's weights.
    FSDP1: trl's `prepare_fsdp`.
    """
    if accelerator.is_fsdp2:
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model

        return fsdp2_prepare_model(accelerator, ref_model)
    from trl.models.utils import prepare_fsdp

    return prepare_fsdp(ref_model, accelerator)
