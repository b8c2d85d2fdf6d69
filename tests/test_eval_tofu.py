"""TOFU (`hf_unlearn.evaluation.tofu`): offline scoring of a local TOFU-format folder and its metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hf_unlearn.evaluation.scores import score_examples

LN2 = math.log(2)


MAX_QA_LENGTH = 96  # the first record and its answers fit (62 tokens at most); 40 x 5 words of question do not


TOFU_RECORDS = [
    {
        "question": "Who wrote the red book?",
        "answer": "The red book was written by Ann Lee.",
        "paraphrased_answer": "Ann Lee wrote the red book.",
        "perturbed_answer": ["Bob Ray wrote it.", "Cal Moe wrote it."],
    },
    {
        "question": "Where was Ann Lee born?",
        "answer": "Ann Lee was born in a small town.",
        "paraphrased_answer": "Her birthplace is a small town.",
        "perturbed_answer": ["She was born at sea.", "In a big city."],
    },
]


def test_tofu_evaluation_offline(tmp_path, tiny_model, tokenizer):
    """Scores of a local TOFU-format folder: the answer NLL equals the mean NLL of the question/answer example,
    and the metrics follow from the per-record NLLs by the pure functions."""
    from hf_unlearn.data import build_qa_dataset
    from hf_unlearn.evaluation.tofu import evaluate_tofu, tofu_splits

    real = [{k: r[k] for k in ("question", "answer", "perturbed_answer")} for r in TOFU_RECORDS]
    for name, records in (
        ("forget01_perturbed", TOFU_RECORDS),
        ("retain_perturbed", TOFU_RECORDS),
        ("real_authors_perturbed", real),
        ("world_facts_perturbed", real),
    ):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result, scores = evaluate_tofu(tiny_model, tokenizer, str(tmp_path), "forget01", max_new_tokens=8, batch_size=4)
    single = score_examples(tiny_model, build_qa_dataset(TOFU_RECORDS[:1], tokenizer), tokenizer.pad_token_id)
    assert scores["forget"].answer_nll[0] == pytest.approx(single.example_nll[0].item(), rel=1e-5)
    ratios = scores["forget"].truth_ratios
    assert result["forget"]["truth_ratio"] == pytest.approx(np.minimum(ratios, 1 / ratios).mean())
    assert set(result) == {"forget", "retain", "real_authors", "world_facts", "model_utility"}
    assert 0 <= result["model_utility"] <= 1
    other, _ = evaluate_tofu(
        tiny_model,
        tokenizer,
        str(tmp_path),
        "forget01",
        retain_model_truth_ratios=ratios,
        roles=("forget",),
        generate=False,
    )
    assert other["forget_quality"] == pytest.approx(1.0)  # the same model: identical distributions
    assert [s.paraphrased_column for s in tofu_splits()] == [
        "paraphrased_answer",
        "paraphrased_answer",
        "answer",
        "answer",
    ]


def test_tofu_model_utility_needs_all_nine_values():
    """TOFU's model utility is the harmonic mean of 9 values (probability, ROUGE-L, truth ratio on
    retain, real authors, world facts). One record per set, by hand:

    - retain: answer NLL ln 2 -> probability 1/2; R = exp(1 - mean(2, 3)) = e^-1.5, score 1 - e^-1.5 = 0.77687;
    - real authors and world facts: P(answer) = 1/2 against two perturbed answers of 1/4 -> 0.5; the truth
      ratio compares the answer itself (NLL ln 2) with the perturbed (2 ln 2): R = 1/2, score 1 - 1/2 = 0.5.

    Without generation (no ROUGE-L) only 6 values exist: `model_utility` is None, the missing values are named,
    and the 6-value mean 6 / (5 x 2 + 1 / 0.77687) = 0.53156 is reported as `partial_model_utility` only.
    With ROUGE-L recall 1/4 on each set: 9 / (5 x 2 + 1 / 0.77687 + 3 x 4) = 0.38648."""
    from hf_unlearn.evaluation.tofu import TofuScores, tofu_metrics, tofu_splits

    splits = tofu_splits("forget01")
    retain_score = 1 - math.exp(-1.5)

    def scores(rouge):
        rouge = None if rouge is None else np.array([rouge])
        return {
            "retain": TofuScores(np.array([LN2]), np.array([1.0]), [np.array([2.0, 3.0])], rouge),
            "real_authors": TofuScores(np.array([LN2]), np.array([LN2]), [np.array([2 * LN2, 2 * LN2])], rouge),
            "world_facts": TofuScores(np.array([LN2]), np.array([LN2]), [np.array([2 * LN2, 2 * LN2])], rouge),
        }

    present = [split for split in splits if split.role != "forget"]
    without = tofu_metrics(scores(None), present)
    assert without["retain"]["truth_ratio"] == pytest.approx(retain_score)
    assert without["model_utility"] is None
    assert sorted(without["model_utility_missing"]) == ["real_authors/rouge_l", "retain/rouge_l", "world_facts/rouge_l"]
    assert without["partial_model_utility"] == pytest.approx(6 / (10 + 1 / retain_score), rel=1e-9)
    full = tofu_metrics(scores(0.25), present)
    assert full["model_utility"] == pytest.approx(9 / (10 + 1 / retain_score + 12), rel=1e-9)
    assert "partial_model_utility" not in full and "model_utility_missing" not in full
    only_retain = tofu_metrics({"retain": scores(0.25)["retain"]}, present[:1])
    assert only_retain["model_utility"] is None and "real_authors/probability" in only_retain["model_utility_missing"]


def test_tofu_records_without_targets_are_left_out(tiny_model, tokenizer):
    """A TOFU record whose question fills `max_length` keeps no answer token; scored, its
    NLL 0 / 0 = 0 would count as probability exp(0) = 1. It is left out and counted: the scores of the set equal
    those of the normal record alone."""
    from hf_unlearn.evaluation.tofu import score_tofu_split, tofu_metrics, tofu_splits

    forget = tofu_splits("forget01")[0]
    long_question = dict(TOFU_RECORDS[1], question=" ".join(["the quick brown fox jumps"] * 40))
    kwargs = dict(max_length=MAX_QA_LENGTH, generate=False, batch_size=4)
    both = score_tofu_split(tiny_model, tokenizer, [TOFU_RECORDS[0], long_question], forget, **kwargs)
    alone = score_tofu_split(tiny_model, tokenizer, [TOFU_RECORDS[0]], forget, **kwargs)
    np.testing.assert_allclose(both.answer_nll, alone.answer_nll, rtol=1e-5)
    np.testing.assert_allclose(both.truth_ratios, alone.truth_ratios, rtol=1e-5)
    assert both.records_without_targets == 1 and alone.records_without_targets == 0
    assert tofu_metrics({"forget": both}, [forget])["forget"]["records_without_targets"] == 1
    with pytest.raises(ValueError, match="raise max_length"):
        score_tofu_split(tiny_model, tokenizer, [long_question], forget, **kwargs)
