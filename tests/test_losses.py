"""Golden values for the pure loss functions, derived by hand in each docstring."""

import math

import torch

from hf_unlearn.losses import adversarial_targets, count_targets, kl_sum, nll_sum, random_targets


def log_probs(*rows):
    """Logits whose softmax is exactly the given probability rows (log p)."""
    return torch.log(torch.tensor([rows], dtype=torch.float32))


def test_nll_sum_golden():
    """Vocab 3, sequence of 3 tokens, labels [x, 1, 2].

    Position 0 predicts labels[1] = 1 with p = [1/4, 1/2, 1/4] -> -ln(1/2) = ln 2.
    Position 1 predicts labels[2] = 2 with p = [1/3, 1/3, 1/3] -> ln 3.
    Position 2 predicts nothing (no label after it).
    Sum = ln 2 + ln 3 = ln 6 = 1.791759; count = 2.
    """
    logits = log_probs([0.25, 0.5, 0.25], [1 / 3, 1 / 3, 1 / 3], [0.9, 0.05, 0.05])
    total, count = nll_sum(logits, torch.tensor([[0, 1, 2]]))
    assert math.isclose(total.item(), math.log(6), rel_tol=1e-6)
    assert count.item() == 2


def test_nll_ignores_masked_labels():
    """Same as above with labels [x, 1, -100]: only ln 2 = 0.693147 remains, count 1."""
    logits = log_probs([0.25, 0.5, 0.25], [1 / 3, 1 / 3, 1 / 3], [0.9, 0.05, 0.05])
    labels = torch.tensor([[0, 1, -100]])
    total, count = nll_sum(logits, labels)
    assert math.isclose(total.item(), math.log(2), rel_tol=1e-6)
    assert count.item() == 1 == count_targets(labels).item()


def test_kl_sum_is_true_kl_and_masked():
    """KL(P_ref || P_theta) at the one valid position.

    P_ref = [1/2, 1/4, 1/4], P_theta = [1/3, 1/3, 1/3]:
    KL = 1/2 ln((1/2)/(1/3)) + 2 * 1/4 ln((1/4)/(1/3)) = 1/2 ln 1.5 + 1/2 ln 0.75 = 1/2 ln 1.125 = 0.0588915.
    Position 1's next label is -100 (padding): its very different distributions must not count.
    The cross-entropy -sum P_ref ln P_theta (what the official code logs) would be ln 3 = 1.0986 instead.
    """
    ref = log_probs([0.5, 0.25, 0.25], [0.98, 0.01, 0.01], [1 / 3] * 3)
    policy = log_probs([1 / 3] * 3, [0.01, 0.01, 0.98], [1 / 3] * 3)
    total, count = kl_sum(ref, policy, torch.tensor([[0, 1, -100]]))
    assert math.isclose(total.item(), 0.5 * math.log(1.125), rel_tol=1e-5)
    assert count.item() == 1


def test_kl_is_zero_for_identical_models():
    """KL(P || P) = 0 at every position."""
    logits = torch.randn(2, 5, 7)
    total, count = kl_sum(logits, logits.clone(), torch.ones(2, 5, dtype=torch.long))
    assert abs(total.item()) < 1e-5 and count.item() == 8


def test_adversarial_targets_follow_the_paper_formula():
    """a_t = argmax_{a != w_t} P_theta0(a | w_<t), read from the prediction made at position t - 1.

    Labels [0, 1, 0]. Reference logits: position 0 = [1, 3, 2], position 1 = [5, 1, 0], position 2 = [0, 0, 9].
    Target position 1 (w_1 = 1): position 0's logits without token 1 -> {0: 1, 2: 2} -> token 2.
    Target position 2 (w_2 = 0): position 1's logits without token 0 -> {1: 1, 2: 0} -> token 1.
    Position 0 is never a target: -100. Expected [-100, 2, 1].
    (The official code's off-by-one would read position t's logits: position 1 -> token 1, position 2 -> token 2.)
    """
    ref = torch.tensor([[[1.0, 3.0, 2.0], [5.0, 1.0, 0.0], [0.0, 0.0, 9.0]]])
    assert adversarial_targets(ref, torch.tensor([[0, 1, 0]])).tolist() == [[-100, 2, 1]]


def test_adversarial_targets_keep_padding_masked():
    """Labels [2, 1, -100]; reference position 0 = [0, 9, 1], where the true next token 1 is the most likely.

    Target position 1: without token 1 -> {0: 0, 2: 1} -> token 2 (never the true token, however likely).
    Target position 2 is padding (-100) and stays -100. Expected [-100, 2, -100].
    """
    ref = torch.tensor([[[0.0, 9.0, 1.0], [9.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    assert adversarial_targets(ref, torch.tensor([[2, 1, -100]])).tolist() == [[-100, 2, -100]]


def test_random_targets_are_seeded_and_masked():
    """Random targets: same seed -> same tokens; -100 positions and position 0 stay -100; values < vocab."""
    labels = torch.tensor([[5, 6, 7, -100, -100], [1, 2, 3, 4, 5]])
    a = random_targets(labels, 11, torch.Generator().manual_seed(3))
    b = random_targets(labels, 11, torch.Generator().manual_seed(3))
    c = random_targets(labels, 11, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a[:, 0] == -100).all() and (a[0, 3:] == -100).all()
    valid = a[a != -100]
    assert valid.numel() == 6 and valid.min() >= 0 and valid.max() < 11
