"""Greedy generation, sharded over processes: verbatim memorization of forget text and answers to questions.

Verbatim memorization (extraction strength): the model is given the first `prefix_tokens` tokens of a forget
example and continues greedily for `continuation_tokens` tokens; the continuation is compared with the true
text by ROUGE-L (F-measure, on words) and by the exact-match length (leading tokens reproduced exactly).
An unlearned model should reproduce the forget text no better than unseen text of the same domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data import pad_sequences
from .metrics import common_prefix_length, rouge_l
from .scores import evaluation_mode, model_device
from .sharding import map_batches


def _generation_model(model, accelerator: Any | None):
    """`generate` lives on the unwrapped model (DDP and DeepSpeed engines do not forward it)."""
    if accelerator is not None and hasattr(accelerator, "unwrap_model"):
        return accelerator.unwrap_model(model)
    return getattr(model, "module", model)


def _synced_gpus(accelerator: Any | None) -> bool:
    """Under ZeRO-3 with several processes, every rank must keep running forward passes until all are done."""
    if accelerator is None or accelerator.num_processes == 1:
        return False
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def greedy_generate(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    pad_token_id: int,
    eos_token_id: int | None = None,
    batch_size: int = 8,
    accelerator: Any | None = None,
    progress: bool = False,
) -> list[list[int]]:
    """Greedy continuation (token ids, prompt excluded) of each prompt, left-padded in batches.

    With `eos_token_id=None` generation never stops early; otherwise a continuation ends at EOS (excluded).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be at least 1.")
    generator = _generation_model(model, accelerator)
    device = model_device(model, accelerator)
    synced = _synced_gpus(accelerator)

    def generate_batch(batch_prompts: list[Sequence[int]]) -> list[list[int]]:
        input_ids = pad_sequences(batch_prompts, pad_token_id, side="left").to(device)
        attention_mask = pad_sequences([[1] * len(p) for p in batch_prompts], 0, side="left").to(device)
        output = generator.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
            synced_gpus=synced,
        )
        continuations = []
        for row in output[:, input_ids.shape[1] :].tolist():
            if eos_token_id is not None and eos_token_id in row:
                row = row[: row.index(eos_token_id)]
            continuations.append(row)
        return continuations

    with evaluation_mode(generator, accelerator):
        return map_batches(
            generate_batch, prompts, batch_size, accelerator, sort_key=len, progress=progress, desc="generating"
        )


def verbatim_memorization(
    model,
    dataset,
    tokenizer,
    prefix_tokens: int = 32,
    continuation_tokens: int = 32,
    max_examples: int | None = None,
    batch_size: int = 8,
    accelerator: Any | None = None,
) -> dict[str, float]:
    """Greedy continuation of forget-text prefixes against the true continuation.

    Uses the examples whose `input_ids` hold at least `prefix_tokens + continuation_tokens` tokens (the first
    `max_examples` of them). Generation ignores EOS, so every continuation has `continuation_tokens` tokens.

    Returns:
        `rouge_l` (mean ROUGE-L F-measure of the decoded texts), `exact_match_tokens` (mean number of leading
        tokens reproduced exactly), `exact_match_rate` (share of continuations reproduced in full) and
        `examples` (how many examples were long enough).
    """
    needed = prefix_tokens + continuation_tokens
    prompts, truths = [], []
    for i in range(len(dataset)):
        ids = list(dataset[i]["input_ids"])
        if len(ids) >= needed:
            prompts.append(ids[:prefix_tokens])
            truths.append(ids[prefix_tokens:needed])
        if max_examples is not None and len(prompts) >= max_examples:
            break
    if not prompts:
        raise ValueError(
            f"No example has the {needed} tokens that a {prefix_tokens}-token prefix and a {continuation_tokens}-token "
            "continuation need; lower prefix_tokens / continuation_tokens."
        )
    generated = greedy_generate(
        model, prompts, continuation_tokens, tokenizer.pad_token_id, None, batch_size, accelerator
    )
    matches = np.array([common_prefix_length(g, t) for g, t in zip(generated, truths)])
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    rouge = rouge_l([decode(g) for g in generated], [decode(t) for t in truths], measure="fmeasure")
    return {
        "rouge_l": float(rouge.mean()),
        "exact_match_tokens": float(matches.mean()),
        "exact_match_rate": float((matches == continuation_tokens).mean()),
        "examples": len(prompts),
    }


def answer_prompts(tokenizer, questions: Sequence[str], prompt_template: str) -> list[list[int]]:
    """Token ids of each question formatted with `prompt_template`: exactly the tokens `build_qa_dataset` masks as
    the prompt (the same start token, the trailing space left to the answer)."""
    from ..data import encode_prompt

    return [encode_prompt(tokenizer, prompt_template.format(question=q)) for q in questions]


def generate_answers(
    model,
    tokenizer,
    questions: Sequence[str],
    prompt_template: str,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    accelerator: Any | None = None,
) -> list[str]:
    """Greedy answers to `questions` (stopping at EOS), decoded without special tokens."""
    prompts = answer_prompts(tokenizer, questions, prompt_template)
    generated = greedy_generate(
        model, prompts, max_new_tokens, tokenizer.pad_token_id, tokenizer.eos_token_id, batch_size, accelerator
    )
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in generated]
