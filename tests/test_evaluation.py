"""Evaluation: every metric against hand-derived values, scoring against a bigram model with set probabilities,
sharding, generation, TOFU, lm-eval, the report and the recipe.

The bigram model (as in test_methods.py) has P(next | current = c) = softmax(W[c]) with

    W[0] = ln [1/2, 1/4, 1/4]
    W[1] = ln [1/4, 1/2, 1/4]
    W[2] = ln [1/3, 1/3, 1/3]

For the rows of W[0] and W[1], log p takes the values -ln 2 (probability 1/2) and -2 ln 2 (twice 1/4), so

    mu    = E[log p]   = 1/2 (-ln 2) + 1/2 (-2 ln 2)            = -1.5 ln 2
    E[log p ^ 2]       = 1/2 (ln 2)^2 + 1/2 (2 ln 2)^2         = 2.5 (ln 2)^2
    sigma = sqrt(2.5 - 1.5^2) ln 2                             = 0.5 ln 2

and the Min-K%++ score of a token is (log p - mu) / sigma = +1 for the likely token (p = 1/2) and -1 for an
unlikely one (p = 1/4).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.modeling_outputs import CausalLMOutput

from hf_unlearn.evaluation import metrics
from hf_unlearn.evaluation.membership import attack_scores, percent_name, summarize_attacks
from hf_unlearn.evaluation.scores import ExampleScores, score_examples, token_statistics
from hf_unlearn.evaluation.sharding import map_batches, shard_indices
from hf_unlearn.losses import TokenLogits

LN2 = math.log(2)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BigramLM(nn.Module):
    """logits[:, t] = W[input_ids[:, t]]."""

    def __init__(self):
        super().__init__()
        table = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [1 / 3, 1 / 3, 1 / 3]]))
        self.config = PretrainedConfig(vocab_size=3, pad_token_id=0)
        self.table = nn.Embedding.from_pretrained(table, freeze=True)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return CausalLMOutput(logits=self.table(input_ids))


def example(tokens, labels=None):
    return {"input_ids": tokens, "attention_mask": [1] * len(tokens), "labels": list(labels or tokens)}


# ---------------------------------------------------------------------------- pure metrics


def test_language_modelling_metrics():
    """NLL sums [2, 4] over [1, 3] tokens: mean 6 / 4 = 1.5, perplexity e^1.5; 1 correct of 4 tokens: 0.25."""
    assert metrics.mean_token_nll([2.0, 4.0], [1, 3]) == 1.5
    assert metrics.perplexity(1.5) == pytest.approx(math.exp(1.5))
    assert metrics.token_accuracy([1, 0], [1, 3]) == 0.25
    assert math.isnan(metrics.mean_token_nll([0.0], [0]))


def test_loss_and_reference_scores():
    """LOSS = -NLL; reference = NLL_ref - NLL: [3 - 1, 2 - 2] = [2, 0]."""
    np.testing.assert_array_equal(metrics.loss_score([1.0, 2.0]), [-1.0, -2.0])
    np.testing.assert_array_equal(metrics.reference_score([1.0, 2.0], [3.0, 2.0]), [2.0, 0.0])


def test_zlib_score():
    """zlib compresses "a" to 9 bytes (2 header + 3 deflate + 4 Adler-32): score = -2 / 9."""
    assert metrics.zlib_entropy("a") == 9
    np.testing.assert_allclose(metrics.zlib_score([2.0], ["a"]), [-2 / 9])
    with pytest.raises(ValueError, match="one text per example"):
        metrics.zlib_score([1.0, 2.0], ["a"])


def test_min_k_mean():
    """Values [-1, -5, -3, -2]: K=50% averages the floor(0.5 * 4) = 2 lowest, (-5 - 3) / 2 = -4; K=10% takes
    floor(0.4) = 0, raised to 1 token: -5; K=100% is the plain mean -2.75. 0.3 x 10 = 3.0000000000000004 -> 3."""
    values = [np.array([-1.0, -5.0, -3.0, -2.0])]
    assert metrics.min_k_mean(values, 0.5)[0] == -4.0
    assert metrics.min_k_mean(values, 0.1)[0] == -5.0
    assert metrics.min_k_mean(values, 1.0)[0] == -2.75
    assert metrics.min_k_count(10, 0.3) == 3 and metrics.min_k_count(10, 0.29) == 2
    assert math.isnan(metrics.min_k_mean([np.array([])], 0.5)[0])
    with pytest.raises(ValueError, match="k=0"):
        metrics.min_k_mean(values, 0)


def test_min_k_plus_plus_token_score():
    """(log p - mu) / sigma = (-1 - (-2)) / 0.5 = 2."""
    np.testing.assert_allclose(metrics.min_k_plus_plus_token_scores([-1.0], [-2.0], [0.5]), [2.0])


def test_roc_auc_by_hand_and_against_sklearn():
    """Members [3, 2] vs non-members [1, 2.5]: 3 of the 4 (member, non-member) pairs are ordered right -> 0.75.
    A tie counts one half: [1] vs [1] -> 0.5. On random scores the AUC equals sklearn's and the Mann-Whitney
    U statistic / (n1 n2)."""
    from scipy.stats import mannwhitneyu
    from sklearn.metrics import roc_auc_score

    assert metrics.roc_auc([3.0, 2.0], [1.0, 2.5]) == 0.75
    assert metrics.roc_auc([1.0], [1.0]) == 0.5
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(0.5, 1, 40), rng.normal(0, 1, 60)
    labels = np.r_[np.ones(40), np.zeros(60)]
    expected = roc_auc_score(labels, np.r_[members, nonmembers])
    assert metrics.roc_auc(members, nonmembers) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(mannwhitneyu(members, nonmembers).statistic / (40 * 60), abs=1e-12)
    with pytest.raises(ValueError, match="members and non-members"):
        metrics.roc_auc([], [1.0])


def test_tpr_at_fpr():
    """Members [0.9, 0.8, 0.3], non-members [0.85, 0.1, 0.2, 0.05]. Above 0.85 only the member 0.9: FPR 0,
    TPR 1/3. At threshold 0.8: FPR 1/4 (0.85), TPR 2/3. At 0.3: FPR still 1/4, TPR 1."""
    members, nonmembers = [0.9, 0.8, 0.3], [0.85, 0.1, 0.2, 0.05]
    assert metrics.tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(1 / 3)
    assert metrics.tpr_at_fpr(members, nonmembers, 0.25) == 1.0
    assert metrics.tpr_at_fpr(members, nonmembers, 0.2) == pytest.approx(1 / 3)


def test_orientation_members_with_lower_loss_score_higher():
    """Member NLLs [1.0, 1.2, 2.5] vs non-member NLLs [2.0, 2.2, 1.1]: a member wins a pair when its NLL is
    lower: 1.0 wins 3, 1.2 wins 2 (not against 1.1), 2.5 wins 0 -> AUC 5/9 > 0.5. Swapping the roles: 4/9."""
    member_nll, nonmember_nll = [1.0, 1.2, 2.5], [2.0, 2.2, 1.1]
    auc = metrics.roc_auc(metrics.loss_score(member_nll), metrics.loss_score(nonmember_nll))
    assert auc == pytest.approx(5 / 9)
    assert metrics.roc_auc(metrics.loss_score(nonmember_nll), metrics.loss_score(member_nll)) == pytest.approx(4 / 9)


def test_privleak():
    """(0.6 - 0.5) / 0.5 = 0.2."""
    assert metrics.privleak(0.6, 0.5) == pytest.approx(0.2)


def test_rouge_l_and_common_prefix():
    """ "the cat sat" vs "the cat sat on the mat": LCS 3 words; recall 3/6, precision 1, F = 2/3."""
    assert metrics.rouge_l(["the cat sat"], ["the cat sat on the mat"], "recall")[0] == pytest.approx(0.5)
    assert metrics.rouge_l(["the cat sat"], ["the cat sat on the mat"])[0] == pytest.approx(2 / 3)
    assert metrics.common_prefix_length([1, 2, 3, 4], [1, 2, 5, 4]) == 2
    assert metrics.common_prefix_length([], [1]) == 0


def test_tofu_metrics_by_hand():
    """Truth ratio R = exp(NLL(para) - mean NLL(perturbed)) = exp(1 - 2.5) = e^-1.5 = 0.22313.
    Forget score min(R, 1/R) = 0.22313; retain score max(0, 1 - R) = 0.77687.
    Prob.: NLLs [0, ln 2] -> mean(1, 1/2) = 0.75. Normalised: P(answer) = 1/2 against two perturbed answers of
    1/4: 0.5 / (0.5 + 0.25 + 0.25) = 0.5. KS test of [1..5] vs [10..14]: statistic 1, exact p = 2 / C(10, 5)
    = 2 / 252. Harmonic mean of [1, 0.5] = 2 / (1 + 2) = 2/3; any 0 gives 0."""
    ratio = metrics.truth_ratio([1.0], [[2.0, 3.0]])
    assert ratio[0] == pytest.approx(math.exp(-1.5))
    assert metrics.truth_ratio_score(ratio, forget=True) == pytest.approx(math.exp(-1.5))
    assert metrics.truth_ratio_score(ratio, forget=False) == pytest.approx(1 - math.exp(-1.5))
    assert metrics.answer_probability([0.0, LN2]) == pytest.approx(0.75)
    assert metrics.normalized_answer_probability([LN2], [[2 * LN2, 2 * LN2]]) == pytest.approx(0.5)
    assert metrics.forget_quality([1, 2, 3, 4, 5], [10, 11, 12, 13, 14]) == pytest.approx(2 / 252)
    assert metrics.forget_quality([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert metrics.model_utility([1.0, 0.5]) == pytest.approx(2 / 3)
    assert metrics.model_utility([1.0, 0.0]) == 0.0
    with pytest.raises(ValueError, match="no perturbed answer"):
        metrics.truth_ratio([1.0], [[]])


# ---------------------------------------------------------------------------- scoring a model


def test_score_examples_on_the_bigram_model():
    """[0, 1, 2]: targets 1 | 0 (p 1/4) and 2 | 1 (p 1/4): NLL 2 ln 4 = 4 ln 2, 0 correct, z-scores [-1, -1].
    [0, 0, 1]: 0 | 0 (p 1/2, the argmax) and 1 | 0 (p 1/4): NLL ln 2 + 2 ln 2 = 3 ln 2, 1 correct, z [+1, -1].
    Min-K% with K=50% takes the single lowest log-prob: -2 ln 2 for both."""
    data = [example([0, 1, 2]), example([0, 0, 1])]
    scores = score_examples(BigramLM(), data, pad_token_id=0, batch_size=2, token_scores=True)
    np.testing.assert_allclose(scores.nll_sum.numpy(), [4 * LN2, 3 * LN2], rtol=1e-6)
    assert scores.tokens.tolist() == [2, 2] and scores.correct.tolist() == [0, 1]
    np.testing.assert_allclose(scores.token_logprobs[1].numpy(), [-LN2, -2 * LN2], rtol=1e-6)
    np.testing.assert_allclose(scores.token_zscores[0].numpy(), [-1, -1], rtol=1e-5)
    np.testing.assert_allclose(scores.token_zscores[1].numpy(), [1, -1], rtol=1e-5)
    assert scores.mean_nll == pytest.approx(7 * LN2 / 4)
    assert scores.accuracy == 0.25
    attacks = attack_scores(scores, min_k=(0.5,))
    np.testing.assert_allclose(attacks["min_k_50"], [-2 * LN2, -2 * LN2], rtol=1e-6)
    np.testing.assert_allclose(attacks["min_k_plus_plus_50"], [-1, -1], rtol=1e-5)
    np.testing.assert_allclose(attacks["loss"], [-2 * LN2, -1.5 * LN2], rtol=1e-6)


def test_uniform_row_and_masked_labels():
    """Token 2 predicts uniformly (sigma 0): its z-score is 0, not nan. A -100 label is not a target:
    [2, 0, 1] with labels [-100, -100, 1] keeps only 1 | 0 (p 1/4): NLL 2 ln 2, one token."""
    scores = score_examples(BigramLM(), [example([2, 0, 1], [-100, -100, 1]), example([2, 2])], token_scores=True)
    assert scores.tokens.tolist() == [1, 1]
    assert scores.nll_sum[0].item() == pytest.approx(2 * LN2, rel=1e-6)
    assert scores.token_zscores[1].tolist() == [0.0]


def test_token_score_path_matches_fast_path(tiny_model, forget_data):
    """The log-softmax path (Min-K% statistics) and the cross-entropy path give the same NLLs and hits."""
    batch = {k: torch.tensor([forget_data[i][k] for i in range(2)]) for k in ("input_ids", "labels")}
    with torch.no_grad():
        logits = tiny_model(input_ids=batch["input_ids"]).logits
    fast, full = token_statistics(logits, batch["labels"]), token_statistics(logits, batch["labels"], True)
    for a, b in zip(fast, full):
        assert a[0] == pytest.approx(b[0], rel=1e-5) and a[1:3] == b[1:3]


def test_scores_do_not_depend_on_batch_size(tiny_model, forget_data):
    """Padding and batch composition do not change per-example scores (float round-off only)."""
    one = score_examples(tiny_model, forget_data, batch_size=1)
    many = score_examples(tiny_model, forget_data, batch_size=5)
    torch.testing.assert_close(one.nll_sum, many.nll_sum, rtol=1e-5, atol=1e-5)
    assert torch.equal(one.tokens, many.tokens)


def test_shard_indices_pad_every_rank_to_the_same_count():
    """5 examples on 2 ranks: [0, 1, 2] and [3, 4, 4] (one repeat); 1 example on 3 ranks: every rank 1 item."""
    assert shard_indices(5, 0, 2) == ([0, 1, 2], 3)
    assert shard_indices(5, 1, 2) == ([3, 4, 4], 2)
    assert shard_indices(1, 2, 3) == ([0], 0)
    with pytest.raises(ValueError, match="empty"):
        shard_indices(0, 0, 1)


def test_map_batches_keeps_order_when_sorting():
    items = ["bb", "a", "dddd", "ccc"]
    calls = []

    def fn(batch):
        calls.append(batch)
        return [s.upper() for s in batch]

    assert map_batches(fn, items, batch_size=2, sort_key=len) == ["BB", "A", "DDDD", "CCC"]
    assert calls == [["dddd", "ccc"], ["bb", "a"]]


def test_summaries_name_every_attack_and_fpr():
    """Two non-members cannot resolve an FPR of 1% (needs 100) or 5% (needs 20): those TPRs are None, not the
    TPR at FPR 0 under a misleading name; 50% (needs 2) is reported, with its interval."""
    scores = {"loss": np.array([1.0, 2.0])}
    summary = summarize_attacks(scores, {"loss": np.array([0.0, 1.5])}, fprs=(0.01, 0.05, 0.5))
    assert set(summary["loss"]) == {
        "auc",
        "auc_ci",
        "tpr@1%fpr",
        "tpr@1%fpr_ci",
        "tpr@5%fpr",
        "tpr@5%fpr_ci",
        "tpr@50%fpr",
        "tpr@50%fpr_ci",
    }
    assert summary["loss"]["tpr@1%fpr"] is None and summary["loss"]["tpr@5%fpr_ci"] is None
    assert summary["loss"]["tpr@50%fpr"] == 1.0 and len(summary["loss"]["tpr@50%fpr_ci"]) == 2
    assert set(summarize_attacks(scores, {"loss": np.array([0.0])}, fprs=(0.5,), n_resamples=0)["loss"]) == {
        "auc",
        "tpr@50%fpr",
    }
    assert percent_name(0.125) == "12.5"


# ---------------------------------------------------------------------------- generation, TOFU, lm-eval


def test_batched_greedy_generation_matches_one_by_one(tiny_model):
    """Left padding in a batch gives the same greedy continuations as generating each prompt alone."""
    from hf_unlearn.evaluation.generation import greedy_generate

    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    batched = greedy_generate(tiny_model, prompts, max_new_tokens=6, pad_token_id=0, batch_size=3)
    alone = [greedy_generate(tiny_model, [p], max_new_tokens=6, pad_token_id=0)[0] for p in prompts]
    assert batched == alone and all(len(c) == 6 for c in batched)


def test_verbatim_memorization_is_well_formed(tiny_model, tokenizer, forget_data):
    from hf_unlearn.evaluation.generation import verbatim_memorization

    result = verbatim_memorization(
        tiny_model, forget_data, tokenizer, prefix_tokens=8, continuation_tokens=8, max_examples=4
    )
    assert result["examples"] == 4 and 0 <= result["rouge_l"] <= 1 and 0 <= result["exact_match_tokens"] <= 8
    with pytest.raises(ValueError, match="lower prefix_tokens"):
        verbatim_memorization(tiny_model, forget_data, tokenizer, prefix_tokens=1000)


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


@pytest.mark.slow
def test_lm_eval_local_task(tiny_model, tokenizer):
    """The shipped local lm-eval task runs offline on an in-memory model (12 three-way multiple-choice items)."""
    from hf_unlearn.evaluation import EXAMPLE_TASK, run_lm_eval

    results = run_lm_eval(tiny_model, tokenizer, [EXAMPLE_TASK], batch_size=4)
    accuracy = results["hf_unlearn_general_facts"]["acc,none"]
    assert 0 <= accuracy <= 1 and accuracy * 12 == pytest.approx(round(accuracy * 12))


# ---------------------------------------------------------------------------- report and recipe


def test_evaluate_model_report_and_plots(tmp_path, trained_model_dir, tokenizer, forget_data, retain_data):
    from transformers import AutoModelForCausalLM

    from hf_unlearn.evaluation import evaluate_model, markdown_report
    from hf_unlearn.evaluation.plots import plot_roc_curves, plot_score_histograms, plot_training_curves

    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    from hf_unlearn import chunk_documents
    from tests.conftest import make_documents

    unseen = chunk_documents(make_documents(8, seed=5), tokenizer, max_length=32)
    splits = {"forget": forget_data, "approximate": unseen, "retain": retain_data}
    evaluation = evaluate_model(
        model,
        tokenizer,
        splits,
        min_k=(0.2, 1.0),
        verbatim_prefix_tokens=8,
        verbatim_continuation_tokens=8,
        verbatim_max_examples=4,
    )
    mia = evaluation.metrics["membership_inference"]["attacks"]
    assert set(mia) == {"loss", "zlib", "min_k_20", "min_k_100", "min_k_plus_plus_20", "min_k_plus_plus_100"}
    assert mia["loss"]["auc"] == pytest.approx(mia["min_k_100"]["auc"])  # Min-100% is the LOSS attack
    assert mia["loss"]["auc"] > 0.6  # the fitted model has seen the forget set, not the unseen one
    low, high = mia["loss"]["auc_ci"]
    assert low <= mia["loss"]["auc"] <= high  # the percentile interval of a bootstrap holds its point estimate here
    assert mia["loss"]["tpr@1%fpr"] is None  # 8 unseen documents cannot resolve a 1% FPR (needs 100)
    assert "tpr@1%fpr" in evaluation.metrics["membership_inference"]["unresolved_tpr"]
    nll_low, nll_high = evaluation.metrics["splits"]["forget"]["nll_ci"]
    assert nll_low <= evaluation.metrics["splits"]["forget"]["nll"] <= nll_high
    report = markdown_report({"before": evaluation.metrics, "after": evaluation.metrics})
    assert "## Membership inference" in report and "| forget | before |" in report
    assert "n/a: TPR at FPR 0.01 needs at least 100 non-members" in report
    history = [{"step": 0, "eval_forget_nll": 1.0}, {"step": 2, "eval_forget_nll": 2.0, "eval_retain_nll": 1.5}]
    for path in (
        plot_score_histograms({"m": evaluation}, str(tmp_path / "h.png")),
        plot_roc_curves({"m": evaluation}, str(tmp_path / "r.png")),
        plot_training_curves(history, str(tmp_path / "t.png")),
    ):
        assert os.path.getsize(path) > 1000
    assert plot_training_curves([{"step": 1, "loss": 1.0}], str(tmp_path / "none.png")) is None


@pytest.mark.slow
def test_evaluate_recipe(tmp_path, trained_model_dir, monkeypatch):
    """recipes/evaluate.py (run in this process) on two checkpoints with document data: JSON, Markdown, PNGs."""
    from tests.conftest import make_documents

    for name, seed in (("forget", 1), ("approximate", 5), ("retain", 2)):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in make_documents(6, seed))
        )
    state = {"log_history": [{"step": 0, "eval_forget_nll": 1.0}, {"step": 4, "eval_forget_nll": 3.0}]}
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    out = tmp_path / "report"
    argv = [
        "--model_name_or_path",
        trained_model_dir,
        "--checkpoints",
        trained_model_dir,
        "--labels",
        "before",
        "after",
        "--forget_data",
        str(tmp_path / "forget.jsonl"),
        "--approximate_data",
        str(tmp_path / "approximate.jsonl"),
        "--retain_data",
        str(tmp_path / "retain.jsonl"),
        "--max_length",
        "32",
        "--output_dir",
        str(out),
        "--min_k",
        "0.2",
        "1.0",
        "--verbatim_prefix_tokens",
        "8",
        "--verbatim_continuation_tokens",
        "8",
        "--verbatim_max_examples",
        "4",
        "--trainer_state",
        str(tmp_path / "trainer_state.json"),
    ]
    recipe = importlib.util.spec_from_file_location("evaluate_recipe", os.path.join(ROOT, "recipes", "evaluate.py"))
    module = importlib.util.module_from_spec(recipe)
    monkeypatch.setitem(sys.modules, "evaluate_recipe", module)  # dataclasses look their module up there
    recipe.loader.exec_module(module)
    module.main(argv)
    metrics_json = json.loads((out / "evaluation.json").read_text())
    assert set(metrics_json["models"]) == {"before", "after"}
    assert metrics_json["models"]["before"]["splits"]["forget"] == metrics_json["models"]["after"]["splits"]["forget"]
    assert "# Unlearning evaluation" in (out / "report.md").read_text()
    for name in ("mia_histograms_loss.png", "roc_loss.png", "training_curves.png"):
        assert (out / name).stat().st_size > 1000


# ---------------------------------------------------------------------------- several processes


def _min_k_plus_plus_reference(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Min-K%++ by its definition, in float64, over the finite logits of each row only: log p(target),
    z = (log p(target) - E_p[log p]) / sqrt(Var_p[log p]), and the quantities the float32 error bound needs
    (y = logit - max: E_p[y], E_p[y^2], y(target), log s = log sum exp y, sigma)."""
    out: dict[str, list] = {key: [] for key in ("logp", "z", "mean_y", "mean_y2", "y_target", "log_s", "sigma")}
    for row, target in zip(logits.double(), targets):
        y = row[torch.isfinite(row)] - row.max()
        log_s = torch.logsumexp(y, -1)
        p = (y - log_s).exp()
        mean_y, mean_y2 = (p * y).sum(), (p * y * y).sum()
        sigma = (mean_y2 - mean_y**2).clamp(min=0).sqrt()
        y_target = row[target] - row.max()
        logp = y_target - log_s
        values = (logp, (logp - (mean_y - log_s)) / sigma, mean_y, mean_y2, y_target, log_s, sigma)
        for key, value in zip(out, values):
            out[key].append(value)
    return {key: torch.stack(value) for key, value in out.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_min_k_plus_plus_statistics_match_float64_definition(dtype):
    """token_statistics' one-exponential Min-K%++ moments (centred at the row maximum) against the definition in
    float64, on random rows, a nearly flat row, a peaked row and masked (-inf) vocabulary entries, which must count
    as probability 0 (not make the scores nan).

    Tolerance, per row, from float32 error propagation. Each p(z) carries a relative error <= ~20 ulp (the
    vectorised exponential) and summing 1,000 terms adds <= ~10 more (pairwise), so E_p[y] and E_p[y^2] are within
    a relative d = 30 * 2^-23 = 3.6e-6 of their values, log s within d * log s. sigma^2 = E[y^2] - E[y]^2 then has
    an absolute error <= d * E[y^2] + 2d * E[y]^2 <= 3d * E[y^2], i.e. sigma a relative error
    <= 1.5 d * E[y^2] / sigma^2; the numerator log p - mu = y_t - E[y] an absolute error <= d (|y_t| + |E[y]|).
    So |dz| <= |z| * 1.5 d * E[y^2] / sigma^2 + d (|y_t| + |E[y]|) / sigma; the test allows twice that plus 1e-6.
    A wrong moment or a missed -inf moves z by O(1) and fails. bfloat16 logits are compared with the reference
    computed from the same bfloat16 values (the statistics run in float32), so the same bound holds. log p(target)
    is within d * (|y_t| + log s) of the reference. The row with one allowed token has sigma = 0: z is 0 there (as
    for a uniform row), not nan."""
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(6, 1000, generator=generator) * 6).clamp(-20, 20)
    logits[1] = torch.randn(1000, generator=generator)  # nearly flat
    logits[2, 7] = 20.0  # peaked: one token holds most of the mass
    logits[3, ::4] = float("-inf")  # a masked quarter of the vocabulary
    logits[4, :999] = float("-inf")  # one allowed token: p = 1, sigma = 0
    logits = logits.to(dtype)
    targets = torch.tensor([5, 9, 7, 2, 999, 300])
    labels = torch.full((1, 7), -100)
    labels[0, 1:] = targets  # position t predicts labels[t + 1]
    rows = torch.cat([logits, torch.zeros(1, 1000, dtype=dtype)])[None]  # 7 positions; the last predicts nothing
    ((nll, count, correct, logp, z),) = token_statistics(rows, labels, token_scores=True)
    ref = _min_k_plus_plus_reference(logits.float(), targets)
    d = 30 * 2.0**-23
    assert count == 6 and torch.isfinite(z).all()
    logp_bound = d * (ref["y_target"].abs() + ref["log_s"]) * 2 + 1e-6
    assert ((logp.double() - ref["logp"]).abs() <= logp_bound).all(), (logp, ref["logp"])
    spread = [0, 1, 2, 3, 5]
    sigma = ref["sigma"][spread]
    z_bound = (
        2
        * (
            ref["z"][spread].abs() * 1.5 * d * ref["mean_y2"][spread] / sigma**2
            + d * (ref["y_target"][spread].abs() + ref["mean_y"][spread].abs()) / sigma
        )
        + 1e-6
    )
    assert ((z[spread].double() - ref["z"][spread]).abs() <= z_bound).all(), (z, ref["z"], z_bound)
    assert z[4].item() == 0.0
    assert nll == pytest.approx(-ref["logp"].sum().item(), rel=1e-5)
    assert correct == int((logits.float()[torch.arange(6), targets] >= logits.float().amax(-1)).sum())


