"""Per-example language-modelling scores: summed NLL, number of target tokens, correct next-token predictions,
the length of the correctly predicted run that ends the targets (extraction strength), and optionally every target
token's log-probability and Min-K%++ score.

Every other metric (mean NLL, perplexity, accuracy, the membership-inference scores) is derived from these by
the pure functions of `metrics.py`. Scoring runs in batches without gradients and can be sharded over
processes (`accelerator=`), with the same result on 1 or N processes (see `sharding.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..data import UnlearningCollator
from ..losses import IGNORE_INDEX, TokenLogits, as_token_logits
from .sharding import map_batches

_SCORE_COLUMNS = ("input_ids", "attention_mask", "labels")
# Logits minus the row's maximum are clamped here for the Min-K%++ moments (a -inf logit, e.g. a masked vocabulary
# entry, would make p * y = 0 * -inf = nan); the target's own log-probability is taken before clamping.
_LOGPROB_FLOOR = -1e4


@dataclass
class ExampleScores:
    """Per-example scores of a dataset under one model.

    Attributes:
        nll_sum: summed next-token NLL of each example (nats), shape [num_examples], float64.
        tokens: number of target tokens of each example.
        correct: number of target tokens that were the model's top-1 prediction (a tie for the top counts).
        reproduced: the number of final target tokens that were all top-1 predictions (the run of hits that ends
            the targets): greedy decoding from the true prefix before them reproduces them exactly.
        token_logprobs: with `token_scores=True`: each example's target-token log-probabilities (1-D tensors).
        token_zscores: with `token_scores=True`: each example's Min-K%++ token scores (log p - mu) / sigma.
    """

    nll_sum: torch.Tensor
    tokens: torch.Tensor
    correct: torch.Tensor
    reproduced: torch.Tensor | None = None
    token_logprobs: list[torch.Tensor] | None = None
    token_zscores: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.nll_sum)

    @property
    def mean_nll(self) -> float:
        """Token-weighted mean NLL over all examples."""
        return float(self.nll_sum.sum() / self.tokens.sum().clamp(min=1))

    @property
    def perplexity(self) -> float:
        return float(torch.exp(torch.tensor(self.mean_nll)))

    @property
    def accuracy(self) -> float:
        """Share of target tokens that are the model's top-1 prediction."""
        return float(self.correct.sum() / self.tokens.sum().clamp(min=1))

    @property
    def extraction_strength(self) -> torch.Tensor:
        """Extraction strength of each example (`tofu.extraction_strength_of`): 1 - k / n, with n target tokens and
        k the shortest target prefix from which greedy decoding reproduces the rest, i.e. `reproduced / tokens`
        (nan for an example without targets)."""
        if self.reproduced is None:
            raise ValueError("These scores were made without `reproduced` counts; score them with score_examples.")
        return self.reproduced.double() / self.tokens.double().where(self.tokens > 0, torch.nan)

    @property
    def example_nll(self) -> torch.Tensor:
        """Mean NLL of each example (the LOSS membership-inference score, negated)."""
        return self.nll_sum / self.tokens.clamp(min=1)

    def summary(self) -> dict[str, float]:
        """Split-level numbers: mean NLL, perplexity, accuracy, number of examples and target tokens."""
        return {
            "nll": self.mean_nll,
            "perplexity": self.perplexity,
            "accuracy": self.accuracy,
            "examples": len(self),
            "tokens": int(self.tokens.sum()),
        }


# Rows per output-head matmul when scoring from hidden states (the statistics still walk `_chunk_rows` at a time).
_HEAD_BLOCK = 256


