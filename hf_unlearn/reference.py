"""The frozen original model (theta0, "the reference"): `OriginalModel` is its one owner in a run.

It knows where theta0 comes from (`ref_model=`: a loaded model, a path or Hub id; None: the policy's own
checkpoint, or for a PEFT policy the policy with its adapter disabled), loads it when an objective runs it in
training, runs its forward pass, and lends it to one-off precomputations (then releases a copy it loaded for them).

Loading (`load_reference_model`):

- A model object is used as it is (never deep-copied).
- A path or Hub id is loaded with `from_pretrained` in the policy's dtype; `None` means the policy's own
  checkpoint (`model.name_or_path`). Under DeepSpeed ZeRO-3 `from_pretrained` partitions it while loading, and
  it is then wrapped by DeepSpeed like the policy (sharded, not a full replica per process); under DDP or
  ZeRO-1/2 it is an evaluation-mode replica on each process; under FSDP it is sharded like the policy
  (`shard_like_policy`).
- It is frozen (requires_grad False) and in eval mode (no dropout).
"""

from __future__ import annotations

import gc
from typing import Any

import torch
from torch import nn

from .forward import ForwardOutput, forward


def policy_checkpoint(model: nn.Module) -> str | None:
    """The path or Hub id the policy was loaded from, if any."""
    path = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return path or None


def load_reference_model(trainer: Any, ref_model: nn.Module | str | None) -> nn.Module:
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


def _has_adapter(module: nn.Module | None) -> bool:
    """Whether `module` holds a PEFT adapter layer (its output would change under `disable_adapter`)."""
    return module is not None and any(hasattr(m, "disable_adapters") for m in module.modules())


class OriginalModel:
    """The run's frozen original model; see the module docstring.

    Args:
        trainer: the `UnlearningTrainer` whose policy and accelerator theta0 is prepared for.
        source: what was passed as `ref_model` (a model, a path or Hub id, or None).

    Attributes:
        module: the loaded, frozen theta0 (prepared like the policy), or None while nothing needs it loaded and for
            a PEFT policy whose adapter-free base is theta0.
    """

    def __init__(self, trainer: Any, source: nn.Module | str | None):
        self.trainer = trainer
        self.source = source
        self.module: nn.Module | None = None

    @property
    def is_handed_over(self) -> bool:
        """Whether the user passed theta0 as a loaded model (nothing to load)."""
        return isinstance(self.source, nn.Module)

    def is_policy_without_adapter(self) -> bool:
        """True when no reference was given and the policy is a PEFT model: its adapter-free base is theta0."""
        try:
            from peft import PeftModel
        except ImportError:  # peft is an optional extra
            return False
        return self.source is None and isinstance(self._policy(), PeftModel)

    def _policy(self) -> nn.Module:
        return self.trainer.accelerator.unwrap_model(self.trainer.model)

    def _load(self) -> nn.Module:
        return load_reference_model(self.trainer, self.source)

    def ensure_loaded(self) -> None:
        """Load theta0 for training (once; not for a PEFT policy, which runs without its adapter instead)."""
        if self.module is None and not self.is_policy_without_adapter():
            self.module = self._load()

    def borrow(self) -> nn.Module | None:
        """theta0 for a one-off precomputation: the loaded module, else None for a PEFT policy (its adapter-free
        base), else a freshly loaded one that the caller gives back with `give_back`."""
        if self.module is not None or self.is_policy_without_adapter():
            return self.module
        return self._load()

    def give_back(self, module: nn.Module | None) -> None:
        """Free a module `borrow` loaded (a DeepSpeed engine keeps partitioned weights until destroyed); the held
        `module` is kept."""
        if module is None or module is self.module:
            return
        if hasattr(module, "destroy"):
            module.destroy()
        del module
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def weights(self, module: nn.Module | None) -> nn.Module:
        """The module whose weights are theta0 (for fingerprints): `module` unwrapped, or the policy."""
        accelerator = self.trainer.accelerator
        return accelerator.unwrap_model(module if module is not None else self.trainer.model)

    @torch.no_grad()
    def forward(
        self,
        batch: dict[str, torch.Tensor],
        module: nn.Module | None = None,
        layer: int | None = None,
        full_logits: bool = True,
    ) -> ForwardOutput:
        """theta0's forward pass on `batch` (`hf_unlearn.forward.forward`): `module`, else the held one, else the
        policy without its adapter (loading theta0 first when an objective becomes active during training, e.g.
        its weight was raised from 0).

        `full_logits=False`: final hidden states + output head instead of full logits; for the policy without
        adapter only when its output embedding carries no adapter (the head runs later, outside
        `disable_adapter`)."""
        if module is None:
            self.ensure_loaded()  # nothing to load for a PEFT policy: it runs below without its adapter
            module = self.module
        if module is not None:
            return forward(module, batch, layer, full_logits)
        policy = self._policy()
        if not full_logits and _has_adapter(policy.get_base_model().get_output_embeddings()):
            full_logits = True
        with policy.disable_adapter():
            return forward(policy, batch, layer, full_logits)
