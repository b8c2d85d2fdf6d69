"""Pure tensor functions behind every unlearning loss.

All functions work on causal-LM logits of shape `[batch, seq, vocab]` and labels of shape `[batch, seq]` in the
*unshifted* Hugging Face convention: the prediction at position t (logits[:, t]) targets labels[:, t + 1], and
-100 marks positions that do not count. They return *sums* over valid targets together with the number of those
targets, so that the trainer can divide by the count of the whole (global, accumulated) batch: that is what makes
a loss independent of gradient accumulation and of the number of processes.

Padding: a target counts only when both the predicting position and the predicted position are real tokens
(`attention_mask` 1). With left padding the pad right before a row's first token would otherwise be scored
against that token; with this rule left and right padding give the same targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def next_token_targets(labels: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The target of position t, labels[:, t + 1], or -100 where it does not count; -100 at the last position.

    A target counts when its label is not -100 and, given `attention_mask`, both position t and t + 1 are real
    tokens. The labels are shifted, never the logits, so `logits.reshape(-1, V)` stays a view.
    """
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    if attention_mask is not None:
        real = attention_mask.bool()
        valid = real & F.pad(real[:, 1:], (0, 1), value=False)
        targets = targets.masked_fill(~valid, IGNORE_INDEX)
    return targets


