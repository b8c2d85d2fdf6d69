"""Per-example language-modelling scores: summed NLL, number of target tokens, correct next-token predictions.

Every other metric (mean NLL, perplexity, accuracy, the LOSS membership-inference score) is derived from these.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..data import UnlearningCollator
from ..losses import token_nll


@dataclass
class ExampleScores:
    """Per-example sums over target tokens (tensors of shape [num_examples])."""

    nll_sum: torch.Tensor
    tokens: torch.Tensor
    correct: torch.Tensor

    @property
    def mean_nll(self) -> float:
        """Token-weighted mean NLL over all examples."""
        return float(self.nll_sum.sum() / self.tokens.sum().clamp(min=1))

    @property
    def perplexity(self) -> float:
        return float(torch.exp(torch.tensor(self.mean_nll)))

    @property
    def accuracy(self) -> float:
        """Share of target tokens that are the model's top-1 prediction."""
        return float(self.correct.sum() / self.tokens.sum().clamp(min=1))

    @property
    def example_nll(self) -> torch.Tensor:
        """Mean NLL of each example (the LOSS membership-inference score)."""
        return self.nll_sum / self.tokens.clamp(min=1)


@torch.no_grad()
def score_examples(model, dataset, pad_token_id: int = 0, batch_size: int = 8, progress: bool = False) -> ExampleScores:
    """Score every example of `dataset` (dicts with input_ids, attention_mask, labels) without gradients."""
    collator = UnlearningCollator(pad_token_id=pad_token_id)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums, counts, correct = [], [], []
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc="scoring", disable=not progress):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = collator([{k: r[k] for k in ("input_ids", "attention_mask", "labels")} for r in rows])
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll, mask = token_nll(logits, batch["labels"])
        hits = (logits[:, :-1].argmax(-1) == batch["labels"][:, 1:]) & mask
        sums.append(nll.sum(-1).cpu())
        counts.append(mask.sum(-1).cpu())
        correct.append(hits.sum(-1).cpu())
    model.train(was_training)
    return ExampleScores(torch.cat(sums).double(), torch.cat(counts), torch.cat(correct))


def mean_nll(model, dataset, pad_token_id: int = 0, batch_size: int = 8) -> float:
    """Token-weighted mean next-token NLL of `dataset` under `model`."""
    return score_examples(model, dataset, pad_token_id, batch_size).mean_nll
