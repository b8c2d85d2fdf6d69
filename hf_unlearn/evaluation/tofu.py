"""TOFU evaluation (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs"; `locuslab/TOFU`).

Four evaluation sets, each a file / Hub config of question-answer records:

| role | Hub config (forget10) | truth ratio compares | "Prob." |
|---|---|---|---|
| forget | `forget10_perturbed` | `perturbed_answer` vs `paraphrased_answer` | mean exp(-NLL(answer)) |
| retain | `retain_perturbed` | `perturbed_answer` vs `paraphrased_answer` | mean exp(-NLL(answer)) |
| real_authors | `real_authors_perturbed` | `perturbed_answer` vs `answer` | P(answer) / (P(answer) + sum P(perturbed)) |
| world_facts | `world_facts_perturbed` | `perturbed_answer` vs `answer` | as real_authors |

Every NLL is the per-token mean NLL of an answer given the question, formatted with the same prompt template as
training (`build_qa_dataset`); ROUGE-L is the recall of the greedy answer against the true answer.
Model utility = harmonic mean of the 9 (probability, ROUGE-L, truth ratio) values of retain, real_authors and
world_facts, reported only when all 9 exist (without generation there is no ROUGE-L: the mean of the other 6
is then `partial_model_utility`, never `model_utility`; see `utility_metrics`); forget quality = KS-test p-value
of the forget-set truth ratios against those of a model trained on the retain set only (the "retain model"). These match github.com/locuslab/tofu (`aggregate_stat_eval.py`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from transformers.utils import logging

from ..data import build_qa_dataset
from .generation import generate_answers
from .membership import scored_mask
from .metrics import (
    answer_probability,
    forget_quality,
    model_utility,
    normalized_answer_probability,
    rouge_l,
    truth_ratio,
    truth_ratio_score,
)
from .scores import score_examples

logger = logging.get_logger(__name__)

TOFU_HUB_ID = "locuslab/TOFU"
# TOFU's model utility: these three numbers on each of these three sets (9 values).
UTILITY_ROLES = ("retain", "real_authors", "world_facts")
UTILITY_METRICS = ("probability", "rouge_l", "truth_ratio")
DEFAULT_PROMPT_TEMPLATE = "Question: {question}\nAnswer: "


@dataclass(frozen=True)
class TofuSplit:
    """One TOFU evaluation set: its role and the file / Hub config that holds it.

    Attributes:
        role: "forget", "retain", "real_authors" or "world_facts" (decides how probability and truth ratio
            are summarised).
        config: file stem in a local folder, or Hub config of `locuslab/TOFU` (e.g. "forget10_perturbed").
    """

    role: str
    config: str

    @property
    def paraphrased_column(self) -> str:
        """The "true" answer the perturbed answers are compared with (TOFU has no paraphrase for real-world sets)."""
        return "paraphrased_answer" if self.role in ("forget", "retain") else "answer"

    @property
    def normalized_probability(self) -> bool:
        return self.role in ("real_authors", "world_facts")


def tofu_splits(forget_split: str = "forget10") -> list[TofuSplit]:
    """The four evaluation sets of a TOFU forget split ("forget01", "forget05" or "forget10")."""
    if forget_split not in ("forget01", "forget05", "forget10"):
        raise ValueError(
            f"forget_split={forget_split!r} is not a TOFU forget split; use forget01, forget05 or forget10."
        )
    return [
        TofuSplit("forget", f"{forget_split}_perturbed"),
        TofuSplit("retain", "retain_perturbed"),
        TofuSplit("real_authors", "real_authors_perturbed"),
        TofuSplit("world_facts", "world_facts_perturbed"),
    ]


def load_tofu_records(split: TofuSplit, source: str = TOFU_HUB_ID) -> list[dict]:
    """Records of one evaluation set from a local folder of `<config>.jsonl` files or from the Hub."""
    from ..data import load_records

    path = os.path.join(source, f"{split.config}.jsonl") if os.path.isdir(source) else f"{source}:{split.config}"
    records = load_records(path, "train").to_list()
    for column in ("question", "answer", "perturbed_answer", split.paraphrased_column):
        if column not in records[0]:
            raise ValueError(f"TOFU records from {path!r} lack the column {column!r} (they have {sorted(records[0])}).")
    return records


@dataclass
class TofuScores:
    """Per-record TOFU quantities of one evaluation set under one model.

    Attributes:
        answer_nll: per-token mean NLL of the true answer, [num_records].
        paraphrased_nll: the same for the answer the truth ratio compares with, [num_records].
        perturbed_nll: for each record, the per-token mean NLL of each perturbed (wrong) answer.
        rouge_recall: ROUGE-L recall of the greedy answer against the true answer (None without generation).
        extraction_strength: the true answer's extraction strength (`extraction_strength_of`), from the same pass.
        records_without_targets: records left out because one of their answers kept no target token (cut off
            by `max_length`): its NLL would be 0 / 0, i.e. a probability of 1.
    """

    answer_nll: np.ndarray
    paraphrased_nll: np.ndarray
    perturbed_nll: list[np.ndarray]
    rouge_recall: np.ndarray | None = None
    records_without_targets: int = 0
    extraction_strength: np.ndarray | None = None

    @property
    def truth_ratios(self) -> np.ndarray:
        return truth_ratio(self.paraphrased_nll, self.perturbed_nll)


def score_tofu_split(
    model,
    tokenizer,
    records: Sequence[Mapping[str, Any]],
    split: TofuSplit,
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    max_length: int = 512,
    batch_size: int = 8,
    generate: bool = True,
    max_new_tokens: int = 64,
    accelerator: Any | None = None,
) -> TofuScores:
    """Score the true, paraphrased and perturbed answers of `records` (one sharded pass) and optionally generate.

    A record with an answer that keeps no target token within `max_length` is left out (counted in
    `records_without_targets`, with a warning)."""
    pairs, owners = [], []  # every (question, answer) to score, and which record / slot it belongs to
    for i, record in enumerate(records):
        answers = [record["answer"], record[split.paraphrased_column], *record["perturbed_answer"]]
        pairs += [{"question": record["question"], "answer": answer} for answer in answers]
        owners.append(len(answers))
    examples = build_qa_dataset(pairs, tokenizer, max_length=max_length, prompt_template=prompt_template)
    scores = score_examples(model, examples, tokenizer.pad_token_id, batch_size, accelerator=accelerator)
    nll, scored, extraction = scores.example_nll.numpy(), scored_mask(scores), scores.extraction_strength.numpy()
    bounds = list(zip(np.cumsum([0, *owners])[:-1], np.cumsum(owners)))
    kept = [i for i, (start, end) in enumerate(bounds) if scored[start:end].all()]
    dropped = len(records) - len(kept)
    if not kept:
        raise ValueError(
            f"No TOFU {split.role} record keeps a target token for every answer within max_length={max_length}; "
            "raise max_length."
        )
    if dropped:
        logger.warning(
            f"TOFU {split.role}: {dropped} of {len(records)} records have an answer with no target token within "
            f"max_length={max_length}; they are left out of every metric. Raise max_length to keep them."
        )
    per_record = [nll[bounds[i][0] : bounds[i][1]] for i in kept]
    rouge = None
    if generate:
        questions = [records[i]["question"] for i in kept]
        answers = generate_answers(
            model, tokenizer, questions, prompt_template, max_new_tokens, batch_size, accelerator
        )
        rouge = rouge_l(answers, [records[i]["answer"] for i in kept], measure="recall")
    return TofuScores(
        answer_nll=np.array([values[0] for values in per_record]),
        paraphrased_nll=np.array([values[1] for values in per_record]),
        perturbed_nll=[values[2:] for values in per_record],
        rouge_recall=rouge,
        records_without_targets=dropped,
        extraction_strength=np.array([extraction[bounds[i][0]] for i in kept]),
    )


def tofu_split_metrics(scores: TofuScores, split: TofuSplit) -> dict[str, float]:
    """TOFU's three numbers for one set: probability, ROUGE-L recall (if generated) and truth-ratio score."""
    if split.normalized_probability:
        probability = normalized_answer_probability(scores.answer_nll, scores.perturbed_nll)
    else:
        probability = answer_probability(scores.answer_nll)
    metrics = {"probability": probability}
    if scores.rouge_recall is not None:
        metrics["rouge_l"] = float(np.mean(scores.rouge_recall))
    metrics["truth_ratio"] = truth_ratio_score(scores.truth_ratios, forget=split.role == "forget")
    if scores.records_without_targets:
        metrics["records_without_targets"] = scores.records_without_targets
    return metrics


