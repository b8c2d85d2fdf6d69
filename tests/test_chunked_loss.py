"""Chunked token-level losses: logits from the final hidden states, a chunk of positions at a time.

Reference values are the straightforward full-logits formulas, written out here independently of
`hf_unlearn.losses` (the pre-issue-13 code), on `[batch, seq, vocab]` logits.

Tolerances, from float32 arithmetic: both sides compute each position's term with the same float32 operations on
the same logits, up to (a) the order of the head's matmul reduction over the hidden dimension (d = 16 products: a
relative error of a few eps = 1.2e-7 per logit, which moves a log-softmax by about as much in absolute terms for
logits of size ~1), and (b) the order in which N <= 40 per-position terms are summed (at most N * eps relative to
the sum of their magnitudes, 5e-6). So sums are compared with a tolerance of 2e-5 of the sum of the terms'
magnitudes (plus 1e-6 absolute for sums near 0, e.g. a KL of identical models), and gradients with 1e-5 of the
gradient's largest entry (the same per-term errors, through one more linear map). A wrong position, a lost chunk
or a shifted target changes a sum by a whole term (~1-5 nats here), far above either tolerance.
"""

from __future__ import annotations

import copy
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_unlearn import get_method, run_plan
from hf_unlearn.forward import forward
from hf_unlearn.losses import (
    IGNORE_INDEX,
    TokenLogits,
    adversarial_targets,
    kl_sum,
    map_positions,
    nll_sum,
    sequence_nll,
    substitute_nll_sums,
    token_nll,
    undial_sums,
    weighted_ascent_sums,
)
from tests.conftest import unlearning_args

VOCAB, HIDDEN = 11, 16
CHUNKS = [1, 3, 7, 1000]  # smaller than a row (seq 9), not dividing the positions, and one chunk for all


# ---------------------------------------------------------------- independent full-logits references


def shifted(labels, mask):
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    real = mask.bool()
    return targets.masked_fill(~(real & F.pad(real[:, 1:], (0, 1), value=False)), IGNORE_INDEX)


def ref_token_nll(logits, labels, mask):
    targets = shifted(labels, mask)
    logp = logits.float().log_softmax(-1)
    nll = -logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    valid = targets != IGNORE_INDEX
    return torch.where(valid, nll, torch.zeros_like(nll)), valid


def ref_kl(ref_logits, logits, labels, mask):
    valid = shifted(labels, mask) != IGNORE_INDEX
    p_ref = ref_logits.float().softmax(-1)
    kl = (p_ref * (ref_logits.float().log_softmax(-1) - logits.float().log_softmax(-1))).sum(-1)
    return torch.where(valid, kl, torch.zeros_like(kl))


def ref_undial(ref_logits, logits, labels, mask, beta):
    targets = shifted(labels, mask)
    valid = targets != IGNORE_INDEX
    adjusted = ref_logits.float() - beta * F.one_hot(targets.clamp(min=0), VOCAB)
    cross = -(adjusted.softmax(-1) * logits.float().log_softmax(-1)).sum(-1)
    return torch.where(valid, cross, torch.zeros_like(cross))


def ref_adversarial(ref_logits, labels, mask):
    targets = shifted(labels, mask)
    scores = ref_logits.float().scatter(-1, targets.clamp(min=0)[..., None], float("-inf"))
    wrong = torch.where(targets != IGNORE_INDEX, scores.argmax(-1), torch.full_like(targets, IGNORE_INDEX))
    return F.pad(wrong[:, :-1], (1, 0), value=IGNORE_INDEX)


# ---------------------------------------------------------------- a tiny "model": hidden states + a head


