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

The tail target (`unseen_match_tail_k` = K, off by default). Matching the mean NLL leaves the least likely tokens
free: an example can reach its mean level with its rare tokens still far more likely than on unseen data, which
is what Min-K% attacks read (the mean of the K share of an example's least likely tokens). With K set, every
example also gets a target for that tail,

    t_s     = mean of the k_s largest token NLLs of s,  k_s = max(1, floor(K |s|))   (-t_s = Min-K% Prob score)
    loss_s  = 1/2 (m_s - tau_s)^2 + w/2 (t_s - kappa_s)^2                           (w = `unseen_match_tail_weight`)

(one-sided: relu on each gap), where kappa_s comes from the original model's tail levels on the reference data as
tau_s comes from its mean levels: the reference tail quantile of the example's rank by its own original tail
level (or, with `unseen_match_quantiles=False`, the reference tail levels' mean over examples). The gradient of
the tail term, (t_s - kappa_s) / k_s on each of the k_s selected tokens' NLL, reaches only those tokens (a
subgradient where token NLLs tie at the cut): the push on the tail fades as the tail reaches the unseen level,
independently of the mean. With both terms at 0 the example is at its unseen level by LOSS and by Min-K% at K.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ..data import as_hf_dataset, tokenize_if_raw
from ..losses import IGNORE_INDEX, token_nll
from .base import LossTerm, Objective, register_objective
from .frozen import precompute_with_original

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
        unseen_match_tail_k (`float` or `None`, *optional*, defaults to `None`):
            Also match each example's tail, the mean NLL of its `floor(K x length)` (at least 1) least likely
            tokens, to the unseen data's tail levels (K in (0, 1], e.g. 0.1, what Min-K% 10% reads). `None`: the
            mean NLL only. Needs reference data (not `unseen_match_target_nll`).
        unseen_match_tail_weight (`float`, *optional*, defaults to `1.0`):
            Weight w of the tail term relative to the mean term.
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

    unseen_match_tail_k: float | None = field(
        default=None,
        metadata={"help": "Also match the mean NLL of each example's K least likely tokens (e.g. 0.1; None: off)."},
    )
    unseen_match_tail_weight: float = field(
        default=1.0, metadata={"help": "Weight of the tail term relative to the mean term."}
    )

    def __post_init__(self):
        target = self.unseen_match_target_nll
        if target is not None and not (0.0 < float(target) < float("inf")):
            raise ValueError(
                f"unseen_match_target_nll={target} must be a positive finite mean NLL (nats per token), or None to "
                "take the targets from the unseen data."
            )
        tail = self.unseen_match_tail_k
        if tail is not None and not (0.0 < float(tail) <= 1.0):
            raise ValueError(
                f"unseen_match_tail_k={tail} must be a share of each example's tokens in (0, 1] (e.g. 0.1), or None "
                "to match the mean NLL only."
            )
        weight = self.unseen_match_tail_weight
        if not (0.0 <= float(weight) < float("inf")):
            raise ValueError(f"unseen_match_tail_weight={weight} must be a finite weight >= 0 (e.g. 1.0).")
        if tail is not None and target is not None:
            raise ValueError(
                f"unseen_match_tail_k={tail} takes its tail targets from reference data, but "
                f"unseen_match_target_nll={target} fixes the mean target without any: unset one of them."
            )


TARGET = "unseen_match_target"
TAIL_TARGET = "unseen_match_tail_target"
# Config fields this objective reads (`hf_unlearn.methods.unseen_match.UnseenMatchConfig` declares them).
FIELDS = (
    "unseen_match_target_nll",
    "unseen_match_quantiles",
    "unseen_match_two_sided",
    "unseen_match_tail_k",
    "unseen_match_tail_weight",
)


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


def tail_counts(counts: torch.Tensor, k: float) -> torch.Tensor:
    """Tokens each row's tail averages: floor(k x count), at least 1 (Min-K%'s count; 1e-9 absorbs float error)."""
    return torch.floor(k * counts.double() + 1e-9).long().clamp(min=1)


def tail_nll_sum(nll: torch.Tensor, valid: torch.Tensor, k: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the sum of its `tail_counts` largest token NLLs (its least likely tokens) and that count: `[batch]`
    each from `[batch, seq]` token NLLs and their target mask (a row without targets: sum 0)."""
    counts = valid.sum(dim=1)
    size = tail_counts(counts, k)
    ordered = nll.masked_fill(~valid, float("-inf")).sort(dim=1, descending=True).values
    taken = (torch.arange(nll.shape[1], device=nll.device)[None, :] < size[:, None]) & torch.isfinite(ordered)
    total = torch.where(taken, ordered, torch.zeros_like(ordered)).sum(dim=1)
    return torch.where(counts > 0, total, torch.zeros_like(total)), size


def original_token_nlls(setup, dataset) -> list[torch.Tensor]:
    """The original model's next-token NLL at every target position of each example of `dataset`, one 1-D tensor
    per example (one pass, computed once: `objectives.frozen`); the mean and the tail levels both derive from it."""

    def per_batch(output, batch):
        nll, valid = token_nll(
            output.token_logits, batch["labels"], batch["attention_mask"], setup.unlearning_args.loss_chunk_size
        )
        return nll.masked_fill(~valid, IGNORE_INDEX)

    values = precompute_with_original(setup, dataset, "token_nll", per_batch, per_token=True)
    return [v[v != IGNORE_INDEX] for v in values]


def example_levels(token_nlls: list[torch.Tensor], tail_k: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example, the sum and count of its token NLLs, or with `tail_k` of its tail's (`tail_nll_sum`); `[N]`
    each, count 0 for an example without targets."""
    sums, counts = [], []
    for values in token_nlls:
        if tail_k is None or values.numel() == 0:
            sums.append(float(values.sum()))
            counts.append(float(values.numel()))
        else:
            total, size = tail_nll_sum(values[None], torch.ones(1, values.numel(), dtype=torch.bool), tail_k)
            sums.append(float(total[0]))
            counts.append(float(size[0]))
    return torch.tensor(sums), torch.tensor(counts)


@register_objective("unseen_match")
class UnseenLevelMatch(Objective):
    params = UnseenMatchParams
    precomputes = True
    reads_unseen = True
    kind = stream = "forget"
    terms = ("forget_loss", "forget_nll", "forget_gap")
    normalisers = ("forget_sequences", "forget_tokens")
    example_columns = (TARGET, TAIL_TARGET)

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

    def levels(
        self, reference: list[torch.Tensor], forget: list[torch.Tensor] | None, size: int, tail_k: float | None = None
    ) -> list[float]:
        """The `size` forget examples' targets from the original model's token NLLs on the reference data (and on
        the forget examples, for quantile matching; None without): of the mean NLL, or with `tail_k` of the tail
        (see the module docstring)."""
        ref_sum, ref_count = example_levels(reference, tail_k)
        if float(ref_count.sum()) == 0:
            raise ValueError("The reference data for unseen_match's targets has no target tokens.")
        keep = ref_count > 0
        if forget is None:
            # The mean: token-weighted, the paper's scalar target; the tail: the mean of the examples' tail levels.
            level = ref_sum.sum() / ref_count.sum() if tail_k is None else (ref_sum[keep] / ref_count[keep]).mean()
            return [float(level)] * size
        forget_sum, forget_count = example_levels(forget, tail_k)
        return quantile_levels(forget_sum / forget_count.clamp(min=1), ref_sum[keep] / ref_count[keep]).tolist()

    def prepare(self, dataset):
        dataset = as_hf_dataset(dataset)
        for name in FIELDS:  # fail before any precomputation when the config lacks a field
            self.setting(name)
        fixed, tail_k, size = self.setting("unseen_match_target_nll"), self.setting("unseen_match_tail_k"), len(dataset)
        if fixed is not None:  # no reference data needed (a tail target needs some: refused by the config)
            targets, tail_targets = [float(fixed)] * size, [0.0] * size
        else:
            reference = original_token_nlls(self.setup, as_hf_dataset(self.reference_data()[0]))
            forget = original_token_nlls(self.setup, dataset) if self.setting("unseen_match_quantiles") else None
            targets = self.levels(reference, forget, size)
            tail_targets = [0.0] * size if tail_k is None else self.levels(reference, forget, size, tail_k)
        return dataset.add_column(TARGET, targets).add_column(TAIL_TARGET, tail_targets)

    def loss_terms(self, batch, outputs):
        token_nlls, valid = token_nll(outputs["logits"], batch["labels"], batch.get("attention_mask"), self.chunk_size)
        nll, counts = token_nlls.sum(dim=1), valid.sum(dim=1)
        targets = batch[TARGET].to(nll.device)
        rows = counts > 0
        two_sided = self.setting("unseen_match_two_sided")
        total = unseen_match_sum(nll, counts, targets, two_sided)
        tail_k = self.setting("unseen_match_tail_k")
        if tail_k is not None:
            tail_sum, tail_size = tail_nll_sum(token_nlls, valid, tail_k)
            tail_size = torch.where(rows, tail_size, torch.zeros_like(tail_size))  # rows without targets: no term
            tail = unseen_match_sum(tail_sum, tail_size, batch[TAIL_TARGET].to(nll.device), two_sided)
            total = total + self.setting("unseen_match_tail_weight") * tail
        gap = torch.where(rows, targets - nll.detach() / counts.clamp(min=1), torch.zeros_like(targets))
        return {
            "forget_loss": LossTerm(total, rows.sum(), "forget_sequences", self.args.forget_weight),
            "forget_nll": LossTerm(nll.detach().sum(), counts.sum(), "forget_tokens", 0.0),
            # mean over sequences of tau_s - m_s: > 0 while the forget set is still more likely than its targets
            "forget_gap": LossTerm(gap.sum(), rows.sum(), "forget_sequences", 0.0),
        }
