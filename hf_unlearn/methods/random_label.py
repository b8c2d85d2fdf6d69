"""Method 2 of Yao et al. 2024: fine-tuning with random labels.

    loss = forget_weight * NLL(f ; y~)    y~_t ~ Uniform(vocabulary) at every target position of f

The random targets are drawn once, before training, from a generator seeded by (`random_label_seed`, example
index), so they are the same on every run and whatever the number of processes, and stay fixed across epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import UnlearningConfig
from ..data import as_hf_dataset
from ..losses import random_targets
from ..registry import register_method
from ..trainer import UnlearningTrainer


@dataclass
class RandomLabelConfig(UnlearningConfig):
    r"""
    Parameters:
        random_label_seed (`int`, *optional*, defaults to `0`):
            Seed of the random target tokens; example i uses a generator seeded with (seed << 32) + i.
    """

    method: str = field(default="random_label", metadata={"help": "Unlearning method name."})
    random_label_seed: int = field(default=0, metadata={"help": "Seed of the random target tokens."})


@register_method("random_label")
class RandomLabelTrainer(UnlearningTrainer):
    paper_name = "Fine-tuning with random labels"
    config_class = RandomLabelConfig
    target_columns = ("random_labels",)

    def prepare_forget_dataset(self, dataset, ref_model):
        vocab_size = self.accelerator.unwrap_model(self.model).config.get_text_config().vocab_size
        seed = self.args.random_label_seed

        def draw(example, index):
            generator = torch.Generator().manual_seed((seed << 32) + index)
            labels = torch.tensor(example["labels"]).unsqueeze(0)
            return {"random_labels": random_targets(labels, vocab_size, generator)[0].tolist()}

        return as_hf_dataset(dataset).map(draw, with_indices=True)

    def unlearning_terms(self, model, inputs):
        forget, _ = self.split_inputs(inputs)
        return self.target_terms(model, forget, "random_labels")
