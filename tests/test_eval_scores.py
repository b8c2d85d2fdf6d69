"""Scoring a model (`hf_unlearn.evaluation.scores`): per-example NLLs, hits and token statistics against a bigram
model with set probabilities, and the Min-K%++ statistics against their float64 definition.
The bigram model (as in tests/_support.py) has P(next | current = c) = softmax(W[c]) with

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

import math

import numpy as np
import pytest
import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.modeling_outputs import CausalLMOutput

from hf_unlearn.evaluation.membership import attack_scores
from hf_unlearn.evaluation.scores import score_examples, token_statistics
from hf_unlearn.losses import TokenLogits

LN2 = math.log(2)


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


def test_extraction_strength_on_the_bigram_model():
    """The bigram model's top-1 prediction is 0 after 0 and 1 after 1 (p 1/2 against 1/4).
    [0, 0, 0, 0]: targets 0 | 0 three times, all hits: reproduced 3 of 3, ES 1.
    [0, 1, 1, 1]: 1 | 0 misses (target rank 1), then 1 | 1 twice hits: reproduced 2 of 3, ES 2/3.
    [0, 0, 1, 0], prompt [0, 0] masked: 1 | 0 misses, 0 | 1 misses (rank 2): reproduced 0 of 2, ES 0.
    [0, 1] with no target: ES nan."""
    data = [
        example([0, 0, 0, 0]),
        example([0, 1, 1, 1]),
        example([0, 0, 1, 0], [-100, -100, 1, 0]),
        example([0, 1], [-100, -100]),
    ]
    scores = score_examples(BigramLM(), data, pad_token_id=0, batch_size=3, token_scores=True)
    assert scores.reproduced.tolist() == [3, 2, 0, 0] and scores.tokens.tolist() == [3, 3, 2, 0]
    np.testing.assert_allclose(scores.extraction_strength.numpy(), [1.0, 2 / 3, 0.0, np.nan])


def test_extraction_strength_from_scoring_equals_its_definition(trained_model_dir, forget_data):
    """On a model fitted to the forget data (so that answers are partly reproduced), `reproduced / tokens` from
    batched, padded scoring equals `extraction_strength_of` on each example's own unpadded argmax predictions, for
    document examples and for the same examples with their first half masked as a prompt."""
    from transformers import AutoModelForCausalLM

    from hf_unlearn.evaluation.tofu import extraction_strength_of

    model = AutoModelForCausalLM.from_pretrained(trained_model_dir).eval()
    rows = [forget_data[i] for i in range(len(forget_data))]
    prompted = [
        dict(row, labels=[-100] * (len(row["labels"]) // 2) + list(row["labels"][len(row["labels"]) // 2 :]))
        for row in rows
    ]
    for data in (rows, prompted):
        expected = []
        for row in data:
            with torch.no_grad():
                predicted = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1].argmax(-1)
            expected.append(extraction_strength_of(predicted[None].numpy(), np.array([row["labels"][1:]]))[0])
        got = score_examples(model, data, pad_token_id=0, batch_size=3).extraction_strength.numpy()
        assert 0 < np.nanmean(expected) < 1  # partly reproduced: the comparison can tell positions apart
        # (n - k) / n against 1 - k / n: the same integer ratio up to the last float64 bits (a different k is >= 1/32)
        np.testing.assert_allclose(got, np.array(expected), rtol=0, atol=1e-12)


def test_token_score_path_matches_fast_path(tiny_model, forget_data):
    """The log-softmax path (Min-K% statistics) and the cross-entropy path give the same NLLs and hits."""
    batch = {k: torch.tensor([forget_data[i][k] for i in range(2)]) for k in ("input_ids", "labels")}
    with torch.no_grad():
        logits = tiny_model(input_ids=batch["input_ids"]).logits
    fast, full = token_statistics(logits, batch["labels"]), token_statistics(logits, batch["labels"], True)
    for a, b in zip(fast, full):
        assert a[0] == pytest.approx(b[0], rel=1e-5) and a[1:4] == b[1:4]


def test_scores_do_not_depend_on_batch_size(tiny_model, forget_data):
    """Padding and batch composition do not change per-example scores (float round-off only)."""
    one = score_examples(tiny_model, forget_data, batch_size=1)
    many = score_examples(tiny_model, forget_data, batch_size=5)
    torch.testing.assert_close(one.nll_sum, many.nll_sum, rtol=1e-5, atol=1e-5)
    assert torch.equal(one.tokens, many.tokens)


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
    ((nll, count, correct, _, logp, z),) = token_statistics(rows, labels, token_scores=True)
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
        assert a[0] == pytest.approx(b[0], rel=1e-5) and a[1:4] == b[1:4]
        for x, y in zip(a[4:], b[4:]):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


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
