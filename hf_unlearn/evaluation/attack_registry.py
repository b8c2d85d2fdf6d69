"""The membership attacks `UnlearningEvalCallback` computes from its own scores: their names
(`available_attacks`, `resolve_attacks`) and their AUC intervals (`attack_intervals`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .membership import DEFAULT_MIN_K, attack_scores, percent_name, summarize_attack
from .scores import ExampleScores


def available_attacks(min_k: Sequence[float] = DEFAULT_MIN_K) -> list[str]:
    """Attacks the callback can compute from its own scores: LOSS, Min-K% and Min-K%++ (zlib needs the texts and
    the reference attack a second model; use `evaluation.evaluate_model` for those)."""
    names = [f"min_k_{percent_name(k)}" for k in min_k]
    return ["loss", *names, *(name.replace("min_k_", "min_k_plus_plus_") for name in names)]


def resolve_attacks(attacks: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """The attack names to compute ("all": every available one); a clear error for an unknown one."""
    if attacks is None:
        return None
    available = available_attacks()
    names = tuple(available) if attacks == "all" else tuple([attacks] if isinstance(attacks, str) else attacks)
    unknown = [name for name in names if name not in available]
    if unknown or not names:
        raise ValueError(f"attacks={list(names)}: unknown {unknown or 'none given'}; pick from {available} or 'all'.")
    return names


def attack_intervals(
    members: ExampleScores,
    nonmembers: ExampleScores,
    names: Sequence[str],
    n_resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, dict[str, float]]:
    """`{attack: {"auc", "auc_low", "auc_high"}}` of each named attack, members against non-members, from scores
    computed with `token_scores=True` (examples without targets left out)."""
    member_scores, nonmember_scores = attack_scores(members), attack_scores(nonmembers)
    out = {}
    for name in names:
        summary = summarize_attack(member_scores[name], nonmember_scores[name], (), n_resamples, confidence, seed)
        low, high = summary["auc_ci"] if n_resamples else (math.nan, math.nan)
        out[name] = {"auc": summary["auc"], "auc_low": low, "auc_high": high}
    return out
