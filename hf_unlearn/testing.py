"""Tiny, offline building blocks for tests and benchmarks: a byte-level BPE tokenizer trained in seconds and a
small Llama built from a config. Nothing here is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable


def build_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `texts`, with <pad>, <s>, </s> and <unk>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def build_llama(vocab_size: int, hidden_size: int = 64, layers: int = 2, heads: int = 4, seed: int = 0, **overrides):
    """A randomly initialised `LlamaForCausalLM` (hidden 64, 2 layers: about 0.1M parameters + embeddings)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    values = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    config = LlamaConfig(**{**values, **overrides})
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