def setup(seed=0, left_padding=False):
    """Hidden states [3, 9, HIDDEN], a linear head with soft-capping (as Gemma's), labels with a masked prompt and
    padding (rows of 9, 6 and 2 real tokens), and a reference model's hidden states and head."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 9, HIDDEN, generator=generator, requires_grad=True)
    weight = nn.Parameter(torch.randn(VOCAB, HIDDEN, generator=generator) / 2)
    ref_hidden = torch.randn(3, 9, HIDDEN, generator=generator)
    ref_weight = torch.randn(VOCAB, HIDDEN, generator=generator) / 2
    labels = torch.randint(0, VOCAB, (3, 9), generator=generator)
    mask = torch.ones(3, 9, dtype=torch.long)
    lengths = [9, 6, 2]
    for row, length in enumerate(lengths):
        if left_padding:
            mask[row, : 9 - length] = 0
        else:
            mask[row, length:] = 0
    labels = labels.masked_fill(mask == 0, IGNORE_INDEX)
    labels[0, :3] = IGNORE_INDEX  # a prompt

    return hidden, weight, SoftCappedHead(weight), ref_hidden, SoftCappedHead(ref_weight), labels, mask


class SoftCappedHead:
    """A linear head with Gemma-style soft-capping that exposes its parameters (as `hf_unlearn.forward.OutputHead`
    does, which `sum_positions` needs to compute gradients in the forward pass) and counts its calls."""

    def __init__(self, weight: torch.Tensor):
        self.weight, self.calls = weight, 0

    def parameters(self):
        return iter([self.weight])

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.tanh((h @ self.weight.T) / 3.0) * 3.0


def grads(total, hidden, weight):
    hidden.grad = weight.grad = None
    total.backward()
    return torch.cat([hidden.grad.reshape(-1), weight.grad.reshape(-1)])


def close(a, b, magnitude):
    a, b, magnitude = (float(torch.as_tensor(x).detach()) for x in (a, b, magnitude))
    return abs(a - b) <= 2e-5 * magnitude + 1e-6


def close_grads(a, b):
    scale = b.abs().max().item()
    assert scale > 0
    return (a - b).abs().max().item() <= 1e-5 * scale


# ---------------------------------------------------------------- every loss: chunked == full logits, value and grad


@pytest.mark.parametrize("in_forward", [False, True])
@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("left", [False, True])
def test_nll_losses_chunked_equal_full_logits(chunk, left, in_forward):
    """nll_sum, token_nll, sequence_nll from hidden states + head, chunked, against the full-logits formula; the sums
    with their gradient recomputed in backward or computed in the forward pass (`gradient_in_forward`)."""
    hidden, weight, head, _, _, labels, mask = setup(left_padding=left)
    expected, valid = ref_token_nll(head(hidden), labels, mask)
    expected_grad = grads(expected.sum(), hidden, weight)
    source = TokenLogits(hidden, head, gradient_in_forward=in_forward)

    total, count = nll_sum(source, labels, mask, chunk)
    assert count.item() == valid.sum().item() == 12
    assert close(total, expected.sum(), expected.abs().sum())
    assert close_grads(grads(total, hidden, weight), expected_grad)

    per_token, mask_out = token_nll(source, labels, mask, chunk)
    assert torch.equal(mask_out, valid)
    assert torch.allclose(per_token, expected.detach(), atol=2e-5)
    rows, counts = sequence_nll(source, labels, mask, chunk)
    assert torch.allclose(rows, expected.detach().sum(1), atol=2e-5) and counts.tolist() == valid.sum(1).tolist()


@pytest.mark.parametrize("in_forward", [False, True])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_kl_chunked_equals_full_logits(chunk, in_forward):
    """KL(P_ref || P_theta) with both models' logits chunked from their hidden states."""
    hidden, weight, head, ref_hidden, ref_head, labels, mask = setup(seed=1)
    expected = ref_kl(ref_head(ref_hidden), head(hidden), labels, mask)
    expected_grad = grads(expected.sum(), hidden, weight)
    policy = TokenLogits(hidden, head, gradient_in_forward=in_forward)
    total, count = kl_sum(TokenLogits(ref_hidden, ref_head), policy, labels, mask, chunk)
    assert count.item() == 12
    assert close(total, expected.sum(), expected.abs().sum()) and total.item() > 0.1
    assert close_grads(grads(total, hidden, weight), expected_grad)