def _chunk_rows(vocab_size: int, device: torch.device) -> int:
    """Positions per chunk: about 2 MB of float32 logits on CPU, so that the chunk and its two float32 work
    buffers stay in the cache (on a 2-core EPYC with 1 MB of L2 per core, 1-4 MB chunks were 3-4x faster than 8 MB
    ones for the Min-K%++ moments once the buffers are reused; without reuse, glibc returned and re-faulted every
    chunk's >= 2 MB temporaries), and 512 MB on GPUs (fewer, larger kernels)."""
    budget = 2**21 if device.type == "cpu" else 2**29
    return max(1, budget // (4 * vocab_size))


def token_statistics(
    logits: torch.Tensor | TokenLogits, labels: torch.Tensor, token_scores: bool = False, defer: bool = False
) -> list[tuple] | Callable[[], list[tuple]]:
    """Per-example statistics of one batch of causal-LM logits (`[batch, seq, vocab]`, unshifted labels), or of
    a `TokenLogits` (final hidden states + output head: only the target positions' logits are ever computed, a
    chunk at a time, so neither the full logits nor the head's matmul at prompt / padding positions are paid).

    Returns one tuple per example: `(nll_sum, tokens, correct, reproduced)` (`ExampleScores`' fields), plus
    `(token_logprobs, token_zscores)` when `token_scores`. With `defer=True` it returns a function that produces
    that list: the GPU work is queued but nothing is copied to the host yet, so the caller can launch the next batch
    first.

    Computed in float32 a chunk of positions at a time (see `_chunk_rows`) in work buffers allocated once per
    call, so that no temporary of the size of the logits is made (no shifted copy, no float32 copy of bf16
    logits): log p = log_softmax(logits) once per chunk or, with `token_scores`, p = softmax(logits) and the
    moments of `_centred_moments`. On the
    GPU every position is computed and the invalid ones (prompt, padding, last position) masked out afterwards,
    which needs no host synchronisation; on the CPU, when under 90% of the positions are targets, only the
    target rows are gathered and computed.
    """
    source = as_token_logits(logits)
    batch, seq = source.shape
    device = source.states.device
    vocab = source.states.size(-1) if source.head is None else _vocab_size(source.head)
    targets = torch.full((batch, seq), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
    targets[:, :-1] = labels[:, 1:]  # position t predicts token t + 1; the last position predicts nothing
    targets = targets.reshape(-1)
    valid = targets != IGNORE_INDEX
    safe_targets = targets.clamp(min=0)
    index = None
    if source.head is not None or (device.type == "cpu" and valid.sum() < 0.9 * valid.numel()):
        index = valid.nonzero().squeeze(1)
    rows_total = batch * seq if index is None else index.numel()
    logp_rows = torch.zeros(rows_total, dtype=torch.float32, device=device)
    hits_rows = torch.zeros(rows_total, dtype=torch.bool, device=device)
    z_rows = torch.zeros(rows_total, dtype=torch.float32, device=device) if token_scores else None
    step = _chunk_rows(vocab, device)
    row_targets = safe_targets if index is None else targets[index]
    workspace = None  # float32 work buffers for the chunks, sized by the first chunk's logits
    head_buffer = None  # the first block's head logits, which the later blocks are written into where the head can
    # With an output head, its matmul runs on larger blocks (a block of `step` rows would re-read the whole head
    # weight for a handful of positions: memory-bound, half the speed on CPU); the statistics then walk the
    # block's logits `step` rows at a time, as from full logits.
    block = step if source.head is None else max(step, _HEAD_BLOCK)
    for block_start in range(0, rows_total, block):
        block_end = min(block_start + block, rows_total)
        if index is not None and source.head is not None:
            out = None if head_buffer is None else head_buffer[: block_end - block_start]
            block_logits = source.rows(index[block_start:block_end], out)
            head_buffer = block_logits if head_buffer is None else head_buffer
        for start in range(block_start, block_end, step):
            end = min(start + step, block_end)
            if index is None:
                rows = source.states.reshape(batch * seq, vocab)[start:end]
            elif source.head is not None:
                rows = block_logits[start - block_start : end - block_start]
            else:
                rows = source.rows(index[start:end])
            if workspace is None or workspace.shape[-1] != rows.shape[-1]:
                workspace = rows.new_empty(
                    (2 if token_scores else 1, min(step, rows_total), rows.shape[-1]), dtype=torch.float32
                )
            _chunk_statistics(rows, row_targets[start:end], start, end, logp_rows, hits_rows, z_rows, workspace)
    token_logp = _per_position(logp_rows, index, batch * seq).view(batch, seq)
    hits = _per_position(hits_rows, index, batch * seq).view(batch, seq)
    zscores = _per_position(z_rows, index, batch * seq).view(batch, seq) if token_scores else None
    valid = valid.view(batch, seq)
    nll_sums = -(token_logp.double() * valid).sum(-1)
    counts, correct = valid.sum(-1), (hits & valid).sum(-1)
    # The last miss's rank among the targets (1-based; 0 without a miss): the targets after it are all hits.
    last_miss = (valid.cumsum(-1) * (valid & ~hits)).amax(-1)
    reproduced = counts - last_miss

    def resolve() -> list[tuple]:
        rows = list(zip(nll_sums.tolist(), counts.tolist(), correct.tolist(), reproduced.tolist()))
        if not token_scores:
            return rows
        mask, logp_cpu, z_cpu = valid.cpu(), token_logp.cpu(), zscores.cpu()
        return [(*row, logp_cpu[b][mask[b]], z_cpu[b][mask[b]]) for b, row in enumerate(rows)]

    return resolve if defer else resolve()


def _chunk_statistics(rows, chunk_targets, start, end, logp_rows, hits_rows, z_rows, workspace) -> None:
    """Target log-probabilities, top-1 hits and (when `z_rows` is given) Min-K%++ scores of one chunk of logits,
    written into rows start:end of the outputs; `workspace` holds float32 buffers of at least the chunk's size."""
    buffers = workspace[:, : rows.shape[0]]
    if z_rows is None:
        logp = torch.log_softmax(rows, dim=-1, dtype=torch.float32, out=buffers[0])
        logp_rows[start:end] = logp.gather(-1, chunk_targets[:, None])[:, 0]
        # A hit: the target's logit is the row's maximum (ties count). amax is ~4x faster than argmax on CPU.
        hits_rows[start:end] = rows.gather(-1, chunk_targets[:, None])[:, 0] >= rows.amax(-1)
        return
    logp_target, hits, mu, sigma = _centred_moments(rows, chunk_targets, buffers)
    logp_rows[start:end] = logp_target
    hits_rows[start:end] = hits
    z_rows[start:end] = (logp_target - mu) / sigma.clamp(min=1e-12)


def _centred_moments(
    rows: torch.Tensor, targets: torch.Tensor, buffers: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """For each row of logits `[n, vocab]`: log p(target), whether the target is a top-1 prediction, and the mean
    and standard deviation of log p(z) for z ~ p (Min-K%++'s mu and sigma), with one exponential per logit.

    With y = logits - max (y <= 0) and s = sum_z exp(y(z)): log p = y - log s, so mu = E_p[log p] = E_p[y] - log s
    and, the shift being constant, sigma^2 = Var_p(y) = E_p[y^2] - E_p[y]^2. p comes from the fused softmax kernel
    (one exponential per logit; on a 2-core EPYC 1.6x faster than a separate `exp`), and log s = -log max_z p(z),
    since p = exp(0) / s at the maximum (>= 1 / vocab: it cannot underflow). Centring at the maximum keeps E_p[y]^2
    small (y = 0 at the mode), so the difference loses less precision than sum p log p^2 - mu^2 (mu^2 ~
    log(vocab)^2): against a float64 reference the scores are ~7x more accurate than log_softmax -> exp(log p),
    which also took two exponentials per logit. y is clamped at -1e4: a -inf logit (a masked entry) has p = 0 and
    contributes 0, not 0 * -inf = nan. `buffers`: two float32 `[n, vocab]` work tensors to write p and y into
    (overwritten; fresh ones are allocated when None).
    """
    if buffers is None:
        buffers = rows.new_empty((2, *rows.shape), dtype=torch.float32)
    p = torch.softmax(rows, dim=-1, dtype=torch.float32, out=buffers[0])
    top = rows.amax(-1, keepdim=True)
    y = buffers[1].copy_(rows).sub_(top) if rows.dtype != torch.float32 else torch.sub(rows, top, out=buffers[1])
    y_target = y.gather(-1, targets[:, None])[:, 0]
    y.clamp_(min=_LOGPROB_FLOOR)
    log_total = -p.amax(-1).log()
    mean_y = p.mul_(y).sum(-1)  # p now holds p * y, then p * y^2
    mean_y2 = p.mul_(y).sum(-1)
    sigma = (mean_y2 - mean_y * mean_y).clamp(min=0).sqrt()
    return y_target - log_total, y_target >= 0, mean_y - log_total, sigma


def _vocab_size(head) -> int:
    """The output size of an output head (`hf_unlearn.forward.OutputHead` or a function of hidden states)."""
    embedding = getattr(head, "embedding", None)
    if embedding is not None and getattr(embedding, "out_features", None):
        return int(embedding.out_features)
    weight = getattr(embedding, "weight", None)
    if weight is not None and weight.dim() == 2 and weight.numel() > 0:
        return int(weight.shape[0])
    return 32768  # unknown: only sets the chunk length


def _per_position(values: torch.Tensor, index: torch.Tensor | None, size: int) -> torch.Tensor:
    """Values computed for the rows `index` (or for every row when None) as one value per position."""
    if index is None:
        return values
    return torch.zeros(size, dtype=values.dtype, device=values.device).index_copy_(0, index, values)


def forward_logits(model, batch: dict[str, torch.Tensor]) -> TokenLogits:
    """What scoring reads from a (possibly DDP / DeepSpeed / PEFT wrapped) causal LM: the library's one forward
    pass (`hf_unlearn.forward`: no KV cache, position ids from the mask), as final hidden states + output head
    where the model allows it (no `[batch, seq, vocab]` logits), else its full logits."""
    from ..forward import forward

    return forward(model, batch, full_logits=False).token_logits


def model_device(model, accelerator: Any | None = None) -> torch.device:
    """Where inputs go: the accelerator's device, else the device of the model's first parameter."""
    if accelerator is not None:
        return accelerator.device
    return next(model.parameters()).device


@contextlib.contextmanager
def evaluation_mode(model, accelerator: Any | None = None):
    """No gradients, dropout off (restored afterwards), and the accelerator's mixed-precision autocast."""
    was_training = model.training
    model.eval()
    autocast = accelerator.autocast() if hasattr(accelerator, "autocast") else contextlib.nullcontext()
    try:
        with torch.no_grad(), autocast:
            yield
    finally:
        model.train(was_training)


def score_examples(
    model,
    dataset,
    pad_token_id: int = 0,
    batch_size: int = 8,
    progress: bool = False,
    *,
    accelerator: Any | None = None,
    token_scores: bool = False,
) -> ExampleScores:
    """Score every example of `dataset` (dicts with input_ids, attention_mask, labels) without gradients.

    Args:
        model: a causal LM, possibly wrapped (DDP, DeepSpeed engine, PEFT). Pass the wrapped model
            (`trainer.model_wrapped`) under FSDP; the unwrapped one also works under DDP and ZeRO-3.
        dataset: examples as produced by `hf_unlearn.data` (labels -100 where a token is not a target).
        pad_token_id: id used to pad `input_ids` (padding is never a target).
        accelerator: `accelerate.Accelerator` or `PartialState` to shard the examples over processes; every
            process returns the scores of all examples. None: score everything in this process.
        token_scores: also keep every target token's log-probability and Min-K%++ score (for the Min-K% and
            Min-K%++ attacks; costs a few passes over the logits).
    """
    collator = UnlearningCollator(pad_token_id=pad_token_id)
    device = model_device(model, accelerator)

    def score_batch(rows: list[dict]) -> Callable[[], list[tuple]]:
        batch = collator([{key: row[key] for key in _SCORE_COLUMNS} for row in rows])
        batch = {key: value.to(device) for key, value in batch.items()}
        # Deferred: the host copies of this batch's results wait until the next batch is launched.
        return token_statistics(forward_logits(model, batch), batch["labels"], token_scores, defer=True)

    with evaluation_mode(model, accelerator):
        rows = map_batches(
            score_batch,
            dataset,
            batch_size,
            accelerator,
            sort_key=lambda row: len(row["input_ids"]),
            progress=progress,
            desc="scoring",
        )
    columns = list(zip(*rows))
    return ExampleScores(
        nll_sum=torch.tensor(columns[0], dtype=torch.float64),
        tokens=torch.tensor(columns[1], dtype=torch.long),
        correct=torch.tensor(columns[2], dtype=torch.long),
        reproduced=torch.tensor(columns[3], dtype=torch.long),
        token_logprobs=list(columns[4]) if token_scores else None,
        token_zscores=list(columns[5]) if token_scores else None,
    )


def mean_nll(model, dataset, pad_token_id: int = 0, batch_size: int = 8) -> float:
    """Token-weighted mean next-token NLL of `dataset` under `model`."""
    return score_examples(model, dataset, pad_token_id, batch_size).mean_nll
