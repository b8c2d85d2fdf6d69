"""Membership inference: per-example attack scores from `ExampleScores`, and their AUC / TPR@FPR summaries.

Attacks (every score oriented so that higher = "more likely a member"):

| key | attack | needs |
|---|---|---|
| `loss` | LOSS: -mean NLL (Yeom et al. 2018; Min-K% with k = 100%) | NLLs |
| `zlib` | -mean NLL / zlib-compressed size of the text (Carlini et al. 2021) | NLLs + texts |
| `min_k_<K>` | Min-K% Prob: mean of the K% lowest token log-probs (Shi et al. 2024) | `token_scores=True` |
| `min_k_plus_plus_<K>` | Min-K%++: the same on (log p - mu) / sigma (Zhang et al. 2024) | `token_scores=True` |
| `reference` | NLL under a reference model - NLL under the target (Carlini et al. 2021) | reference scores |

The paper's evaluation (Yao et al. 2024) uses Min-K% Prob with K from 10% to 100% and the forget set as
members against the approximate (same-domain, never seen) set as non-members. An AUC of 0.5 means "looks like
data never seen", which is the target of unlearning.

An example without any target token (all labels -100, or a single token) has no NLL (0 / 0); scored as NLL 0 it
would look like the most memorised member. Every attack leaves such examples out (`scored_mask`); count them
with `(~scored_mask(scores)).sum()`. A nan score (a model that blew up) makes the AUC and TPR nan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..losses import IGNORE_INDEX
from .metrics import loss_score, min_k_mean, reference_score, roc_auc, tpr_at_fpr, zlib_score
from .scores import ExampleScores
from .uncertainty import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    bootstrap_auc,
    bootstrap_tpr_at_fpr,
    interval,
    tpr_unresolved_reason,
)

# Paper: Min-K% Prob with k from 10% to 100%.
DEFAULT_MIN_K = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DEFAULT_FPRS = (0.01, 0.05)


def percent_name(k: float) -> str:
    """0.1 -> "10", 0.05 -> "5", 0.125 -> "12.5" (used in attack and metric names)."""
    return f"{100 * k:g}"


def target_texts(dataset, tokenizer) -> list[str]:
    """The decoded target tokens (labels other than -100) of each example: the text the zlib attack compresses."""
    texts = []
    for i in range(len(dataset)):
        labels = [token for token in dataset[i]["labels"] if token != IGNORE_INDEX]
        texts.append(tokenizer.decode(labels, skip_special_tokens=True))
    return texts


def scored_mask(scores: ExampleScores) -> np.ndarray:
    """Which examples have at least one target token: only those have an NLL and take part in the attacks."""
    return (scores.tokens > 0).numpy()


def attack_scores(
    scores: ExampleScores,
    texts: Sequence[str] | None = None,
    reference: ExampleScores | None = None,
    min_k: Sequence[float] = DEFAULT_MIN_K,
) -> dict[str, np.ndarray]:
    """Every attack's per-example score that the given inputs allow (see the module docstring for the keys), for
    the examples with at least one target token only (`scored_mask`; the others are left out, not scored).

    Args:
        scores: the target model's scores of the examples.
        texts: the examples' texts (`target_texts`), for the zlib attack.
        reference: a reference model's scores of the same examples, for the reference attack.
        min_k: fractions K for Min-K% and Min-K%++ (needs `scores` computed with `token_scores=True`).
    """
    keep = scored_mask(scores)
    kept = np.flatnonzero(keep)
    example_nll = scores.example_nll.numpy()[keep]
    out = {"loss": loss_score(example_nll)}
    if texts is not None:
        if len(texts) != len(keep):
            raise ValueError(
                f"attack_scores got {len(keep)} examples but {len(texts)} texts; pass one text per example."
            )
        out["zlib"] = zlib_score(example_nll, [texts[i] for i in kept])
    if scores.token_logprobs is not None:
        logprobs = [scores.token_logprobs[i].numpy() for i in kept]
        zscores = [scores.token_zscores[i].numpy() for i in kept]
        out.update({f"min_k_{percent_name(k)}": min_k_mean(logprobs, k) for k in min_k})
        out.update({f"min_k_plus_plus_{percent_name(k)}": min_k_mean(zscores, k) for k in min_k})
    if reference is not None:
        if len(reference) != len(keep):
            raise ValueError(
                f"reference scores cover {len(reference)} examples but the target's cover {len(keep)}; score the "
                "same examples."
            )
        out["reference"] = reference_score(example_nll, reference.example_nll.numpy()[keep])
    return out


def tpr_key(fpr: float) -> str:
    """0.01 -> "tpr@1%fpr"."""
    return f"tpr@{percent_name(fpr)}%fpr"


def unresolved_fprs(n_nonmembers: int, fprs: Sequence[float] = DEFAULT_FPRS) -> dict[str, str]:
    """`{tpr_key(fpr): reason}` for every FPR that `n_nonmembers` non-members cannot resolve (see
    `uncertainty.tpr_unresolved_reason`); their TPRs are reported as None."""
    reasons = {tpr_key(fpr): tpr_unresolved_reason(n_nonmembers, fpr) for fpr in fprs}
    return {key: reason for key, reason in reasons.items() if reason is not None}


def summarize_attack(
    members: np.ndarray,
    nonmembers: np.ndarray,
    fprs: Sequence[float] = DEFAULT_FPRS,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, float | list[float] | None]:
    """One attack's AUC and TPR at each FPR, each with its bootstrap interval (`<name>_ci`: [low, high]) unless
    `n_resamples` is 0. A TPR at an FPR the non-members cannot resolve is None (see `unresolved_fprs`)."""
    bootstrap = dict(confidence=confidence, n_resamples=n_resamples, seed=seed)
    row: dict[str, float | list[float] | None] = {"auc": roc_auc(members, nonmembers)}
    if n_resamples:
        row["auc_ci"] = list(interval(bootstrap_auc, members, nonmembers, **bootstrap))
    for fpr in fprs:
        resolved = tpr_unresolved_reason(len(nonmembers), fpr) is None
        row[tpr_key(fpr)] = tpr_at_fpr(members, nonmembers, fpr) if resolved else None
        if n_resamples:
            ci = interval(bootstrap_tpr_at_fpr, members, nonmembers, max_fpr=fpr, **bootstrap) if resolved else None
            row[f"{tpr_key(fpr)}_ci"] = list(ci) if ci is not None else None
    return row


def summarize_attacks(
    members: Mapping[str, np.ndarray],
    nonmembers: Mapping[str, np.ndarray],
    fprs: Sequence[float] = DEFAULT_FPRS,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, dict[str, float | list[float] | None]]:
    """`summarize_attack` of every attack present in both `members` and `nonmembers`.

    Returns `{attack: {"auc": ..., "auc_ci": [low, high], "tpr@1%fpr": ..., "tpr@1%fpr_ci": [...], ...}}`
    (intervals from a seeded stratified bootstrap, see `uncertainty.py`; none with `n_resamples=0`).
    """
    return {
        name: summarize_attack(members[name], nonmembers[name], fprs, n_resamples, confidence, seed)
        for name in members
        if name in nonmembers
    }


def loss_auc(members: ExampleScores, nonmembers: ExampleScores) -> float:
    """AUC of the LOSS attack, members against non-members (0.5 = indistinguishable from unseen data), over the
    examples with target tokens; nan when a score is nan (a model that blew up)."""
    kept = {}
    for name, scores in (("members", members), ("non-members", nonmembers)):
        keep = scored_mask(scores)
        if not keep.any():
            raise ValueError(
                f"None of the {len(keep)} {name} has a target token (every label -100, or single-token examples), so "
                "the membership attack has nothing to score; pass examples with at least two tokens and labels."
            )
        kept[name] = loss_score(scores.example_nll.numpy()[keep])
    return roc_auc(kept["members"], kept["non-members"])