@pytest.mark.parametrize("in_forward", [False, True])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_undial_chunked_equals_full_logits(chunk, in_forward):
    hidden, weight, head, ref_hidden, ref_head, labels, mask = setup(seed=2)
    policy_logits = head(hidden)
    expected = ref_undial(ref_head(ref_hidden), policy_logits, labels, mask, beta=2.0)
    true_nll, _ = ref_token_nll(policy_logits.detach(), labels, mask)
    expected_grad = grads(expected.sum(), hidden, weight)
    policy = TokenLogits(hidden, head, gradient_in_forward=in_forward)
    total, count, nll = undial_sums(TokenLogits(ref_hidden, ref_head), policy, labels, mask, 2.0, chunk)
    assert count.item() == 12
    assert close(total, expected.sum(), expected.abs().sum())
    assert close(nll, true_nll.sum(), true_nll.sum())
    assert close_grads(grads(total, hidden, weight), expected_grad)


@pytest.mark.parametrize("in_forward", [False, True])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_substitute_targets_chunked_equal_full_logits(chunk, in_forward):
    """Random substitute labels: the NLL of the substitute targets (with gradient) and of the true labels (logged)."""
    hidden, weight, head, _, _, labels, mask = setup(seed=3)
    substitute = torch.randint(0, VOCAB, labels.shape, generator=torch.Generator().manual_seed(9))
    substitute = substitute.masked_fill(labels == IGNORE_INDEX, IGNORE_INDEX)
    logits = head(hidden)
    expected, _ = ref_token_nll(logits, substitute, mask)
    true, _ = ref_token_nll(logits.detach(), labels, mask)
    expected_grad = grads(expected.sum(), hidden, weight)
    source = TokenLogits(hidden, head, gradient_in_forward=in_forward)
    total, count, true_total, true_count = substitute_nll_sums(source, substitute, labels, mask, chunk)
    assert count.item() == true_count.item() == 12
    assert close(total, expected.sum(), expected.abs().sum()) and close(true_total, true.sum(), true.sum())
    assert close_grads(grads(total, hidden, weight), expected_grad)


@pytest.mark.parametrize("in_forward", [False, True])
@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("betas", [(1.0, 0.0), (5.0, 1.0)])  # WGA, SatImp
def test_weighted_ascent_chunked_equals_full_logits(chunk, in_forward, betas):
    """-sum_t sg(p_t^b1 (1 - p_t)^b2) NLL_t (with gradient) and the plain NLL sum (logged), against the formula on
    full logits; the weight is detached, so the gradient is -sum_t w_t dNLL_t."""
    hidden, weight, head, _, _, labels, mask = setup(seed=6)
    nll, valid = ref_token_nll(head(hidden), labels, mask)
    with torch.no_grad():
        p = torch.exp(-nll)
        w = p.pow(betas[0]) * (1 - p).pow(betas[1])
    expected = torch.where(valid, -(w * nll), torch.zeros_like(nll))
    expected_grad = grads(expected.sum(), hidden, weight)
    source = TokenLogits(hidden, head, gradient_in_forward=in_forward)
    total, count, nll_total = weighted_ascent_sums(source, labels, mask, *betas, chunk_size=chunk)
    assert count.item() == 12
    assert close(total, expected.sum(), expected.abs().sum()) and close(nll_total, nll.sum(), nll.sum())
    assert close_grads(grads(total, hidden, weight), expected_grad)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_adversarial_targets_chunked_equal_full_logits(chunk):
    _, _, _, ref_hidden, ref_head, labels, mask = setup(seed=4)
    expected = ref_adversarial(ref_head(ref_hidden), labels, mask)
    assert torch.equal(adversarial_targets(TokenLogits(ref_hidden, ref_head), labels, mask, chunk), expected)


