"""Pure tensor functions behind every unlearning loss.

All functions work on causal-LM logits of shape `[batch, seq, vocab]` and labels of shape `[batch, seq]` in the
*unshifted* Hugging Face convention: the prediction at position t (logits[:, t]) targets labels[:, t + 1], and
-100 marks positions that do not count. They return *sums* over valid targets together with the number of those
targets, so that the trainer can divide by the count of the whole (global, accumulated) batch: that is what makes
a loss independent of gradient accumulation and of the number of processes.

Padding: a target counts only when both the predicting position and the predicted position are real tokens
(`attention_mask` 1). With left padding the pad right before a row's first token would otherwise be scored
against that token; with this rule left and right padding give the same targets.

Logits that are never materialised. Every token-level loss here is a sum of per-position terms, each a
function of one position's logits (and the reference's logits at that position). So every loss is written once,
as a *per-position kernel* on `[N, vocab]` logits, and `map_positions` applies it to the positions that have a
target, `chunk_size` positions at a time. The logits may be given as

- a `[batch, seq, vocab]` tensor (full logits), or
- a `TokenLogits(states, head)`: the final hidden states `[batch, seq, hidden]` (after the final norm) and the
  model's output head (`[n, hidden] -> [n, vocab]`, the LM head with any logit soft-capping or scaling); then
  only one chunk's logits exist at a time.

With `chunk_size > 0` and gradients enabled each chunk runs under `torch.utils.checkpoint` (non-reentrant): the
forward pass keeps only the chunk's inputs (a view of the hidden states), and backward recomputes the chunk's
logits, so the peak memory of a loss is one chunk's `[chunk, vocab]` float32 temporaries whatever the sequence
length. `chunk_size = 0` computes all selected positions at once and keeps their logits for backward (the
pre-issue-13 behaviour). Prompt and padding positions are never computed. Losses that are plain sums over
positions go through `sum_positions`, which (where the trainer allows it: `TokenLogits.gradient_in_forward`)
computes each chunk's gradient in the forward pass instead of recomputing its logits in backward. Results equal
the full-logits computation up to float32 summation order (tests/test_chunked_loss.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100

Head = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TokenLogits:
    """The logits of every position of a batch, possibly not materialised.

    Attributes:
        states: `[batch, seq, vocab]` logits when `head` is None, else the final hidden states `[batch, seq, hidden]`.
        head: maps hidden states `[n, hidden]` to logits `[n, vocab]` exactly as the model's forward does (its
            output embedding as a module, so ZeRO-3 / PEFT hooks run, then any soft-capping or scaling); None when
            `states` are the logits.
        gradient_in_forward: whether summed losses (`sum_positions`) may compute each chunk's gradient with
            respect to `states` and the head's parameters during the forward pass instead of recomputing the
            chunk's logits in backward. Only where autograd alone handles the gradients (one process or DDP, no
            DeepSpeed / FSDP: the trainer decides, `UnlearningConfig.loss_gradient_in_forward`); the head must
            expose `parameters()`.
    """

    states: torch.Tensor
    head: Head | None = None
    gradient_in_forward: bool = False

    @property
    def shape(self) -> torch.Size:
        """`[batch, seq]`."""
        return self.states.shape[:2]

    def rows(self, index: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Logits `[len(index), vocab]` of the flat positions `index` (row-major over `[batch, seq]`), written into
        `out` where the head can (`hf_unlearn.forward.OutputHead.into`; the returned tensor is the logits)."""
        flat = self.states.reshape(-1, self.states.size(-1))
        rows = flat.index_select(0, index)
        if self.head is None:
            return rows
        return self.head.into(rows, out) if out is not None and hasattr(self.head, "into") else self.head(rows)


def as_token_logits(logits: torch.Tensor | TokenLogits) -> TokenLogits:
    """`logits` as a `TokenLogits` (full logits are wrapped, with no head)."""
    return logits if isinstance(logits, TokenLogits) else TokenLogits(logits)


