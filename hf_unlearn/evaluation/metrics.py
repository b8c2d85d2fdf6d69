"""Pure metric functions: arrays and strings in, numbers out. No model, no torch, no distributed code.

Conventions:
- NLL values are in nats. A per-example "mean NLL" is the example's summed next-token NLL divided by its number
  of target tokens.
- Membership-inference scores are oriented so that **higher = more likely a member** (seen in training). An
  attack's AUC of members against non-members is then 0.5 when they are indistinguishable (the unlearning
  target: the forget set looks like data never seen), above 0.5 when the members still stand out (not
  forgotten), and below 0.5 when they stand out the other way (over-unlearning, itself detectable).
- TOFU quantities follow the reference implementation (github.com/locuslab/tofu, `aggregate_stat_eval.py`).

The model-running code that produces the inputs lives in `scores.py`, `membership.py`, `generation.py` and
`tofu.py`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


def _as_array(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per example); got shape {array.shape}.")
    return array


def _check_fraction(k: float, name: str = "k") -> None:
    if not 0 < k <= 1:
        raise ValueError(f"{name}={k} is not a fraction in (0, 1]; use e.g. 0.2 for Min-20%.")


# ---------------------------------------------------------------------------- language-modelling quality


def mean_token_nll(nll_sums: ArrayLike, token_counts: ArrayLike) -> float:
    """Token-weighted mean NLL: sum of all NLLs over the number of all target tokens (0 tokens gives nan)."""
    total = _as_array(token_counts, "token_counts").sum()
    return float(_as_array(nll_sums, "nll_sums").sum() / total) if total > 0 else math.nan


def perplexity(mean_nll: float) -> float:
    """exp(mean NLL): the perplexity of a token-weighted mean NLL."""
    return math.exp(mean_nll) if mean_nll < 700 else math.inf


def token_accuracy(correct: ArrayLike, token_counts: ArrayLike) -> float:
    """Share of target tokens that were the model's top-1 prediction (0 tokens gives nan)."""
    total = _as_array(token_counts, "token_counts").sum()
    return float(_as_array(correct, "correct").sum() / total) if total > 0 else math.nan


# ---------------------------------------------------------------------------- membership-inference scores


def loss_score(example_nll: ArrayLike) -> np.ndarray:
    """LOSS attack (Yeom et al. 2018): the negative per-example mean NLL (members have a lower loss)."""
    return -_as_array(example_nll, "example_nll")


def zlib_entropy(text: str) -> int:
    """Size in bytes of the zlib-compressed UTF-8 text: a model-free measure of how much information it holds."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_score(example_nll: ArrayLike, texts: Sequence[str]) -> np.ndarray:
    """zlib attack (Carlini et al. 2021): -(mean NLL) / zlib entropy of the text.

    A member has a low loss *relative to* how compressible (predictable by a generic compressor) its text is.
    The zlib entropy is floored at 1 byte so that an empty text cannot divide by zero.
    """
    nll = _as_array(example_nll, "example_nll")
    if len(texts) != len(nll):
        raise ValueError(f"zlib_score got {len(nll)} NLLs but {len(texts)} texts; pass one text per example.")
    entropy = np.array([max(zlib_entropy(text), 1) for text in texts], dtype=np.float64)
    return -nll / entropy


def min_k_count(num_tokens: int, k: float) -> int:
    """How many tokens Min-K% averages: floor(k * n), at least 1 (1e-9 absorbs float error: 0.3 * 10 -> 3)."""
    _check_fraction(k)
    return max(1, int(math.floor(k * num_tokens + 1e-9)))


def min_k_mean(token_values: Sequence[ArrayLike], k: float) -> np.ndarray:
    """Mean of the lowest `floor(k * n)` (at least one) of each example's `n` token values.

    With token log-probabilities this is Min-K% Prob (Shi et al. 2024), with k = 1 it is the LOSS score; with
    Min-K%++ token scores (`min_k_plus_plus_token_scores`) it is Min-K%++ (Zhang et al. 2024). An example
    without tokens scores nan.
    """
    _check_fraction(k)
    out = np.empty(len(token_values), dtype=np.float64)
    for i, values in enumerate(token_values):
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            out[i] = math.nan
            continue
        count = min_k_count(values.size, k)
        out[i] = np.partition(values, count - 1)[:count].mean()
    return out


def min_k_plus_plus_token_scores(token_logprob: ArrayLike, mu: ArrayLike, sigma: ArrayLike) -> np.ndarray:
    """Min-K%++ token scores: (log p(x_t) - mu_t) / sigma_t.

    mu_t and sigma_t are the mean and standard deviation of log p(z) for z drawn from the model's own
    next-token distribution p(. | x_<t). A training token tends to sit at a local maximum of the likelihood,
    i.e. above the mean of its distribution. sigma is floored at 1e-12 (a one-hot distribution).
    """
    logprob, mu, sigma = (np.asarray(v, dtype=np.float64) for v in (token_logprob, mu, sigma))
    return (logprob - mu) / np.maximum(sigma, 1e-12)


def reference_score(example_nll: ArrayLike, reference_nll: ArrayLike) -> np.ndarray:
    """Reference-model attack (Carlini et al. 2021): NLL under a reference model minus NLL under the target.

    This is the log of the likelihood ratio, per token. The reference model should not have seen the members
    (e.g. the retain-only or a smaller model of the same family); a member is much more likely under the target.
    """
    nll, ref = _as_array(example_nll, "example_nll"), _as_array(reference_nll, "reference_nll")
    if nll.shape != ref.shape:
        raise ValueError(
            f"reference_score got {nll.size} target NLLs but {ref.size} reference NLLs; score the same examples."
        )
    return ref - nll


# ---------------------------------------------------------------------------- membership-inference summaries


def _labelled(members: ArrayLike, nonmembers: ArrayLike) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, scores) for sklearn: 1 for members, 0 for non-members; None when a score is nan (undefined).

    +-inf are ordered values (e.g. an infinite NLL): they are replaced by their dense rank among all scores, which
    keeps every order and tie, so the ROC curve and its area do not change."""
    members, nonmembers = _as_array(members, "members"), _as_array(nonmembers, "nonmembers")
    if members.size == 0 or nonmembers.size == 0:
        raise ValueError(
            f"Membership inference needs members and non-members; got {members.size} and {nonmembers.size}. "
            "Pass a forget set (members) and an approximate/unseen set (non-members)."
        )
    scores = np.concatenate([members, nonmembers])
    if np.isnan(scores).any():
        return None
    if np.isinf(scores).any():
        scores = np.unique(scores, return_inverse=True)[1].astype(np.float64)
    labels = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    return labels, scores