def test_left_and_right_padding_agree_when_chunked():
    """The same rows padded on either side give the same chunked sums (the targets are the same positions)."""
    hidden_r, _, head, _, _, labels_r, mask_r = setup(seed=5)
    # Move each row's real tokens to the right end: the left-padded twin of the right-padded batch.
    hidden_l, labels_l, mask_l = (
        torch.zeros_like(hidden_r),
        torch.full_like(labels_r, IGNORE_INDEX),
        torch.zeros_like(mask_r),
    )
    for row in range(3):
        n = int(mask_r[row].sum())
        hidden_l[row, 9 - n :] = hidden_r[row, :n].detach()
        labels_l[row, 9 - n :] = labels_r[row, :n]
        mask_l[row, 9 - n :] = 1
    a, _ = nll_sum(TokenLogits(hidden_r, head), labels_r, mask_r, 4)
    b, _ = nll_sum(TokenLogits(hidden_l, head), labels_l, mask_l, 4)
    assert close(a, b, a.abs())


def test_no_target_still_backpropagates():
    """A micro-batch without a single target gives sums of 0 that are still part of the graph (backward runs)."""
    hidden, weight, head, _, _, labels, mask = setup()
    total, count = nll_sum(TokenLogits(hidden, head), torch.full_like(labels, IGNORE_INDEX), mask, 4)
    assert total.item() == 0 and count.item() == 0
    total.backward()
    assert weight.grad is not None and weight.grad.abs().sum().item() == 0


def test_chunking_never_keeps_more_than_one_chunk_of_logits():
    """What autograd keeps for backward: with chunks of 2 positions no saved tensor has more than 2 x vocab
    elements from the loss (the largest saved tensor is the hidden states themselves); without chunking
    (chunk_size 0) the [positions, vocab] log-softmax is kept, so the test can fail."""
    hidden, _, head, _, _, labels, mask = setup()

    def largest_saved_with_vocab(chunk):
        sizes = []

        def pack(tensor):
            if tensor.dim() >= 1 and tensor.shape[-1] == VOCAB:
                sizes.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            nll_sum(TokenLogits(hidden, head), labels, mask, chunk)
        return max(sizes, default=0)

    assert largest_saved_with_vocab(0) >= 12 * VOCAB
    assert largest_saved_with_vocab(2) == 0  # inside a checkpoint nothing of vocabulary size is saved


@pytest.mark.parametrize("in_forward", [False, True])
def test_gradient_in_forward_runs_the_head_once_per_chunk(in_forward):
    """The point of `gradient_in_forward`: with chunks of 5 over 12 targets (3 chunks) the head runs 3 times
    (forward only; backward scales the stored gradients) instead of 6 (backward recomputes every chunk), and still
    nothing of vocabulary size stays alive for backward (tensors saved by a chunk's own graph die with it).
    Fails if the forward-pass gradient is silently not used."""
    hidden, weight, head, _, _, labels, mask = setup()
    saved = []

    def pack(tensor):
        if tensor.dim() >= 1 and tensor.shape[-1] == VOCAB:
            saved.append(weakref.ref(tensor))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        total, _ = nll_sum(TokenLogits(hidden, head, gradient_in_forward=in_forward), labels, mask, 5)
    alive = [ref for ref in saved if ref() is not None]
    total.backward()
    assert head.calls == (3 if in_forward else 6) and not alive
    assert weight.grad.abs().sum() > 0 and hidden.grad.abs().sum() > 0


def test_gradient_in_forward_refuses_a_second_backward():
    """The forward-pass gradient is handed to autograd (scaled in place) by the first backward; a second backward
    through the same graph (retain_graph=True) would get nothing, so it fails and names the setting to turn off."""
    hidden, _, head, _, _, labels, mask = setup()
    total, _ = nll_sum(TokenLogits(hidden, head, gradient_in_forward=True), labels, mask, 5)
    total.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="loss_gradient_in_forward=False"):
        total.backward()


