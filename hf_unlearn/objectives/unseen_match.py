"""Unseen-level matching: push each forget example's NLL to the level unseen data has, and no further.

The paper's guideline (Yao et al. 2024) is that forget data should end up as likely as unseen same-domain data,
not as unlikely as possible. Gradient ascent only has a global stopping rule: within one run some examples pass
the unseen level while others are still memorised, a forget set no model that never saw it would produce. This
objective gives every forget example s its own target tau_s and a loss that vanishes there:

    m_s     = NLL(s) / |s|                    the policy's mean next-token NLL of s (|s| its targets)
    loss_s  = 1/2 (m_s - tau_s)^2             two-sided: an example past its target is pulled back
              1/2 relu(tau_s - m_s)^2         one-sided (`unseen_match_two_sided=False`): pushing stops there
    forget_loss = mean_s loss_s               over the global batch's forget sequences (`forget_sequences`)

The gradient of loss_s is (m_s - tau_s) * grad m_s: gradient ascent on s scaled by how far s still is from its
target, so the push fades as s gets there (GA's push does not) and turns into descent for an example past it.

Where the targets come from (computed once before training, `prepare`; the original model is loaded only then):

- `reference levels` r_1..r_M: the ORIGINAL model's mean NLL on each example of unseen same-domain data (the
  `unseen_dataset` a trainer hands over; else the retain data, seen in training, so a lower and more cautious
  level; else an error). The original model's forget levels o_1..o_N are computed the same way.
- `unseen_match_target_nll` set: tau_s = that number for every s.
- quantile matching (`unseen_match_quantiles`, the default): rank the forget examples by o_s (ascending, ties by
  position) and give the example of rank k (0-based) the reference quantile at p_k = (k + 1/2) / N,

      Q(p) = linear interpolation of the sorted r_(0) <= ... <= r_(M-1) placed at (j + 1/2) / M, flat beyond,

  so the forget levels at the end have the unseen levels' distribution, in the original order of
  memorisation: the least memorised example gets the easiest unseen level. A membership attack thresholding
  the NLL then sees two samples of one distribution (AUC 1/2). With N = M, tau of rank k is r_(k) exactly.
- else tau_s = the token-weighted mean of the reference NLLs (the paper's scalar target: the approximate
  set's NLL under the original model, as `hf_unlearn.callbacks` computes it).

Example (the golden test): r = [1, 2, 3, 4] (M = 4, placed at 1/8, 3/8, 5/8, 7/8) and two forget examples with
o = [0.9, 0.2]: ranks [1, 0], p = [3/4, 1/4], tau = [Q(3/4), Q(1/4)] = [3.5, 1.5].
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ..data import as_hf_dataset, tokenize_if_raw
from ..losses import count_targets, sequence_nll
from .base import LossTerm, Objective, register_objective
from .frozen import precompute_with_original
from .npo import sequence_logp

logger = logging.getLogger(__name__)


@dataclass
class UnseenMatchParams:
    """Unseen-level matching's hyperparameters.

    Parameters:
        unseen_match_target_nll (`float` or `None`, *optional*, defaults to `None`):
            One target mean NLL (nats per token) for every forget example. `None`: the targets come from the
            original model's NLL on the unseen data (or the retain data), see `unseen_match_quantiles`.
        unseen_match_quantiles (`bool`, *optional*, defaults to `True`):
            Give each forget example the unseen levels' quantile of its rank (by the original model's NLL), so the
            forget NLLs end with the unseen NLLs' distribution; `False`: every example gets the unseen data's
            token-weighted mean NLL.
        unseen_match_two_sided (`bool`, *optional*, defaults to `True`):
            Pull an example that went past its target back to it; `False`: only stop pushing there.
    """

    unseen_match_target_nll: float | None = field(
        default=None, metadata={"help": "One target mean NLL for every forget example (None: from the unseen data)."}
    )
    unseen_match_quantiles: bool = field(
        default=True, metadata={"help": "Per-example targets: the unseen NLL quantile of the example's rank."}
    )
    unseen_match_two_sided: bool = field(
        default=True, metadata={"help": "Pull examples that went past their target back (False: only stop pushing)."}
    )

    def __post_init__(self):
        target = self.unseen_match_target_nll
        if target is not None and not (0.0 < float(target) < float("inf")):
            raise ValueError(
                f"unseen_match_target_nll={target} must be a positive finite mean NLL (nats per token), or None to "
                "take the targets from the unseen data."
            )


TARGET = "unseen_match_target"
# Config fields this objective reads (`hf_unlearn.methods.unseen_match.UnseenMatchConfig` declares them).
FIELDS = ("unseen_match_target_nll", "unseen_match_quantiles", "unseen_match_two_sided")


def quantile_levels(forget_levels: torch.Tensor, reference_levels: torch.Tensor) -> torch.Tensor:
    """Per forget example, the reference quantile of its rank (see the module docstring): `[N]` from `[N]`, `[M]`."""
    if reference_levels.numel() == 0:
        raise ValueError("quantile_levels needs at least one reference level.")
    n, m = forget_levels.numel(), reference_levels.numel()
    ref = torch.sort(reference_levels.double()).values
    order = torch.sort(forget_levels.double(), stable=True).indices
    ranks = torch.empty(n, dtype=torch.long)
    ranks[order] = torch.arange(n)
    position = ((ranks.double() + 0.5) / n) * m - 0.5  # fractional index into ref
    position = position.clamp(0.0, m - 1.0)
    low = position.floor().long()
    high = (low + 1).clamp(max=m - 1)
    frac = position - low.double()
    return (ref[low] * (1 - frac) + ref[high] * frac).to(forget_levels.dtype)


def unseen_match_sum(nll: torch.Tensor, counts: torch.Tensor, targets: torch.Tensor, two_sided: bool) -> torch.Tensor:
    """Sum over rows with targets of 1/2 (m - tau)^2 (two-sided) or 1/2 relu(tau - m)^2, m = nll / counts per row."""
    rows = counts > 0
    gap = targets.to(nll.dtype) - nll / counts.clamp(min=1)
    if not two_sided:
        gap = gap.clamp(min=0)
    per_row = 0.5 * gap.square()
    return torch.where(rows, per_row, torch.zeros_like(per_row)).sum()


def mean_nll_levels(setup, dataset, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The original model's per-example NLL sums (computed once, `objectives.frozen`) and target counts on
    `dataset`, `[N]` each."""
    sums = precompute_with_original(
        setup,
        dataset,
        kind,
        lambda output, batch: sequence_nll(
            output.token_logits, batch["labels"], batch["attention_mask"], setup.unlearning_args.loss_chunk_size
        )[0],
        per_token=False,
    )
    counts = []
    for example in dataset:
        ids = torch.as_tensor(example["input_ids"])[None]
        labels = torch.as_tensor(example["labels"])[None] if "labels" in example else ids
        mask = torch.as_tensor(example["attention_mask"])[None] if "attention_mask" in example else None
        counts.append(float(count_targets(labels, mask)))
    return torch.tensor([float(v[0]) for v in sums]), torch.tensor(counts)


