"""Pure tensor functions behind every unlearning loss.

All functions work on causal-LM logits of shape `[batch, seq, vocab]` and labels of shape `[batch, seq]`
in the *unshifted* Hugging Face convention: the prediction at position t (logits[:, t]) targets labels[:, t + 1],
and -100 marks positions that do not count. They return *sums* over valid target tokens together with the
number of those tokens, so that the trainer can divide by the token count of the whole (global, accumulated)
batch: that is what makes a loss independent of gradient accumulation and of the number of processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def shift_for_next_token(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align logits with the tokens they predict: drop the last prediction and the first label."""
    return logits[:, :-1, :], labels[:, 1:]


def count_targets(labels: torch.Tensor) -> torch.Tensor:
    """Number of positions that are next-token targets (labels[:, 1:] != -100)."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position negative log-likelihood of `labels` and the mask of valid targets.

    Returns `(nll, mask)`, both `[batch, seq - 1]`; `nll` is 0 where `mask` is False. Computed in float32.
    """
    logits, labels = shift_for_next_token(logits, labels)
    mask = labels != IGNORE_INDEX
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(labels.shape)
    return nll, mask


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """labels[:, t + 1] at position t and -100 at the last position: the labels are shifted, never the logits,
    so `logits.reshape(-1, V)` stays a view (slicing the logits would copy them, and their gradient, once more)."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of next-token negative log-likelihoods over valid targets, and their count."""
    targets = next_token_targets(labels)
    total = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total, (targets != IGNORE_INDEX).sum()


def substitute_nll_sums(
    logits: torch.Tensor, substitute_labels: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """NLL sum of substitute targets (random or adversarial; with gradient) and, for logging, of the true labels
    (detached), from one log-softmax. Returns (substitute_sum, substitute_count, true_sum, true_count)."""
    log_probs = F.log_softmax(logits.float(), dim=-1).reshape(-1, logits.size(-1))
    targets = next_token_targets(substitute_labels).reshape(-1)
    total = F.nll_loss(log_probs, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    with torch.no_grad():
        true = next_token_targets(labels).reshape(-1)
        valid = true != IGNORE_INDEX
        true_total = -log_probs.detach().gather(1, true.clamp(min=0).unsqueeze(1)).squeeze(1)[valid].sum()
    return total, (targets != IGNORE_INDEX).sum(), true_total, valid.sum()


def kl_sum(ref_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over valid positions of KL(P_ref || P_theta) over the vocabulary, and the count of positions.

    This is the true KL divergence sum_v p_ref(v) (log p_ref(v) - log p_theta(v)), not the cross-entropy to the
    reference (which has the same gradient but a different value). Positions whose next-token label is -100
    (padding, prompts) are excluded. KL = -H(P_ref) + CE(P_ref, P_theta): the reference parts need no gradient,
    and the cross-entropy with probability targets avoids copying the logits.
    """
    valid = next_token_targets(labels) != IGNORE_INDEX
    vocab = logits.size(-1)
    with torch.no_grad():
        ref_log_probs = F.log_softmax(ref_logits.float(), dim=-1)
        ref_probs = ref_log_probs.exp()
        neg_entropy = (ref_probs * ref_log_probs).sum(-1)
        del ref_log_probs
    cross = F.cross_entropy(logits.float().reshape(-1, vocab), ref_probs.reshape(-1, vocab), reduction="none")
    kl = ((neg_entropy + cross.view(valid.shape)) * valid).sum()
    return kl, valid.sum()


def adversarial_targets(ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Targets of "unlearning with adversarial samples" (Yao et al. 2024, method 3).

    For each target position t, a_t = argmax_{a != w_t} P_theta0(a | w_<t): the original model's most likely
    *wrong* token. P_theta0(. | w_<t) is read from ref_logits[:, t - 1] (the prediction made before seeing w_t),
    which is exactly the paper's formula (the official code is off by one here). The result is in the same
    unshifted convention as `labels`: position 0 and every position whose label is -100 are -100.
    """
    shifted_logits, targets = shift_for_next_token(ref_logits, labels)
    valid = targets != IGNORE_INDEX
    scores = shifted_logits.float().clone()
    scores.scatter_(-1, targets.clamp(min=0).unsqueeze(-1), float("-inf"))
    wrong = scores.argmax(dim=-1)
    out = torch.full_like(labels, IGNORE_INDEX)
    out[:, 1:] = torch.where(valid, wrong, torch.full_like(wrong, IGNORE_INDEX))
    return out


def random_targets(labels: torch.Tensor, vocab_size: int, generator: torch.Generator) -> torch.Tensor:
    """Uniformly random target tokens at every valid target position (method 2); -100 elsewhere."""
    random = torch.randint(0, vocab_size, labels.shape, generator=generator, dtype=labels.dtype)
    out = torch.where(labels != IGNORE_INDEX, random, torch.full_like(labels, IGNORE_INDEX))
    out[:, 0] = IGNORE_INDEX  # position 0 is never a target
    return out
