"""Robustness attacks (hf_unlearn.evaluation.attacks) on tiny random Llamas: RTN quantisation bounds, ordering of
8 vs 4 bits, the relearning attack, and that the model passed in is never modified."""

from __future__ import annotations

import os

import pytest
import torch

from hf_unlearn.evaluation import quantization_attack, quantize_weights, relearning_attack
from hf_unlearn.evaluation.attacks import quantize_tensor, relearn
from hf_unlearn.testing import build_llama

VOCAB = 64
FLOAT32_EPS = 2.0**-23


def examples(count: int, length: int = 12, seed: int = 0) -> list[dict]:
    """Random token sequences whose first 4 tokens are a masked prompt (-100) and the rest targets."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        ids = torch.randint(3, VOCAB, (length,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * 4 + ids[4:]})
    return rows


def mean_nll(model, rows) -> float:
    with torch.no_grad():
        ids = torch.tensor([r["input_ids"] for r in rows])
        labels = torch.tensor([r["labels"] for r in rows])
        return float(model(input_ids=ids, labels=labels).loss)


def logits(model, rows) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([r["input_ids"] for r in rows])).logits


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model, before) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


@pytest.mark.parametrize("bits", [8, 4, 3])
@pytest.mark.parametrize("in_features, group_size", [(256, 128), (100, 32), (7, 128)])
def test_rtn_error_is_at_most_half_a_step(bits, in_features, group_size):
    generator = torch.Generator().manual_seed(bits * 1000 + in_features)
    # Rows of very different magnitudes, so one scale per group matters.
    weight = torch.randn(16, in_features, generator=generator) * torch.logspace(-3, 1, 16)[:, None]
    quantised = quantize_tensor(weight, bits, group_size)
    q = 2 ** (bits - 1) - 1
    error = (quantised - weight).abs()
    for start in range(0, in_features, group_size):
        group = weight[:, start : start + group_size]
        scale = group.abs().amax(dim=1, keepdim=True) / q
        # s/2 from rounding, plus float32 rounding of w/s and s*k (a few ulps of the group's largest magnitude).
        bound = scale / 2 + 4 * FLOAT32_EPS * group.abs().amax(dim=1, keepdim=True)
        assert (error[:, start : start + group_size] <= bound).all()
        # Each group takes at most 2q+1 values, the multiples k*s with |k| <= q.
        steps = quantised[:, start : start + group_size] / scale
        assert torch.allclose(steps, steps.round(), atol=1e-4)
        assert steps.abs().max() <= q + 1e-4
    # The bound is nearly reached (random weights are not on the grid): the function really rounds.
    assert error.max() > 0


def test_zero_group_stays_zero_and_non_2d_is_rejected():
    weight = torch.zeros(2, 8)
    weight[1] = torch.arange(8.0)
    quantised = quantize_tensor(weight, 4, group_size=8)
    assert torch.equal(quantised[0], torch.zeros(8))
    assert torch.isfinite(quantised).all()
    with pytest.raises(ValueError, match="2-D"):
        quantize_tensor(torch.zeros(8), 4)


def test_quantize_weights_copies_by_default_and_skips_the_head():
    model = build_llama(VOCAB)
    before = state(model)
    quantised = quantize_weights(model, 4, group_size=32)
    assert_same_state(model, before)
    assert quantised is not model
    q_proj = quantised.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q_proj, model.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(quantised.lm_head.weight, model.lm_head.weight)
    assert torch.equal(quantised.model.embed_tokens.weight, model.model.embed_tokens.weight)
    in_place = quantize_weights(model, 4, group_size=32, inplace=True)
    assert in_place is model
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, q_proj)


def test_eight_bits_change_logits_less_than_four():
    model = build_llama(VOCAB)
    rows = examples(4)
    reference = logits(model, rows)
    change = {bits: (logits(quantize_weights(model, bits, 32), rows) - reference).abs().max().item() for bits in (8, 4)}
    assert 0 < change[8] < change[4]


def test_quantization_attack_reports_each_width_and_leaves_the_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = build_llama(VOCAB)
    rows = examples(4)
    before = state(model)
    result = quantization_attack(model, {"nll": lambda m: mean_nll(m, rows)}, group_size=32)
    assert_same_state(model, before)
    assert set(result) == {"before", "8bit", "4bit", "settings"}
    assert result["before"]["nll"] == pytest.approx(mean_nll(model, rows), rel=1e-6)
    assert abs(result["8bit"]["nll"] - result["before"]["nll"]) < abs(result["4bit"]["nll"] - result["before"]["nll"])
    assert os.listdir(tmp_path) == []


def test_relearning_lowers_nll_on_the_relearn_set_and_leaves_the_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = build_llama(VOCAB)
    rows = examples(8)
    half, held_out = rows[:4], rows[4:]
    before = state(model)
    result = relearning_attack(
        model,
        half,
        {"relearned": lambda m: mean_nll(m, half), "held_out": lambda m: mean_nll(m, held_out)},
        pad_token_id=0,
        steps=20,
        learning_rate=1e-2,
        batch_size=4,
    )
    assert_same_state(model, before)
    assert result["after"]["relearned"] < result["before"]["relearned"] - 0.5
    assert result["settings"]["steps"] == 20
    assert os.listdir(tmp_path) == []


def test_relearn_pads_uneven_examples_and_is_seeded():
    rows = examples(3, length=12) + examples(2, length=7, seed=1)
    first = relearn(build_llama(VOCAB), rows, pad_token_id=0, steps=3, learning_rate=1e-3, batch_size=2, seed=5)
    second = relearn(build_llama(VOCAB), rows, pad_token_id=0, steps=3, learning_rate=1e-3, batch_size=2, seed=5)
    assert_same_state(first, state(second))
    with pytest.raises(ValueError, match="empty"):
        relearn(build_llama(VOCAB), [], pad_token_id=0)


def test_relearning_trains_a_frozen_model_too():
    """A model used as a frozen reference (requires_grad False) must still be relearned: the attack fine-tunes
    every parameter of its copy (an optimizer over only trainable parameters would leave it unchanged)."""
    model = build_llama(VOCAB)
    model.requires_grad_(False)
    rows = examples(4)
    result = relearning_attack(
        model, rows, {"nll": lambda m: mean_nll(m, rows)}, pad_token_id=0, steps=10, learning_rate=1e-2, batch_size=4
    )
    assert result["after"]["nll"] < result["before"]["nll"] - 0.5
    assert not any(p.requires_grad for p in model.parameters())