@register_objective("unseen_match")
class UnseenLevelMatch(Objective):
    params = UnseenMatchParams
    precomputes = True
    reads_unseen = True
    kind = stream = "forget"
    terms = ("forget_loss", "forget_nll", "forget_gap")
    normalisers = ("forget_sequences", "forget_tokens")
    example_columns = (TARGET,)

    def setting(self, name: str):
        if not self.args.declares(name):
            raise ValueError(
                f"forget_loss 'unseen_match' reads `{name}`, which {type(self.setup.args).__name__} does not have: "
                "use hf_unlearn.methods.UnseenMatchConfig (or hf_unlearn.config_for(method, forget_loss="
                "'unseen_match')) as the trainer's args."
            )
        return getattr(self.args, name)

    def reference_data(self):
        """(tokenised reference dataset, what it is) for the target levels."""
        unseen = self.setup.unseen_dataset
        if unseen is not None:
            return tokenize_if_raw(unseen, self.setup.processing_class, self.args.max_length, "unseen"), "unseen"
        retain = self.setup.retain_dataset
        if retain is None:
            raise ValueError(
                "forget_loss 'unseen_match' needs target levels: pass `unseen_dataset=` (same-domain data the "
                "original model never saw) to the trainer, or set `unseen_match_target_nll`."
            )
        logger.warning(
            "unseen_match: no unseen_dataset, so the targets are the original model's levels on the retain data "
            "(seen in training: a lower, more cautious target than the paper's unseen level)."
        )
        retain = tokenize_if_raw(retain, self.setup.processing_class, self.args.max_length, "retain")
        return retain, "retain"

    def targets(self, dataset) -> list[float]:
        fixed = self.setting("unseen_match_target_nll")
        quantiles = self.setting("unseen_match_quantiles")
        self.setting("unseen_match_two_sided")  # fail before any precomputation when the config lacks the fields
        if fixed is not None:
            return [float(fixed)] * len(dataset)
        reference, _ = self.reference_data()
        ref_sum, ref_count = mean_nll_levels(self.setup, as_hf_dataset(reference), "sequence_nll")
        if float(ref_count.sum()) == 0:
            raise ValueError("The reference data for unseen_match's targets has no target tokens.")
        if not quantiles:
            return [float(ref_sum.sum() / ref_count.sum())] * len(dataset)
        forget_sum, forget_count = mean_nll_levels(self.setup, dataset, "sequence_nll")
        keep = ref_count > 0
        levels = quantile_levels(forget_sum / forget_count.clamp(min=1), ref_sum[keep] / ref_count[keep])
        return levels.tolist()

    def prepare(self, dataset):
        dataset = as_hf_dataset(dataset)
        return dataset.add_column(TARGET, self.targets(dataset))

    def loss_terms(self, batch, outputs):
        _, nll, counts = sequence_logp(outputs["logits"], batch, self.chunk_size)
        targets = batch[TARGET].to(nll.device)
        rows = counts > 0
        total = unseen_match_sum(nll, counts, targets, self.setting("unseen_match_two_sided"))
        gap = torch.where(rows, targets - nll.detach() / counts.clamp(min=1), torch.zeros_like(targets))
        return {
            "forget_loss": LossTerm(total, rows.sum(), "forget_sequences", self.args.forget_weight),
            "forget_nll": LossTerm(nll.detach().sum(), counts.sum(), "forget_tokens", 0.0),
            # mean over sequences of tau_s - m_s: > 0 while the forget set is still more likely than its targets
            "forget_gap": LossTerm(gap.sum(), rows.sum(), "forget_sequences", 0.0),
        }