def roc_auc(members: ArrayLike, nonmembers: ArrayLike) -> float:
    """Area under the ROC curve of members (positives) against non-members, via `sklearn.metrics.roc_auc_score`.

    0.5: indistinguishable from unseen data (the unlearning target); 1.0: every member scores above every
    non-member (not forgotten); below 0.5: members now look *less* likely than unseen data (over-unlearning).
    nan when a score is nan (a model that blew up): the AUC is then undefined, and reported as such.
    """
    from sklearn.metrics import roc_auc_score

    labelled = _labelled(members, nonmembers)
    if labelled is None:
        return math.nan
    return float(roc_auc_score(*labelled))


def roc_points(members: ArrayLike, nonmembers: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) of every threshold (`sklearn.metrics.roc_curve`, all points kept).

    A nan score gives the single point (nan, nan)."""
    from sklearn.metrics import roc_curve

    labelled = _labelled(members, nonmembers)
    if labelled is None:
        return np.array([math.nan]), np.array([math.nan])
    fpr, tpr, _ = roc_curve(*labelled, drop_intermediate=False)
    return fpr, tpr


def tpr_at_fpr(members: ArrayLike, nonmembers: ArrayLike, max_fpr: float) -> float:
    """Highest true positive rate of a threshold whose false positive rate is at most `max_fpr` (nan when a score
    is nan).

    The low-FPR regime is what matters for privacy (Carlini et al. 2022): can an attacker confidently pick out
    *some* members? All ROC points are kept, so no threshold is lost to interpolation.
    """
    _check_fraction(max_fpr, "max_fpr")
    fpr, tpr = roc_points(members, nonmembers)
    if np.isnan(fpr).any():
        return math.nan
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def privleak(auc: float, retrained_auc: float) -> float:
    """PrivLeak (MUSE, Shi et al. 2024): relative AUC gap to a model retrained without the forget set.

    0 is ideal; positive means under-unlearning, negative over-unlearning.
    """
    if retrained_auc <= 0:
        raise ValueError(f"retrained_auc={retrained_auc} must be positive.")
    return (auc - retrained_auc) / retrained_auc


# ---------------------------------------------------------------------------- text overlap


def rouge_l(predictions: Sequence[str], references: Sequence[str], measure: str = "fmeasure") -> np.ndarray:
    """ROUGE-L of each prediction against its reference (`rouge_score`, word tokens, Porter stemming).

    Args:
        measure: "fmeasure", "recall" (what TOFU reports) or "precision".
    """
    from rouge_score import rouge_scorer

    if measure not in ("fmeasure", "recall", "precision"):
        raise ValueError(f"measure={measure!r} is unknown; use 'fmeasure', 'recall' or 'precision'.")
    if len(predictions) != len(references):
        raise ValueError(f"rouge_l got {len(predictions)} predictions but {len(references)} references.")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return np.array([getattr(scorer.score(ref, pred)["rougeL"], measure) for pred, ref in zip(predictions, references)])


def common_prefix_length(prediction: Sequence[int], reference: Sequence[int]) -> int:
    """Number of leading tokens on which `prediction` reproduces `reference` exactly."""
    length = 0
    for predicted, true in zip(prediction, reference):
        if predicted != true:
            break
        length += 1
    return length


# ---------------------------------------------------------------------------- TOFU


def _per_record_mean(perturbed_nll: Sequence[ArrayLike] | np.ndarray, size: int) -> np.ndarray:
    if len(perturbed_nll) != size:
        raise ValueError(
            f"Got {size} answers but {len(perturbed_nll)} lists of perturbed answers; pass one list per record."
        )
    means = []
    for i, values in enumerate(perturbed_nll):
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            raise ValueError(f"Record {i} has no perturbed answer; the truth ratio needs at least one.")
        means.append(values.mean())
    return np.array(means)


def truth_ratio(paraphrased_nll: ArrayLike, perturbed_nll: Sequence[ArrayLike] | np.ndarray) -> np.ndarray:
    """TOFU truth ratio per record: R = exp(NLL(paraphrased) - mean_i NLL(perturbed_i)).

    NLLs are per-token means, so this is the length-normalised probability of the (wrong) perturbed answers
    (geometric mean over them) divided by that of the (right) paraphrased answer: R < 1 when the model
    prefers the truth, R ~ 1 when it cannot tell them apart.
    """
    para = _as_array(paraphrased_nll, "paraphrased_nll")
    return np.exp(para - _per_record_mean(perturbed_nll, para.size))


def truth_ratio_score(ratios: ArrayLike, forget: bool) -> float:
    """TOFU's summary of truth ratios (higher is better in both cases).

    - forget set: mean of min(R, 1/R), 1 when the model cannot tell true from false (forgotten);
    - any other set: mean of max(0, 1 - R), near 1 when it clearly prefers the truth (knowledge kept).
    """
    ratios = _as_array(ratios, "ratios")
    if forget:
        return float(np.minimum(ratios, 1 / ratios).mean())
    return float(np.maximum(0.0, 1 - ratios).mean())


def answer_probability(answer_nll: ArrayLike) -> float:
    """TOFU "Prob." on the forget and retain sets: mean over records of exp(-mean NLL of the answer)."""
    return float(np.exp(-_as_array(answer_nll, "answer_nll")).mean())


def normalized_answer_probability(answer_nll: ArrayLike, perturbed_nll: Sequence[ArrayLike] | np.ndarray) -> float:
    """TOFU "Prob." on real authors and world facts: mean of P(answer) / (P(answer) + sum_i P(perturbed_i)).

    P(.) = exp(-mean NLL), the length-normalised probability; the answer competes with the wrong options.
    """
    answer = np.exp(-_as_array(answer_nll, "answer_nll"))
    if len(perturbed_nll) != answer.size:
        raise ValueError(f"Got {answer.size} answers but {len(perturbed_nll)} lists of perturbed answers.")
    wrong = np.array([np.exp(-np.asarray(v, dtype=np.float64)).sum() for v in perturbed_nll])
    return float((answer / (answer + wrong)).mean())


def forget_quality(unlearned_ratios: ArrayLike, retain_model_ratios: ArrayLike) -> float:
    """TOFU forget quality: p-value of the two-sample Kolmogorov-Smirnov test (`scipy.stats.ks_2samp`).

    Compares the unlearned model's truth ratios on the forget set with those of a model fine-tuned on the
    retain set only (never saw the forget set). High (e.g. > 0.05): the distributions are indistinguishable.
    """
    from scipy.stats import ks_2samp

    unlearned = _as_array(unlearned_ratios, "unlearned_ratios")
    retain = _as_array(retain_model_ratios, "retain_model_ratios")
    return float(ks_2samp(unlearned, retain).pvalue)


def model_utility(values: ArrayLike) -> float:
    """TOFU model utility: harmonic mean (`scipy.stats.hmean`) of the non-forget metrics (0 if any is 0)."""
    from scipy.stats import hmean

    values = _as_array(values, "values")
    if values.size == 0 or (values < 0).any():
        raise ValueError(f"model_utility needs non-negative metric values; got {values.tolist()}.")
    return float(hmean(values))