def map_positions(
    kernel: Callable[..., tuple[torch.Tensor, ...]],
    sources: Sequence[TokenLogits],
    index: torch.Tensor,
    columns: Sequence[torch.Tensor] = (),
    chunk_size: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Apply a per-position `kernel(logits_0, ..., logits_k, *column_chunks) -> (values [n], ...)` to the flat
    positions `index`, `chunk_size` at a time (0: all at once), and concatenate its outputs in `index` order.

    `sources` give the logits (one `[n, vocab]` tensor each: e.g. the policy's, the reference's); `columns` are
    per-selected-position tensors (`[len(index), ...]`, e.g. targets) cut into the same chunks. With gradients
    enabled and `chunk_size > 0`, each chunk is a non-reentrant checkpoint: its logits are freed after the forward
    pass and recomputed by backward. With no position selected the kernel still runs once on an empty chunk, so
    the results stay attached to the graph.
    """
    total = index.numel()
    step = total if chunk_size <= 0 else chunk_size
    recompute = chunk_size > 0 and torch.is_grad_enabled()

    def run(chunk_index: torch.Tensor, *chunk_columns: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(kernel(*(source.rows(chunk_index) for source in sources), *chunk_columns))

    pieces: list[tuple[torch.Tensor, ...]] = []
    for start in range(0, max(total, 1), max(step, 1)):
        end = min(start + step, total)
        arguments = (index[start:end], *(column[start:end] for column in columns))
        if recompute and total > 0:
            pieces.append(checkpoint(run, *arguments, use_reentrant=False))
        else:
            pieces.append(run(*arguments))
    if len(pieces) == 1:
        return pieces[0]
    return tuple(torch.cat(parts) for parts in zip(*pieces))


def sum_positions(
    kernel: Callable[..., tuple[torch.Tensor, ...]],
    sources: Sequence[TokenLogits],
    index: torch.Tensor,
    columns: Sequence[torch.Tensor] = (),
    chunk_size: int = 0,
) -> tuple[torch.Tensor, ...]:
    """The sums over the positions `index` of each output of `kernel` (arguments as for `map_positions`).

    A sum is linear in its terms, so the gradient of each chunk's contribution is known in the forward pass up to
    the one scalar backward brings (d loss / d sum). When chunked with gradients enabled and exactly one source
    needs a gradient and allows it (`TokenLogits.gradient_in_forward`), each chunk's gradients with respect to
    that source's hidden states and trainable head parameters are computed right after its logits
    (`_SumWithGradient`), and backward only scales them: the head's forward matmul runs once per chunk instead
    of twice (recomputation), its two backward matmuls as before. The cost is one gradient buffer the size of the
    hidden states and one per trainable head parameter, held from the forward pass to backward (where they become
    the gradients autograd accumulates). Otherwise the positions are mapped (checkpointed when chunked) and
    summed. Same values either way up to float32 summation order.
    """
    trainable = [i for i, source in enumerate(sources) if source.states.requires_grad]
    if len(trainable) == 1 and chunk_size > 0 and torch.is_grad_enabled() and index.numel() > 0:
        source = sources[trainable[0]]
        if source.gradient_in_forward and source.head is not None and hasattr(source.head, "parameters"):
            params = [p for p in source.head.parameters() if p.requires_grad]
            plan = (kernel, sources, trainable[0], index, columns, chunk_size)
            return _SumWithGradient.apply(plan, source.states, *params)
    return tuple(values.sum() for values in map_positions(kernel, sources, index, columns, chunk_size))


class _SumWithGradient(torch.autograd.Function):
    """`sum_positions` with each chunk's gradient computed in the forward pass (see there).

    forward(plan, states, *params): plan = (kernel, sources, trainable source's position, index, columns,
    chunk_size). The kernel must have exactly one output that depends on the trainable source's logits (the
    others are detached, e.g. logged true-label NLLs); its sum is differentiable, the other sums are not.
    """

    @staticmethod
    def forward(ctx, plan, states, *params):
        kernel, sources, which, index, columns, chunk_size = plan
        flat = states.detach().reshape(-1, states.size(-1))
        grad_states = torch.zeros_like(flat)
        grad_params = [torch.zeros_like(param) for param in params]
        sums: list[torch.Tensor] | None = None
        differentiable = None
        for start in range(0, index.numel(), chunk_size):
            chunk_columns = [column[start : start + chunk_size] for column in columns]
            chunk_sums, differentiable = _SumWithGradient.chunk(
                kernel,
                sources,
                which,
                flat,
                index[start : start + chunk_size],
                chunk_columns,
                params,
                grad_states,
                grad_params,
            )
            sums = chunk_sums if sums is None else [a + b for a, b in zip(sums, chunk_sums)]
        # Kept on ctx (not save_for_backward): backward scales these buffers in place and hands them to autograd,
        # so no second copy of the head-sized gradient exists; the buffers are then released.
        ctx.grads, ctx.differentiable, ctx.shape = (grad_states, *grad_params), differentiable, states.shape
        ctx.mark_non_differentiable(*(value for k, value in enumerate(sums) if k != differentiable))
        return tuple(sums)

    @staticmethod
    def chunk(kernel, sources, which, flat, chunk, columns, params, grad_states, grad_params):
        """One chunk: its kernel outputs' sums, and its gradients added to `grad_states` / `grad_params`. A function
        of its own so that the chunk's logits and gradients are freed before the next chunk's are made."""
        with torch.enable_grad():
            rows = flat.index_select(0, chunk).requires_grad_()
            logits = []
            for position, source in enumerate(sources):
                if position == which:
                    logits.append(sources[which].head(rows))
                else:
                    with torch.no_grad():
                        logits.append(source.rows(chunk))
            outputs = kernel(*logits, *columns)
            del logits
            attached = [k for k, value in enumerate(outputs) if value.requires_grad]
            if len(attached) != 1:
                raise RuntimeError(f"sum_positions: {kernel} has {len(attached)} differentiable outputs, needs 1")
            grads = torch.autograd.grad(outputs[attached[0]].sum(), [rows, *params], allow_unused=True)
        grad_states.index_copy_(0, chunk, grads[0])
        for buffer, grad in zip(grad_params, grads[1:]):
            if grad is not None:
                buffer.add_(grad)
        return [value.detach().sum() for value in outputs], attached[0]

    @staticmethod
    def backward(ctx, *grad_outputs):
        if ctx.grads is None:
            raise RuntimeError(
                "sum_positions: backward ran twice through a loss whose gradient was computed in the forward pass "
                "(retain_graph=True). Set UnlearningConfig.loss_gradient_in_forward=False for that."
            )
        scale = grad_outputs[ctx.differentiable]
        grad_states, *grad_params = (grad.mul_(scale) for grad in ctx.grads)
        ctx.grads = None
        return (None, grad_states.view(ctx.shape), *grad_params)


def target_positions(targets: torch.Tensor) -> torch.Tensor:
    """Flat indices (row-major) of the positions of `targets` `[batch, seq]` that have a target."""
    return (targets.reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)


def scatter_positions(values: torch.Tensor, index: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Per-selected-position `values` `[n]` as a `[batch, seq]` tensor, 0 at the other positions (differentiable)."""
    out = values.new_zeros(shape[0] * shape[1])
    return out.index_add(0, index, values).view(shape)


