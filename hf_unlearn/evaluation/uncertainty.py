"""How sure a number is: seeded bootstrap confidence intervals for the AUC, the TPR at a low FPR and the mean NLL,
and whether a TPR at a given FPR can be measured at all with the non-members at hand. Pure functions: arrays in,
numbers out.

Bootstrap (Efron 1979): resample the examples with replacement `n_resamples` times, recompute the statistic, and
take the central `confidence` share of the resampled values (percentile interval). Members and non-members are
resampled separately (a stratified bootstrap: every resample keeps both group sizes). Everything is drawn from
`numpy.random.default_rng(seed)`, so the same inputs and seed give the same interval on every process.

All resamples of an AUC are computed at once from the member x non-member comparison matrix C (C[i, j] = 1 when
member i scores above non-member j, 1/2 on a tie): a resample with multiplicities a (members) and b (non-members)
has AUC = a^T C b / (n_members x n_nonmembers).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .metrics import ArrayLike, _as_array, _check_fraction

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


def _check_resamples(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples} must be at least 1 (e.g. 1000).")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} is not in (0, 1); use e.g. 0.95 for a 95% interval.")


def resample_counts(size: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicity of each of `size` items in each of `n_resamples` resamples with replacement, `[n_resamples,
    size]` (each row sums to `size`)."""
    if size < 1:
        raise ValueError("Cannot bootstrap an empty set of examples; pass at least one example.")
    picks = rng.integers(0, size, size=(n_resamples, size))
    counts = np.zeros((n_resamples, size), dtype=np.float64)
    np.add.at(counts, (np.arange(n_resamples)[:, None], picks), 1.0)
    return counts


def percentile_interval(values: ArrayLike, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` share of `values`: their (1 - c) / 2 and (1 + c) / 2 quantiles (inverted empirical
    CDF, so the bounds are values that occurred); (nan, nan) when a value is nan."""
    values = _as_array(values, "values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} is not in (0, 1); use e.g. 0.95 for a 95% interval.")
    if values.size == 0 or np.isnan(values).any():
        return math.nan, math.nan
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2], method="inverted_cdf")
    return float(low), float(high)


def comparison_matrix(members: ArrayLike, nonmembers: ArrayLike) -> np.ndarray:
    """C[i, j] = 1 if member i scores above non-member j, 1/2 on a tie, else 0 (its mean is the AUC)."""
    members, nonmembers = _as_array(members, "members"), _as_array(nonmembers, "nonmembers")
    above = members[:, None] > nonmembers[None, :]
    ties = members[:, None] == nonmembers[None, :]
    return above + 0.5 * ties


def bootstrap_auc(
    members: ArrayLike, nonmembers: ArrayLike, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """The AUC of each of `n_resamples` stratified resamples (all nan when a score is nan)."""
    members, nonmembers = _as_array(members, "members"), _as_array(nonmembers, "nonmembers")
    rng = np.random.default_rng(seed)
    a, b = resample_counts(members.size, n_resamples, rng), resample_counts(nonmembers.size, n_resamples, rng)
    if np.isnan(members).any() or np.isnan(nonmembers).any():
        return np.full(n_resamples, math.nan)
    matrix = comparison_matrix(members, nonmembers)
    return ((a @ matrix) * b).sum(axis=1) / (members.size * nonmembers.size)  # a^T C b per resample (BLAS)


def tpr_at_fpr_sorted(members: np.ndarray, nonmembers_descending: np.ndarray, max_fpr: float) -> np.ndarray:
    """TPR at FPR <= `max_fpr` of rows of scores (`[rows, n]` arrays; non-members sorted in decreasing order).

    With k = floor(max_fpr x n_nonmembers) non-members allowed above the threshold, the best threshold lies just
    above the (k+1)-th highest non-member score s, so TPR = share of members scoring above s (1 when k >= n).
    This equals `metrics.tpr_at_fpr` (every ROC point kept)."""
    count = nonmembers_descending.shape[1]
    allowed = int(math.floor((max_fpr + 1e-12) * count))
    if allowed >= count:
        return np.ones(members.shape[0])
    threshold = nonmembers_descending[:, allowed]
    return (members > threshold[:, None]).mean(axis=1)


def bootstrap_tpr_at_fpr(
    members: ArrayLike, nonmembers: ArrayLike, max_fpr: float, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """The TPR at FPR <= `max_fpr` of each of `n_resamples` stratified resamples (all nan when a score is nan)."""
    _check_fraction(max_fpr, "max_fpr")
    members, nonmembers = _as_array(members, "members"), _as_array(nonmembers, "nonmembers")
    rng = np.random.default_rng(seed)
    if members.size == 0 or nonmembers.size == 0:
        raise ValueError("Cannot bootstrap an empty set of examples; pass at least one example.")
    member_rows = members[rng.integers(0, members.size, size=(n_resamples, members.size))]
    nonmember_rows = nonmembers[rng.integers(0, nonmembers.size, size=(n_resamples, nonmembers.size))]
    if np.isnan(members).any() or np.isnan(nonmembers).any():
        return np.full(n_resamples, math.nan)
    return tpr_at_fpr_sorted(member_rows, -np.sort(-nonmember_rows, axis=1), max_fpr)


def bootstrap_mean_nll(
    nll_sums: ArrayLike, token_counts: ArrayLike, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """The token-weighted mean NLL (sum of NLLs / sum of tokens) of each of `n_resamples` resamples of the examples.

    Pass only examples with target tokens (a resample of examples without any would have no tokens: nan)."""
    sums, tokens = _as_array(nll_sums, "nll_sums"), _as_array(token_counts, "token_counts")
    if sums.shape != tokens.shape:
        raise ValueError(f"Got {sums.size} NLL sums but {tokens.size} token counts; pass one of each per example.")
    counts = resample_counts(sums.size, n_resamples, np.random.default_rng(seed))
    total = counts @ tokens
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (counts @ sums) / np.where(total > 0, total, 1), math.nan)


def interval(
    resampler: Callable[..., np.ndarray],
    *arrays: ArrayLike,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    **kwargs,
) -> tuple[float, float]:
    """`percentile_interval` of a bootstrap, e.g. `interval(bootstrap_auc, members, nonmembers)`."""
    _check_resamples(n_resamples, confidence)
    return percentile_interval(resampler(*arrays, n_resamples=n_resamples, seed=seed, **kwargs), confidence)


def minimum_nonmembers(max_fpr: float) -> int:
    """Non-members needed to measure a TPR at FPR <= `max_fpr`: ceil(1 / max_fpr). With fewer, one non-member
    above the threshold already exceeds the FPR, so the only admissible threshold is above every non-member."""
    _check_fraction(max_fpr, "max_fpr")
    return math.ceil(1 / max_fpr - 1e-9)


def tpr_unresolved_reason(n_nonmembers: int, max_fpr: float) -> str | None:
    """None when `n_nonmembers` can resolve an FPR of `max_fpr`, else why not (and the fix)."""
    needed = minimum_nonmembers(max_fpr)
    if n_nonmembers >= needed:
        return None
    return (
        f"TPR at FPR {max_fpr:g} needs at least {needed} non-members (ceil(1 / {max_fpr:g})); got {n_nonmembers}. "
        "Evaluate more non-member examples or report a higher FPR."
    )