def count_targets(labels: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Number of next-token targets (see `next_token_targets`)."""
    return (next_token_targets(labels, attention_mask) != IGNORE_INDEX).sum()


def count_sequences(labels: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Number of rows with at least one next-token target (the normaliser of per-sequence terms)."""
    return (next_token_targets(labels, attention_mask) != IGNORE_INDEX).any(dim=1).sum()


def count_positions(labels: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Number of real positions that carry a label (labels != -100): the positions representation losses use."""
    positions = labels != IGNORE_INDEX
    if attention_mask is not None:
        positions &= attention_mask.bool()
    return positions.sum()


def nll_sum(
    logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of next-token negative log-likelihoods over valid targets (float32), and their count."""
    targets = next_token_targets(labels, attention_mask)
    total = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total, (targets != IGNORE_INDEX).sum()


def substitute_nll_sums(
    logits: torch.Tensor,
    substitute_labels: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """NLL sum of substitute targets (random or adversarial; with gradient) and, for logging, of the true labels
    (detached), from one log-softmax. Returns (substitute_sum, substitute_count, true_sum, true_count)."""
    log_probs = F.log_softmax(logits.float(), dim=-1).reshape(-1, logits.size(-1))
    targets = next_token_targets(substitute_labels, attention_mask).reshape(-1)
    total = F.nll_loss(log_probs, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    with torch.no_grad():
        true = next_token_targets(labels, attention_mask).reshape(-1)
        valid = true != IGNORE_INDEX
        true_total = -log_probs.detach().gather(1, true.clamp(min=0).unsqueeze(1)).squeeze(1)[valid].sum()
    return total, (targets != IGNORE_INDEX).sum(), true_total, valid.sum()


def kl_sum(
    ref_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over valid positions of KL(P_ref || P_theta) over the vocabulary, and the count of positions.

    This is the true KL divergence sum_v p_ref(v) (log p_ref(v) - log p_theta(v)), not the cross-entropy to the
    reference (which has the same gradient but a different value). Positions whose next-token target does not count
    (padding, prompts) are excluded. KL = -H(P_ref) + CE(P_ref, P_theta): the reference parts need no gradient, and
    the cross-entropy with probability targets avoids copying the logits. Excluded positions are selected away
    (`torch.where`), never multiplied by 0, so a non-finite value at a padding position cannot leak into the sum.
    """
    valid = next_token_targets(labels, attention_mask) != IGNORE_INDEX
    vocab = logits.size(-1)
    with torch.no_grad():
        ref_log_probs = F.log_softmax(ref_logits.float(), dim=-1)
        ref_probs = ref_log_probs.exp()
        neg_entropy = (ref_probs * ref_log_probs).sum(-1)
        del ref_log_probs
    cross = F.cross_entropy(logits.float().reshape(-1, vocab), ref_probs.reshape(-1, vocab), reduction="none")
    per_position = neg_entropy + cross.view(valid.shape)
    kl = torch.where(valid, per_position, torch.zeros_like(per_position)).sum()
    return kl, valid.sum()


def adversarial_targets(
    ref_logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Targets of "unlearning with adversarial samples" (Yao et al. 2024, method 3).

    For each target position t, a_t = argmax_{a != w_t} P_theta0(a | w_<t): the original model's most likely
    *wrong* token. P_theta0(. | w_<t) is read from ref_logits[:, t - 1] (the prediction made before seeing w_t),
    which is exactly the paper's formula (the official code is off by one here). The result is in the same
    unshifted convention as `labels`: -100 wherever `labels` has no valid target (position 0, -100, padding).
    """
    targets = next_token_targets(labels, attention_mask)  # targets[:, t - 1] = w_t
    valid = targets != IGNORE_INDEX
    scores = ref_logits.float().clone()
    scores.scatter_(-1, targets.clamp(min=0).unsqueeze(-1), float("-inf"))
    wrong = torch.where(valid, scores.argmax(dim=-1), torch.full_like(targets, IGNORE_INDEX))
    return F.pad(wrong[:, :-1], (1, 0), value=IGNORE_INDEX)


def random_targets(
    labels: torch.Tensor, vocab_size: int, generator: torch.Generator, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Uniformly random target tokens at every valid target position (method 2); -100 elsewhere."""
    valid = F.pad(next_token_targets(labels, attention_mask)[:, :-1] != IGNORE_INDEX, (1, 0), value=False)
    random = torch.randint(0, vocab_size, labels.shape, generator=generator, dtype=labels.dtype)
    return torch.where(valid, random, torch.full_like(labels, IGNORE_INDEX))


def token_nll(logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position next-token NLL `[batch, seq]` (float32, 0 where there is no target) and the target mask."""
    targets = next_token_targets(labels, attention_mask)
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(targets.shape)
    return nll, targets != IGNORE_INDEX


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sums of next-token NLL over valid targets, `[batch]`, and per-row target counts, `[batch]`."""
    nll, valid = token_nll(logits, labels, attention_mask)
    return nll.sum(dim=1), valid.sum(dim=1)


def npo_sum(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float, rows: torch.Tensor) -> torch.Tensor:
    """Sum over the `rows` (bool `[batch]`) of NPO's per-sequence loss (Zhang et al. 2024):

        -(2 / beta) * log sigmoid(-beta * (log p_theta(s) - log p_ref(s)))

    `logp` and `ref_logp` are summed target log-probabilities of each sequence.
    """
    per_row = -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp))
    return torch.where(rows, per_row, torch.zeros_like(per_row)).sum()


def simnpo_sum(nll: torch.Tensor, counts: torch.Tensor, beta: float, delta: float) -> torch.Tensor:
    """Sum over rows with targets of SimNPO's per-sequence loss (Fan et al. 2024), open-unlearning's form:

        -(2 / beta) * log sigmoid(beta * (NLL(s) / |s| - delta))

    (the paper's margin gamma is beta * delta). `nll` are per-row NLL sums, `counts` per-row target counts.
    """
    rows = counts > 0
    mean = nll / counts.clamp(min=1)
    per_row = -(2.0 / beta) * F.logsigmoid(beta * (mean - delta))
    return torch.where(rows, per_row, torch.zeros_like(per_row)).sum()


def dpo_sum(logp_chosen, ref_chosen, logp_rejected, ref_rejected, beta: float, rows: torch.Tensor) -> torch.Tensor:
    """Sum over `rows` of DPO's per-pair loss: -(2 / beta) * log sigmoid(beta * (chosen log-ratio - rejected log-ratio))
    (open-unlearning's 2 / beta scaling, which makes beta -> 0 a difference of log-ratios)."""
    margin = (logp_chosen - ref_chosen) - (logp_rejected - ref_rejected)
    per_row = -(2.0 / beta) * F.logsigmoid(beta * margin)
    return torch.where(rows, per_row, torch.zeros_like(per_row)).sum()


def weighted_ascent_sum(nll: torch.Tensor, valid: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """Token-weighted gradient ascent from per-position NLLs and their target mask (`token_nll`):
    -sum_t sg(p_t^beta1 * (1 - p_t)^beta2) * NLL_t over valid targets, with p_t = exp(-NLL_t) the model's
    probability of the true token (a detached weight). beta2 = 0 is WGA (Wang et al. 2025), beta1 = 5, beta2 = 1 is
    SatImp (Yang et al. 2025)."""
    with torch.no_grad():
        p = torch.exp(-nll)
        weight = p.pow(beta1) * (1.0 - p).pow(beta2)
    per_token = -(weight * nll)
    return torch.where(valid, per_token, torch.zeros_like(per_token)).sum()


def undial_sums(
    ref_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """UNDIAL (Dong et al. 2024): cross-entropy from the policy to softmax(z_ref - beta * onehot(y)) at every valid
    target position (the reference's logits with the true token pushed down by beta), summed; the count; and, for
    logging, the true-label NLL sum (detached), from the same log-softmax. Positions without a target (prompt,
    padding) are excluded, not fed with a -100 label."""
    targets = next_token_targets(labels, attention_mask)
    valid = targets != IGNORE_INDEX
    with torch.no_grad():
        adjusted = ref_logits.float().clone()
        adjusted.scatter_add_(-1, targets.clamp(min=0).unsqueeze(-1), torch.full_like(adjusted[..., :1], -beta))
        soft = F.softmax(adjusted, dim=-1)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    cross = -(soft * log_probs).sum(-1)
    total = torch.where(valid, cross, torch.zeros_like(cross)).sum()
    with torch.no_grad():
        true = -log_probs.detach().gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        true_total = torch.where(valid, true, torch.zeros_like(true)).sum()
    return total, valid.sum(), true_total


def activation_mse_sum(hidden: torch.Tensor, target: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over the selected `positions` (bool `[batch, seq]`) of the mean over the hidden dimension of the squared
    difference between `hidden` `[batch, seq, d]` and `target` (broadcastable), and the number of positions (RMU)."""
    per_position = (hidden.float() - target.float()).pow(2).mean(dim=-1)
    return torch.where(positions, per_position, torch.zeros_like(per_position)).sum(), positions.sum()
