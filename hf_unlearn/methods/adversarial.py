"""Method 3 of Yao et al. 2024: unlearning with adversarial samples.

    loss = forget_weight * NLL(f ; a)    a_t = argmax_{a != w_t} P_theta0(a | w_<t)

Each target is the original model's most likely *wrong* token at that position (exactly the paper's formula;
see `hf_unlearn.losses.adversarial_targets`). The targets are computed once before training, in batches, split
across processes; they are cached on disk (keyed by the original model and the forget tokens) so a re-run does
not recompute them, and the original model is released as soon as they are computed (or never loaded on a
cache hit).
"""

from __future__ import annotations

import gc
import hashlib
import os
from dataclasses import dataclass, field

import torch

from ..config import UnlearningConfig, default_cache_dir
from ..data import UnlearningCollator, as_hf_dataset
from ..losses import adversarial_targets
from ..reference import policy_checkpoint
from ..registry import register_method
from ..trainer import UnlearningTrainer


@dataclass
class AdversarialConfig(UnlearningConfig):
    r"""
    Parameters:
        adversarial_batch_size (`int`, *optional*, defaults to `8`):
            Batch size of the original model's forward passes that compute the adversarial targets.
    """

    method: str = field(default="adversarial", metadata={"help": "Unlearning method name."})
    adversarial_batch_size: int = field(default=8, metadata={"help": "Batch size when computing the targets."})


@register_method("adversarial")
class AdversarialTrainer(UnlearningTrainer):
    paper_name = "Unlearning with adversarial samples"
    config_class = AdversarialConfig
    target_columns = ("adversarial_labels",)

    def prepare_forget_dataset(self, dataset, ref_model):
        dataset = as_hf_dataset(dataset)
        path = self._cache_path(dataset, ref_model)
        if path is not None and os.path.exists(path):
            targets = torch.load(path)
        else:
            targets = self._compute_targets(dataset, ref_model)
            if path is not None and self.accelerator.is_main_process:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                torch.save(targets, path + ".tmp")
                os.replace(path + ".tmp", path)  # never leave a half-written cache file
            self.accelerator.wait_for_everyone()
        return dataset.add_column("adversarial_labels", targets)

    def _cache_path(self, dataset, ref_model) -> str | None:
        """Cache file named by the original model's identity and the forget tokens; None if not identifiable."""
        model_id = ref_model if isinstance(ref_model, str) else policy_checkpoint(ref_model or self.model)
        if not model_id:
            return None
        digest = hashlib.sha256(os.path.abspath(model_id).encode() if os.path.exists(model_id) else model_id.encode())
        for example in dataset:
            digest.update(torch.tensor(example["input_ids"], dtype=torch.int64).numpy().tobytes())
            digest.update(torch.tensor(example["labels"], dtype=torch.int64).numpy().tobytes())
        return os.path.join(default_cache_dir(self.args.cache_dir), "adversarial", digest.hexdigest() + ".pt")

    def _compute_targets(self, dataset, ref_model) -> list[list[int]]:
        original = None if self.adapter_is_reference(ref_model) else self.load_reference_model(ref_model)
        collator = UnlearningCollator(pad_token_id=self.data_collator.pad_token_id, padding_side="right")
        size = self.args.adversarial_batch_size
        # Every process gets the same number of batches (ZeRO-3 needs every rank in each forward pass).
        with self.accelerator.split_between_processes(list(range(len(dataset))), apply_padding=True) as indices:
            mine = []
            for start in range(0, len(indices), size):
                rows = [dataset[i] for i in indices[start : start + size]]
                batch = collator([{k: r[k] for k in ("input_ids", "attention_mask", "labels")} for r in rows])
                batch = {k: v.to(self.args.device) for k, v in batch.items()}
                targets = adversarial_targets(self.reference_logits(batch, original), batch["labels"]).cpu()
                mine += [(index, targets[row, : len(r["labels"])].tolist()) for row, (index, r) in enumerate(zip(indices[start : start + size], rows))]
        gathered = self.accelerator.gather_for_metrics(mine, use_gather_object=True) if self.accelerator.num_processes > 1 else mine
        by_index = dict(gathered)
        if hasattr(original, "destroy"):  # a DeepSpeed engine keeps partitioned weights until destroyed
            original.destroy()
        del original
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return [by_index[i] for i in range(len(dataset))]

    def unlearning_terms(self, model, inputs):
        forget, _ = self.split_inputs(inputs)
        return self.target_terms(model, forget, "adversarial_labels")
