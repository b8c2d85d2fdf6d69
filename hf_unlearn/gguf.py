"""GGUF files as Hugging Face folders: the model de-quantized, and a SentencePiece-style BPE tokenizer rebuilt from
the file's own vocabulary.

Application code of the main job (`hf_unlearn.scripts.demo`), usable on its own:

    from hf_unlearn.gguf import gguf_to_hf_folder, sentencepiece_tokenizer_from_gguf

    tokenizer = sentencepiece_tokenizer_from_gguf("gemma-3-270m-q4_k_m.gguf")
    gguf_to_hf_folder("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m", tokenizer=tokenizer)

The tokenizer is what llama.cpp runs for a `tokenizer.ggml.model = "llama"` (SentencePiece) vocabulary: spaces
written as "▁", no pre-tokenizer split, BPE over characters where the adjacent pair whose concatenation is the best
vocabulary entry merges first, and bytes ("<0x41>") for characters outside the vocabulary (byte fallback).
Control tokens (`<bos>`, `<eos>`, `<start_of_turn>`, ...) are special tokens and user-defined tokens ("\\n",
runs of spaces or tabs) are matched whole before BPE, as llama.cpp does. Merges come from `tokenizer.ggml.merges`
when the file has them, otherwise they are derived from the vocabulary: every split of a normal token into two
normal tokens, ranked by the token's score (higher first; the file order breaks ties).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPACE = "\u2581"  # "▁", SentencePiece's space
# llama.cpp's token types (gguf.TokenType): the ones the tokenizer treats differently.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class GGUFVocabulary:
    """The tokenizer fields of a GGUF file (`tokenizer.ggml.*`)."""

    model: str
    tokens: list[str]
    scores: list[float]
    token_types: list[int]
    merges: list[tuple[str, str]] | None = None
    special_ids: dict[str, int] = field(default_factory=dict)  # bos / eos / unk / pad -> token id
    add_bos: bool = True
    add_eos: bool = False
    add_space_prefix: bool = False


def read_gguf_vocabulary(path: str) -> GGUFVocabulary:
    """Read the tokenizer fields of the GGUF file at `path` (memory-mapped; the tensors are not read)."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields

    def value(key: str, default=None):
        return fields[key].contents() if key in fields else default

    tokens = list(value("tokenizer.ggml.tokens"))
    merges = value("tokenizer.ggml.merges")
    special_ids = {}
    for name, key in (
        ("bos", "bos_token_id"),
        ("eos", "eos_token_id"),
        ("unk", "unknown_token_id"),
        ("pad", "padding_token_id"),
    ):
        token_id = value(f"tokenizer.ggml.{key}")
        if token_id is not None:
            special_ids[name] = int(token_id)
    return GGUFVocabulary(
        model=value("tokenizer.ggml.model"),
        tokens=tokens,
        scores=[float(s) for s in value("tokenizer.ggml.scores", [0.0] * len(tokens))],
        token_types=[int(t) for t in value("tokenizer.ggml.token_type", [NORMAL] * len(tokens))],
        merges=[tuple(m.split(" ", 1)) for m in merges] if merges is not None else None,
        special_ids=special_ids,
        add_bos=bool(value("tokenizer.ggml.add_bos_token", True)),
        add_eos=bool(value("tokenizer.ggml.add_eos_token", False)),
        add_space_prefix=bool(value("tokenizer.ggml.add_space_prefix", False)),
    )


def derive_merges(tokens: list[str], scores: list[float], token_types: list[int]) -> list[tuple[str, str]]:
    """BPE merges implied by a SentencePiece vocabulary: each split of a normal token into two normal tokens, best
    first (higher score of the merged token, then earlier in the file, then shorter left part).

    This is the order in which llama.cpp's SentencePiece tokenizer merges adjacent pairs (the pair whose
    concatenation scores highest), so BPE with these merges segments text as llama.cpp does."""
    normal = {token: index for index, token in enumerate(tokens) if token_types[index] == NORMAL}
    ranked = []
    for token, index in normal.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in normal and right in normal:
                ranked.append((-scores[index], index, cut, left, right))
    ranked.sort()
    return [(left, right) for _, _, _, left, right in ranked]


def build_sentencepiece_bpe(vocabulary: GGUFVocabulary) -> Tokenizer:
    """A `tokenizers.Tokenizer` for a SentencePiece-style (`tokenizer.ggml.model = "llama"`) GGUF vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    if vocabulary.model != "llama":
        raise ValueError(
            f"tokenizer.ggml.model={vocabulary.model!r}: only SentencePiece ('llama') vocabularies "
            "are rebuilt here; load this file's tokenizer with transformers."
        )
    tokens, types = vocabulary.tokens, vocabulary.token_types
    merges = vocabulary.merges if vocabulary.merges is not None else derive_merges(tokens, vocabulary.scores, types)
    unk = tokens[vocabulary.special_ids["unk"]] if "unk" in vocabulary.special_ids else None
    bpe = models.BPE(
        vocab={token: index for index, token in enumerate(tokens)},
        merges=merges,
        unk_token=unk,
        byte_fallback=True,
        fuse_unk=True,
    )
    tokenizer = Tokenizer(bpe)
    replace = normalizers.Replace(" ", SPACE)
    prepend = [normalizers.Prepend(SPACE)] if vocabulary.add_space_prefix else []
    tokenizer.normalizer = normalizers.Sequence(prepend + [replace])
    tokenizer.pre_tokenizer = None  # SentencePiece: merges may cross spaces
    strip = [decoders.Strip(" ", 1, 0)] if vocabulary.add_space_prefix else []  # the prepended space
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()] + strip
    )
    # Control tokens are special; user-defined ones ("\n", runs of spaces) are matched whole, on the raw text.
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, kind in zip(tokens, types) if kind == CONTROL]
    )
    tokenizer.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t, kind in zip(tokens, types) if kind == USER_DEFINED]
    )
    single, special = "$A", []
    for name, wanted, position in (("bos", vocabulary.add_bos, "start"), ("eos", vocabulary.add_eos, "end")):
        if wanted and name in vocabulary.special_ids:
            token = tokens[vocabulary.special_ids[name]]
            single = f"{token} {single}" if position == "start" else f"{single} {token}"
            special.append((token, vocabulary.special_ids[name]))
    if special:
        pair = f"{single} {single.replace('$A', '$B')}"
        tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)
    return tokenizer


def sentencepiece_tokenizer_from_gguf(path: str) -> PreTrainedTokenizerFast:
    """The GGUF file's tokenizer as a `transformers` fast tokenizer (bos / eos / unk / pad from the file; pad falls
    back to eos). Saved with `save_pretrained`, it reloads with `AutoTokenizer.from_pretrained`."""
    from transformers import PreTrainedTokenizerFast

    vocabulary = read_gguf_vocabulary(path)
    named = {f"{name}_token": vocabulary.tokens[index] for name, index in vocabulary.special_ids.items()}
    named.setdefault("pad_token", named.get("eos_token"))
    return PreTrainedTokenizerFast(tokenizer_object=build_sentencepiece_bpe(vocabulary), **named)


def gguf_to_hf_folder(gguf_path: str, out: str, tokenizer: PreTrainedTokenizerBase | None = None) -> None:
    """De-quantize the GGUF model and save it as a plain `...ForCausalLM` folder of its architecture (the class
    `AutoModelForCausalLM` picks for the config, e.g. Llama or Gemma3; GGUF-loaded models refuse saving), without
    `quantization_config`, with `tokenizer` (default: transformers' own conversion of the file's tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(gguf_path))
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
