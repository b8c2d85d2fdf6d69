"""Fine-tuning with random labels: the forget term of method 2 of Yao et al. 2024.

    forget_loss = NLL(f ; y~)    y~_t ~ Uniform(vocabulary) at every target position of f

The random targets are drawn once, before training, from a generator seeded by (`random_label_seed`, example
index) through numpy's `SeedSequence` (every bit of both enters the seed), so they are the same on every run and
whatever the number of processes, differ between seeds, and stay fixed across epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..data import as_hf_dataset
from .base import register_objective
from .substitute import SubstituteTargets


@dataclass
class RandomLabelParams:
    """random_label's hyperparameters.

    Parameters:
        random_label_seed (`int`, *optional*, defaults to `0`):
            Seed of the random targets (with each example's index).
    """

    random_label_seed: int = field(default=0, metadata={"help": "Seed of the random_label objective's targets."})


def draw_random_labels(labels: list[int], vocab_size: int, seed: int, index: int) -> list[int]:
    """Random targets for one example: uniform token ids where `labels` has a next-token target, -100 elsewhere."""
    from ..losses import random_targets

    generator = torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> 1)
    )
    return random_targets(torch.tensor([labels]), vocab_size, generator)[0].tolist()


@register_objective("random_label")
class RandomLabels(SubstituteTargets):
    params = RandomLabelParams
    token_columns = ("random_labels",)

    def prepare(self, dataset):
        vocab_size = self.setup.policy_config().vocab_size
        seed = self.args.random_label_seed

        def draw(example, index):
            return {"random_labels": draw_random_labels(example["labels"], vocab_size, seed, index)}

        return as_hf_dataset(dataset).map(draw, with_indices=True)