def utility_metrics(per_set: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """TOFU model utility from per-set metrics (`tofu_split_metrics` by role), honest about missing values.

    With all 9 values (probability, ROUGE-L, truth ratio of retain, real_authors and world_facts):
    `{"model_utility": harmonic mean}`. Otherwise `model_utility` is None, `model_utility_missing` names the
    absent values ("<role>/<metric>") and, if any value exists, `partial_model_utility` is the harmonic mean of
    those present: a different number from TOFU's, under a different name.
    """
    present = {
        f"{role}/{metric}": per_set[role][metric]
        for role in UTILITY_ROLES
        for metric in UTILITY_METRICS
        if metric in per_set.get(role, {})
    }
    names = [f"{role}/{metric}" for role in UTILITY_ROLES for metric in UTILITY_METRICS]
    missing = [name for name in names if name not in present]
    if not missing:
        return {"model_utility": model_utility(list(present.values()))}
    out: dict[str, Any] = {"model_utility": None, "model_utility_missing": missing}
    if present:
        out["partial_model_utility"] = model_utility(list(present.values()))
    return out


def tofu_metrics(
    scores: Mapping[str, TofuScores],
    splits: Sequence[TofuSplit],
    retain_model_truth_ratios: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Per-set metrics, model utility (`utility_metrics`: None unless all 9 values exist) and, given the retain
    model's forget-set truth ratios, forget quality."""
    result: dict[str, Any] = {split.role: tofu_split_metrics(scores[split.role], split) for split in splits}
    result.update(utility_metrics(result))
    if retain_model_truth_ratios is not None and "forget" in scores:
        result["forget_quality"] = forget_quality(scores["forget"].truth_ratios, retain_model_truth_ratios)
    return result


def evaluate_tofu(
    model,
    tokenizer,
    source: str = TOFU_HUB_ID,
    forget_split: str = "forget10",
    retain_model_truth_ratios: Sequence[float] | None = None,
    max_records: int | None = None,
    roles: Sequence[str] | None = None,
    **score_kwargs,
) -> tuple[dict[str, Any], dict[str, TofuScores]]:
    """Run the TOFU evaluation of one model.

    Args:
        source: `locuslab/TOFU` (the Hub) or a local folder of `<config>.jsonl` files with the same records.
        forget_split: "forget01", "forget05" or "forget10".
        retain_model_truth_ratios: the retain model's forget-set truth ratios (`scores["forget"].truth_ratios`
            of a run on that model), for forget quality.
        max_records: keep the first N records of each set (quick runs).
        roles: which sets to evaluate (default: all four).
        score_kwargs: passed to `score_tofu_split` (prompt_template, batch_size, generate, accelerator, ...).

    Returns:
        (metrics, per-set scores); keep `scores["forget"].truth_ratios` of the retain model for forget quality.
    """
    splits = [split for split in tofu_splits(forget_split) if roles is None or split.role in roles]
    scores = {}
    for split in splits:
        records = load_tofu_records(split, source)[:max_records]
        scores[split.role] = score_tofu_split(model, tokenizer, records, split, **score_kwargs)
    return tofu_metrics(scores, splits, retain_model_truth_ratios), scores


def extraction_strength_of(predictions: Any, labels: Any) -> np.ndarray:
    """Extraction strength (Carlini et al. 2021, as open-unlearning's TOFU `extraction_strength`) of each example
    from teacher-forced top-1 predictions: ES = 1 - k / n, where n is the number of target (answer) tokens and k
    the shortest answer prefix from which greedy decoding reproduces the rest of the answer exactly.

    Greedy decoding from the true prefix y_<k reproduces y_k..y_n exactly iff the top-1 prediction given the true
    prefix is right at every position t >= k (each generated token then equals the true one, so the context stays
    the true prefix): k = 1 + the last wrong position (0 when all are right), and one teacher-forced pass suffices.

    Args:
        predictions: [batch, length] top-1 next-token predictions aligned with `labels` (position t predicts
            labels[t]).
        labels: [batch, length] target tokens, -100 where not a target (prompt, padding).
    Returns: ES per example (nan for an example without target tokens).
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    out = np.full(len(labels), np.nan)
    for row, (predicted, target) in enumerate(zip(predictions, labels)):
        keep = target != -100
        n = int(keep.sum())
        if n == 0:
            continue
        wrong = np.flatnonzero(predicted[keep] != target[keep])
        k = int(wrong[-1]) + 1 if len(wrong) else 0
        out[row] = 1.0 - k / n
    return out