def test_gradient_in_forward_on_a_tied_model_matches_full_logits():
    """A real (tiny, tied-embedding) Llama: GA's NLL sum with the gradient computed in the forward pass gives every
    parameter the gradient of the full-logits loss, including the tied embedding, which gets one part from the LM
    head (returned by the custom backward) and one from the input side. Tolerance: 1e-5 of each gradient's largest
    entry (float32 reduction order, as for the module-level tolerances; the head's matmul sums over hidden 32)."""
    from hf_unlearn.testing import build_llama

    model = build_llama(VOCAB, hidden_size=32, layers=1, heads=2, seed=0)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, 10), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    batch = {"input_ids": ids, "attention_mask": mask}

    def gradients(full):
        model.zero_grad()
        output = forward(model, batch, full_logits=full)
        logits = output.token_logits
        if not full:
            logits = TokenLogits(logits.states, logits.head, gradient_in_forward=True)
        total, _ = nll_sum(logits, ids, mask, 0 if full else 3)
        total.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    expected, fused = gradients(True), gradients(False)
    assert expected.keys() == fused.keys()
    for name, grad in expected.items():
        scale = grad.abs().max().item()
        assert (fused[name] - grad).abs().max().item() <= 1e-5 * scale + 1e-12, name


def test_map_positions_keeps_index_order():
    """The chunk mapper returns the kernel's values in the order of `index`, across chunk boundaries."""
    states = torch.arange(12.0).reshape(2, 3, 2)
    index = torch.tensor([5, 0, 3, 4, 1])
    (values,) = map_positions(lambda rows: (rows[:, 0],), [TokenLogits(states)], index, (), chunk_size=2)
    assert values.tolist() == [10.0, 0.0, 6.0, 8.0, 2.0]


# ---------------------------------------------------------------- the forward route on real model classes


