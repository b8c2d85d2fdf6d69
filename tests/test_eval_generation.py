"""Generation (`hf_unlearn.evaluation.generation`): batched greedy decoding and verbatim memorisation."""

from __future__ import annotations

import pytest


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