@pytest.mark.filterwarnings("error")  # writing into a work buffer of the wrong size warns ("was resized")
@pytest.mark.parametrize("token_scores", [False, True])
def test_statistics_from_a_head_of_unknown_vocabulary(token_scores):
    """An output head that is a plain function (no embedding module to read its vocabulary size from): the work
    buffers take the size of the logits it returns (not a guessed one), and the statistics equal those of the
    same full logits."""
    generator = torch.Generator().manual_seed(0)
    states, weight = torch.randn(2, 6, 8, generator=generator), torch.randn(50, 8, generator=generator)
    labels = torch.randint(0, 50, (2, 6), generator=generator)
    labels[1, :2] = -100

    def head(hidden):
        return hidden @ weight.T

    full = token_statistics(head(states), labels, token_scores)
    chunked = token_statistics(TokenLogits(states, head), labels, token_scores)
    for a, b in zip(chunked, full, strict=True):
        assert a[0] == pytest.approx(b[0], rel=1e-5) and a[1:3] == b[1:3]
        for x, y in zip(a[3:], b[3:]):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_match_one(trained_model_dir, tmp_path):
    """torchrun with 2 processes (gloo on CPU) gives the same per-example scores, token scores, greedy
    continuations and callback evaluations (gradient ascent, global batch 4 either way) as 1 process.

    The forget split has an odd number of examples, so one shard is padded (and its duplicate dropped)."""
    from tests.eval_worker import run

    single = run(trained_model_dir, None, per_device_batch=4)
    out = tmp_path / "two.json"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29547"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    result = subprocess.run(
        torchrun + [os.path.join(ROOT, "tests", "eval_worker.py"), trained_model_dir, str(out), "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    double = json.loads(out.read_text())
    assert (single["world_size"], double["world_size"]) == (1, 2) and single["examples"] % 2 == 1
    np.testing.assert_allclose(double["nll_sum"], single["nll_sum"], rtol=1e-5)
    assert double["tokens"] == single["tokens"] and double["correct"] == single["correct"]
    for key in ("token_logprobs", "token_zscores"):
        for a, b in zip(double[key], single[key], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert double["generated_sha256"] == single["generated_sha256"]
    assert [h["step"] for h in double["history"]] == [0, 1, 2, 3]
    for a, b in zip(double["history"], single["history"], strict=True):
        for key in ("forget", "approximate", "auc", "min_k_20"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), (a["step"], key)
    assert len({round(h["forget"], 6) for h in single["history"]}) == 4  # the model did change between evaluations


# ---------------------------------------------------------------------------- GPU (never in CI)


@pytest.mark.gpu
def test_cuda_scores_match_cpu():
    """On a GPU (512 MB logit chunks instead of 1 MB), scores equal the CPU's in float32, with dense (document)
    and sparse (prompt-masked) labels; bfloat16 scoring stays within 2% of float32; generation runs."""
    from hf_unlearn.evaluation.generation import greedy_generate
    from hf_unlearn.testing import build_llama

    model = build_llama(1000, hidden_size=64, layers=2, heads=4, seed=0)
    ids = torch.randint(3, 1000, (6, 40), generator=torch.Generator().manual_seed(0))
    data = [example(row.tolist()) for row in ids]
    data[1]["labels"][:30] = [-100] * 30  # mostly masked: the gathered-rows path
    cpu = score_examples(model, data, batch_size=4, token_scores=True)
    gpu = score_examples(model.cuda(), data, batch_size=4, token_scores=True)
    torch.testing.assert_close(gpu.nll_sum, cpu.nll_sum, rtol=1e-4, atol=1e-4)
    assert torch.equal(gpu.tokens, cpu.tokens) and torch.equal(gpu.correct, cpu.correct)
    for a, b in zip(gpu.token_zscores, cpu.token_zscores, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    half = score_examples(model.to(torch.bfloat16), data, batch_size=4)
    assert half.mean_nll == pytest.approx(cpu.mean_nll, rel=0.02)
    continuations = greedy_generate(model, [row[:5] for row in ids.tolist()], 4, pad_token_id=0, batch_size=3)
    assert [len(c) for c in continuations] == [4] * 6


# ---------------------------------------------------------------------------- regressions


def test_tofu_model_utility_needs_all_nine_values():
    """Defect 12: TOFU's model utility is the harmonic mean of 9 values (probability, ROUGE-L, truth ratio on
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


def hand_scores(nll_sums, tokens):
    return ExampleScores(
        nll_sum=torch.tensor(nll_sums, dtype=torch.float64),
        tokens=torch.tensor(tokens),
        correct=torch.zeros(len(tokens)),
    )


def test_examples_without_targets_are_excluded_from_membership_inference():
    """Defect 12: an example with no target token (all labels -100, or a single token) has NLL 0 / 0, which the
    old code scored as NLL 0: the strongest member. It must be left out, and counted.

    Members: NLLs 1.0 and 3.0 (sums 2 and 6 over 2 tokens each) plus one example without targets;
    non-members: 1.5, 2.5, 3.2, 3.5 (one token each).
    LOSS AUC = P(member NLL < non-member NLL): 1.0 beats all 4, 3.0 beats 3.2 and 3.5 -> 6/8 = 0.75 (with the
    empty example scored as NLL 0 it would be 10/12). TPR at FPR <= 25%: the threshold that admits one
    non-member (1.5) admits the member 1.0 only -> 1/2 (2/3 with the empty example). The token-weighted mean
    NLL is (2 + 6) / 4 = 2.0 either way."""
    from hf_unlearn.evaluation import membership

    members = hand_scores([2.0, 0.0, 6.0], [2, 0, 2])
    nonmembers = hand_scores([1.5, 2.5, 3.2, 3.5], [1, 1, 1, 1])
    assert membership.loss_auc(members, nonmembers) == pytest.approx(0.75)
    assert membership.scored_mask(members).tolist() == [True, False, True]
    attacks = {name: attack_scores(scores) for name, scores in (("m", members), ("n", nonmembers))}
    assert attacks["m"]["loss"].tolist() == [-1.0, -3.0]
    summary = summarize_attacks(attacks["m"], attacks["n"], fprs=(0.25,))["loss"]
    assert summary["auc"] == pytest.approx(0.75) and summary["tpr@25%fpr"] == pytest.approx(0.5)
    assert members.mean_nll == pytest.approx(2.0)


def test_auc_and_tpr_are_nan_for_nan_scores_and_rank_infinities():
    """a nan score (a model that blew up) makes the AUC and TPR undefined (nan), not an
    exception; +-inf are ordered values: members [inf, 1] vs non-members [0, -inf] are perfectly separated
    (AUC 1, TPR 1 at FPR 0 <= 50%)."""
    assert math.isnan(metrics.roc_auc([math.nan, 1.0], [0.0, 0.5]))
    assert math.isnan(metrics.tpr_at_fpr([math.nan, 1.0], [0.0, 0.5], 0.5))
    assert metrics.roc_auc([math.inf, 1.0], [0.0, -math.inf]) == 1.0
    assert metrics.tpr_at_fpr([math.inf, 1.0], [0.0, -math.inf], 0.5) == 1.0


def test_nan_model_evaluates_to_nan_without_crashing(tiny_model, tokenizer, forget_data, retain_data):
    """every weight nan. The evaluation reports nan NLLs and nan AUCs instead of crashing in the
    AUC computation."""
    from hf_unlearn.evaluation import evaluate_model

    with torch.no_grad():
        for parameter in tiny_model.parameters():
            parameter.fill_(math.nan)
    splits = {"forget": forget_data.select(range(4)), "approximate": retain_data.select(range(4))}
    evaluation = evaluate_model(tiny_model, tokenizer, splits, min_k=(0.5,), verbatim_prefix_tokens=None)
    assert math.isnan(evaluation.metrics["splits"]["forget"]["nll"])
    attacks = evaluation.metrics["membership_inference"]["attacks"]
    assert math.isnan(attacks["loss"]["auc"]) and math.isnan(attacks["min_k_50"]["auc"])


def test_tofu_records_without_targets_are_left_out(tiny_model, tokenizer):
    """Defect 12 (means): a TOFU record whose question fills `max_length` keeps no answer token; scored, its
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