def test_llama_forward_gives_hidden_states_and_head_not_logits(tiny_model):
    """forward(full_logits=False) on a Llama: no [batch, seq, vocab] logits, and head(hidden) equals the model's
    logits at every position (not only at the last one, which the route itself checks)."""
    ids = torch.randint(3, 300, (2, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    full = forward(tiny_model, batch).logits
    output = forward(tiny_model, batch, full_logits=False)
    assert output.logits is None and output.token_logits.head is not None
    assert output.token_logits.states.shape == (2, 7, 32)
    rows = output.token_logits.rows(torch.arange(14))
    assert torch.allclose(rows.view(2, 7, -1), full, atol=1e-5)


def test_softcapped_gemma_head_reproduces_its_logits():
    """Gemma 2 soft-caps its logits (tanh(z / c) * c) after the LM head: the route's head does the same."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        final_logit_softcapping=0.5,
    )
    model = Gemma2ForCausalLM(config).eval()
    batch = {"input_ids": torch.randint(0, 64, (2, 5)), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    full = forward(model, batch).logits
    assert full.abs().max() <= 0.5  # the soft-cap is active
    output = forward(model, batch, full_logits=False)
    assert output.logits is None and output.token_logits.head.steps
    assert torch.allclose(output.token_logits.rows(torch.arange(10)).view(2, 5, -1), full, atol=1e-5)


def test_a_model_whose_logits_differ_from_its_head_gets_full_logits(tiny_model, caplog):
    """A forward that changes its logits in a way the route does not know (here: x 2) is detected at the last
    position and served full logits, so the losses stay exact."""
    from hf_unlearn import forward as forward_module

    class Doubled(type(tiny_model)):
        def forward(self, *args, logits_to_keep=0, **kwargs):
            output = super().forward(*args, logits_to_keep=logits_to_keep, **kwargs)
            output.logits = output.logits * 2
            return output

    model = Doubled(tiny_model.config)
    model.load_state_dict(tiny_model.state_dict())
    batch = {"input_ids": torch.randint(3, 300, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    try:
        output = forward(model, batch, full_logits=False)
        assert output.logits is not None and output.logits.shape == (2, 6, 300)
        assert torch.allclose(output.logits, 2 * forward(tiny_model, batch).logits, atol=1e-5)
        assert "did not reproduce its logits" in caplog.text
    finally:
        forward_module._MISMATCHED.discard(Doubled)


# ---------------------------------------------------------------- every method: chunked == full logits, loss and grad

METHODS = ["ga", "random_label", "adversarial", "ga_descent", "ga_kl", "npo", "simnpo", "wga", "satimp", "undial"]


def method_step(method, model_dir, tokenizer, forget, retain, tmp_path, chunk, in_forward=True):
    cls = get_method(method)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    kwargs = {"retain_dataset": retain} if run_plan(None, cls).uses_retain_data else {}
    args = unlearning_args(
        method, tmp_path / f"chunk{chunk}{in_forward}", loss_chunk_size=chunk, loss_gradient_in_forward=in_forward
    )
    trainer = cls(model=model, args=args, train_dataset=forget, processing_class=copy.deepcopy(tokenizer), **kwargs)
    assert trainer.gradient_in_forward() == in_forward  # a single process: the setting decides
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    model.train()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    magnitude = sum(abs(total / count) for total, count in trainer._term_stats.tolist() if count)
    terms = trainer._term_stats.clone()
    return loss.item(), grad, magnitude, terms


@pytest.mark.parametrize("in_forward", [True, False])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_chunked_equals_full_logits(
    method, in_forward, trained_model_dir, tokenizer, forget_data, retain_data, tmp_path
):
    """One compute_loss + backward of every method with full logits (loss_chunk_size 0) and with chunks of 5
    positions (smaller than a 32-token row, not dividing the positions), the summed terms' gradients computed in
    the forward pass or recomputed in backward: same loss (1e-6 of the summed term magnitudes, as in test_core's
    padding test), same logged terms, same gradient (1e-5 of its largest entry), and the precomputed targets /
    reference log-probabilities (adversarial, npo) agree too since they enter the loss."""
    full_loss, full_grad, magnitude, full_terms = method_step(
        method, trained_model_dir, tokenizer, forget_data, retain_data, tmp_path, 0
    )
    loss, grad, _, terms = method_step(
        method, trained_model_dir, tokenizer, forget_data, retain_data, tmp_path, 5, in_forward
    )
    assert abs(loss - full_loss) <= 1e-6 * magnitude + 1e-7
    assert torch.allclose(terms, full_terms, rtol=1e-5, atol=1e-6)
    assert close_grads(grad, full_grad)


def test_evaluation_scores_from_hidden_states_equal_full_logits(tiny_model):
    """token_statistics on final hidden states + head (what score_examples now passes) equals it on full logits:
    NLL sums, target counts, top-1 hits, reproduced final runs, per-token log-probabilities and Min-K%++ scores."""
    from hf_unlearn.evaluation.scores import token_statistics

    ids = torch.randint(3, 300, (3, 8), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    labels[0, :3] = IGNORE_INDEX
    batch = {"input_ids": ids, "attention_mask": mask}
    with torch.no_grad():
        full = token_statistics(forward(tiny_model, batch).logits, labels, token_scores=True)
        chunked = token_statistics(
            forward(tiny_model, batch, full_logits=False).token_logits, labels, token_scores=True
        )
    assert [row[1] for row in chunked] == [row[1] for row in full] == [5, 7, 4]
    for a, b in zip(chunked, full):
        assert abs(a[0] - b[0]) <= 1e-5 * abs(b[0]) and a[2:4] == b[2:4]
        assert torch.allclose(a[4], b[4], atol=1e-5) and torch.allclose(a[5], b[5], atol=1e-4)


# ---------------------------------------------------------------- backward per objective (ga_descent / ga_kl memory)


@pytest.mark.parametrize("method", ["ga_descent", "ga_kl"])
def test_backward_per_objective_gives_the_same_update(
    method, trained_model_dir, tokenizer, forget_data, retain_data, tmp_path, monkeypatch
):
    """Two optimizer steps (2 micro-batches each, SGD) with the forget term's backward run before the retain forward
    pass, and with one backward per micro-batch: the same logged losses and the same weights afterwards (float32
    summation order of two gradient contributions: 1e-6 relative), and the first really ran 2 backward passes per
    micro-batch (else this test would compare a configuration with itself)."""
    from transformers import AutoModelForCausalLM

    results = []
    for early in (True, False):
        model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
        args = unlearning_args(
            method,
            tmp_path / str(early),
            max_steps=2,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
            optim="sgd",
            learning_rate=0.1,
            max_grad_norm=0.0,
            backward_per_objective=early,
        )
        cls = get_method(method)
        trainer = cls(
            model=model, args=args, train_dataset=forget_data, retain_dataset=retain_data, processing_class=tokenizer
        )
        calls = []
        original = trainer.accelerator.backward
        monkeypatch.setattr(trainer.accelerator, "backward", lambda loss, **kw: (calls.append(1), original(loss, **kw)))
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        results.append((losses, weights, len(calls)))
    (early_losses, early_weights, early_calls), (losses, weights, calls) = results
    assert early_calls == 8 and calls == 4
    assert early_losses == pytest.approx(losses, rel=1e-6)
    moved = (
        (
            weights
            - torch.cat(
                [p.detach().reshape(-1) for p in AutoModelForCausalLM.from_pretrained(trained_model_dir).parameters()]
            )
        )
        .abs()
        .max()
    )
    assert moved > 1e-4
    assert (early_weights - weights).abs().max() <= 1e-6 * weights.abs().max() + 1e-6 * moved


def test_scoring_reuses_one_head_buffer_and_matches_full_logits(tiny_model):
    """With more target positions than one head block (2 x 300 > 256), scoring writes every block after the first
    into the first block's logits (`OutputHead.into`: a plain, hook-free nn.Linear head, no gradients) and gets the
    statistics of the full logits. A forward hook on the head (as ZeRO-3 / PEFT add) makes `into` call the module
    instead, so the hook sees every block."""
    from hf_unlearn.evaluation import scores
    from hf_unlearn.evaluation.scores import token_statistics

    ids = torch.randint(3, 300, (2, 301), generator=torch.Generator().manual_seed(2))
    labels = ids.clone()
    labels[1, :40] = IGNORE_INDEX
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    head_module = tiny_model.get_output_embeddings()
    written = []
    original_into = type(forward(tiny_model, batch, full_logits=False).token_logits.head).into

    def spy(self, hidden, out):
        result = original_into(self, hidden, out)
        written.append(result.data_ptr() == out.data_ptr())
        return result

    with torch.no_grad():
        full = token_statistics(forward(tiny_model, batch).logits, labels, token_scores=True)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(type(forward(tiny_model, batch, full_logits=False).token_logits.head), "into", spy)
            patch.setattr(scores, "_chunk_rows", lambda vocab, device: 64)  # this vocabulary would fit one block
            chunked = token_statistics(forward(tiny_model, batch, full_logits=False).token_logits, labels, True)
            assert written == [True, True]  # 560 targets: blocks of 256, 256, 48; the last two reuse the first's
            calls = []
            handle = head_module.register_forward_hook(lambda *args: calls.append(1))
            try:
                hooked = token_statistics(forward(tiny_model, batch, full_logits=False).token_logits, labels, True)
            finally:
                handle.remove()
    # The model's own last-position logits, the route check (`_matches`) on them, then the 3 blocks.
    assert written[2:] == [False, False] and len(calls) == 2 + 3
    for result in (chunked, hooked):
        for a, b in zip(result, full, strict=True):
            assert abs(a[0] - b[0]) <= 1e-5 * abs(b[0]) and a[1:4] == b[1:4]
            assert torch.allclose(a[4], b[4], atol=1e-5) and torch.allclose(a[5], b[5], atol=1e-4)


def test_non_finite_logits_do_not_switch_the_route_off(tiny_model):
    """A diverged model (NaN weights) gives NaN logits on both sides of the route's check: that is a match, not a
    reason to fall back to full logits for the model class (found by test_callbacks' blow-up test)."""
    from hf_unlearn import forward as forward_module

    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.fill_(float("nan"))
    batch = {"input_ids": torch.randint(3, 300, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    output = forward(model, batch, full_logits=False)
    assert output.logits is None and type(model) not in forward_module._MISMATCHED
    assert forward(tiny_model, batch, full_logits=False).logits is None