# ---------------------------------------------------------------------------- per-position kernels
# Each takes `[n, vocab]` logits (any float dtype; computed in float32) and `[n]` columns, returns `[n]` tensors.


def _true_token_nll(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor]:
    """-log p(target) per position."""
    return (F.cross_entropy(logits.float(), targets, reduction="none"),)


def _substitute_nll(
    logits: torch.Tensor, substitute: torch.Tensor, true: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """-log p(substitute) (with gradient) and -log p(true) (detached) per position from one log-softmax; 0 where the
    respective target is -100."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    picked = -log_probs.gather(1, substitute.clamp(min=0).unsqueeze(1)).squeeze(1)
    substitute_nll = torch.where(substitute != IGNORE_INDEX, picked, torch.zeros_like(picked))
    with torch.no_grad():
        true_picked = -log_probs.detach().gather(1, true.clamp(min=0).unsqueeze(1)).squeeze(1)
        true_nll = torch.where(true != IGNORE_INDEX, true_picked, torch.zeros_like(true_picked))
    return substitute_nll, true_nll


def _kl(ref_logits: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor]:
    """KL(P_ref || P_theta) per position = -H(P_ref) + CE(P_ref, P_theta); the reference part needs no gradient."""
    with torch.no_grad():
        ref_log_probs = F.log_softmax(ref_logits.float(), dim=-1)
        ref_probs = ref_log_probs.exp()
        neg_entropy = (ref_probs * ref_log_probs).sum(-1)
        del ref_log_probs
    return (neg_entropy + F.cross_entropy(logits.float(), ref_probs, reduction="none"),)


def _most_likely_wrong(ref_logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor]:
    """argmax over the vocabulary without the target token, per position."""
    scores = ref_logits.float().clone()
    scores.scatter_(-1, targets.unsqueeze(-1), float("-inf"))
    return (scores.argmax(dim=-1),)


def _undial(
    ref_logits: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """CE(softmax(z_ref - beta onehot(y)), p_theta) (with gradient) and -log p_theta(y) (detached), per position."""
    with torch.no_grad():
        adjusted = ref_logits.float().clone()
        adjusted.scatter_add_(-1, targets.unsqueeze(-1), torch.full_like(adjusted[..., :1], -beta))
        soft = F.softmax(adjusted, dim=-1)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    cross = -(soft * log_probs).sum(-1)
    with torch.no_grad():
        true = -log_probs.detach().gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return cross, true


# ---------------------------------------------------------------------------- targets and counts


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


LogitsLike = torch.Tensor | TokenLogits


def nll_sum(
    logits: LogitsLike, labels: torch.Tensor, attention_mask: torch.Tensor | None = None, chunk_size: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of next-token negative log-likelihoods over valid targets (float32), and their count."""
    targets = next_token_targets(labels, attention_mask)
    index = target_positions(targets)
    (total,) = sum_positions(
        _true_token_nll, [as_token_logits(logits)], index, [targets.reshape(-1)[index]], chunk_size
    )
    return total, index.new_tensor(index.numel())


def substitute_nll_sums(
    logits: LogitsLike,
    substitute_labels: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    chunk_size: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """NLL sum of substitute targets (random or adversarial; with gradient) and, for logging, of the true labels
    (detached), from one log-softmax. Returns (substitute_sum, substitute_count, true_sum, true_count)."""
    source = as_token_logits(logits)
    substitute = next_token_targets(substitute_labels, attention_mask).reshape(-1)
    true = next_token_targets(labels, attention_mask).reshape(-1)
    index = ((substitute != IGNORE_INDEX) | (true != IGNORE_INDEX)).nonzero().squeeze(1)
    sub_sum, true_sum = sum_positions(_substitute_nll, [source], index, [substitute[index], true[index]], chunk_size)
    return sub_sum, (substitute != IGNORE_INDEX).sum(), true_sum, (true != IGNORE_INDEX).sum()


def kl_sum(
    ref_logits: LogitsLike,
    logits: LogitsLike,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    chunk_size: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over valid positions of KL(P_ref || P_theta) over the vocabulary, and the count of positions.

    This is the true KL divergence sum_v p_ref(v) (log p_ref(v) - log p_theta(v)), not the cross-entropy to the
    reference (which has the same gradient but a different value). Positions whose next-token target does not count
    (padding, prompts) are excluded: they are never computed, so a non-finite value at a padding position cannot
    leak into the sum. KL = -H(P_ref) + CE(P_ref, P_theta): the reference parts need no gradient, and the
    cross-entropy with probability targets avoids copying the logits. The reference's logits are chunked like the
    policy's (recomputed from its hidden states by backward when chunked).
    """
    targets = next_token_targets(labels, attention_mask)
    index = target_positions(targets)
    (kl,) = sum_positions(_kl, [as_token_logits(ref_logits), as_token_logits(logits)], index, (), chunk_size)
    return kl, index.new_tensor(index.numel())


def adversarial_targets(
    ref_logits: LogitsLike, labels: torch.Tensor, attention_mask: torch.Tensor | None = None, chunk_size: int = 0
) -> torch.Tensor:
    """Targets of "unlearning with adversarial samples" (Yao et al. 2024, method 3).

    For each target position t, a_t = argmax_{a != w_t} P_theta0(a | w_<t): the original model's most likely
    *wrong* token. P_theta0(. | w_<t) is read from ref_logits[:, t - 1] (the prediction made before seeing w_t),
    which is exactly the paper's formula (the official code is off by one here). The result is in the same
    unshifted convention as `labels`: -100 wherever `labels` has no valid target (position 0, -100, padding).
    """
    source = as_token_logits(ref_logits)
    targets = next_token_targets(labels, attention_mask)  # targets[:, t - 1] = w_t
    index = target_positions(targets)
    with torch.no_grad():
        (wrong,) = map_positions(_most_likely_wrong, [source], index, [targets.reshape(-1)[index]], chunk_size)
    out = torch.full((targets.numel(),), IGNORE_INDEX, dtype=targets.dtype, device=targets.device)
    out[index] = wrong.to(targets.dtype)
    return F.pad(out.view(targets.shape)[:, :-1], (1, 0), value=IGNORE_INDEX)


def random_targets(
    labels: torch.Tensor, vocab_size: int, generator: torch.Generator, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Uniformly random target tokens at every valid target position (method 2); -100 elsewhere."""
    valid = F.pad(next_token_targets(labels, attention_mask)[:, :-1] != IGNORE_INDEX, (1, 0), value=False)
    random = torch.randint(0, vocab_size, labels.shape, generator=generator, dtype=labels.dtype)
    return torch.where(valid, random, torch.full_like(labels, IGNORE_INDEX))


def token_nll(
    logits: LogitsLike, labels: torch.Tensor, attention_mask: torch.Tensor | None = None, chunk_size: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position next-token NLL `[batch, seq]` (float32, 0 where there is no target) and the target mask."""
    source = as_token_logits(logits)
    targets = next_token_targets(labels, attention_mask)
    index = target_positions(targets)
    (nll,) = map_positions(_true_token_nll, [source], index, [targets.reshape(-1)[index]], chunk_size)
    return scatter_positions(nll, index, targets.shape), targets != IGNORE_INDEX


def sequence_nll(
    logits: LogitsLike, labels: torch.Tensor, attention_mask: torch.Tensor | None = None, chunk_size: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sums of next-token NLL over valid targets, `[batch]`, and per-row target counts, `[batch]`."""
    nll, valid = token_nll(logits, labels, attention_mask, chunk_size)
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


def _weighted_ascent(
    logits: torch.Tensor, targets: torch.Tensor, beta1: float, beta2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """-sg(p^beta1 * (1 - p)^beta2) * NLL (with gradient) and NLL (detached) per position, with p = exp(-NLL) the
    probability of the true token."""
    (nll,) = _true_token_nll(logits, targets)
    with torch.no_grad():
        p = torch.exp(-nll)
        weight = p.pow(beta1) * (1.0 - p).pow(beta2)
    return -(weight * nll), nll.detach()


def weighted_ascent_sums(
    logits: LogitsLike,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None,
    beta1: float,
    beta2: float,
    chunk_size: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token-weighted gradient ascent: -sum_t sg(p_t^beta1 * (1 - p_t)^beta2) * NLL_t over valid targets, with
    p_t = exp(-NLL_t) the model's probability of the true token (a detached weight); the number of targets; and,
    for logging, the plain NLL sum (detached). beta2 = 0 is WGA (Wang et al. 2025), beta1 = 5, beta2 = 1 is SatImp
    (Yang et al. 2025). Each position's term depends on that position's logits only, so it is a sum like the NLL's
    (`sum_positions`: chunked, gradient in the forward pass where allowed)."""
    targets = next_token_targets(labels, attention_mask)
    index = target_positions(targets)
    weighted, nll = sum_positions(
        partial(_weighted_ascent, beta1=beta1, beta2=beta2),
        [as_token_logits(logits)],
        index,
        [targets.reshape(-1)[index]],
        chunk_size,
    )
    return weighted, index.new_tensor(index.numel()), nll


def undial_sums(
    ref_logits: LogitsLike,
    logits: LogitsLike,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None,
    beta: float,
    chunk_size: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """UNDIAL (Dong et al. 2024): cross-entropy from the policy to softmax(z_ref - beta * onehot(y)) at every valid
    target position (the reference's logits with the true token pushed down by beta), summed; the count; and, for
    logging, the true-label NLL sum (detached), from the same log-softmax. Positions without a target (prompt,
    padding) are excluded, not fed with a -100 label."""
    targets = next_token_targets(labels, attention_mask)
    index = target_positions(targets)
    cross, true = sum_positions(
        partial(_undial, beta=beta),
        [as_token_logits(ref_logits), as_token_logits(logits)],
        index,
        [targets.reshape(-1)[index]],
        chunk_size,
    )
    return cross, index.new_tensor(index.numel()), true


def activation_mse_sum(
    hidden: torch.Tensor, target: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over the selected `positions` (bool `[batch, seq]`) of the mean over the hidden dimension of the squared
    difference between `hidden` `[batch, seq, d]` and `target` (broadcastable), and the number of positions (RMU)."""
    per_position = (hidden.float() - target.float()).pow(2).mean(dim=-1)
    return torch.where(positions, per_position, torch.zeros_like(per_position)).sum(), positions.sum()
