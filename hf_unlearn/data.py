"""Turning forget / retain data into training examples.

- Documents (the paper's setting: arXiv papers, books, code) become fixed-length chunks of `max_length` tokens
  (4096 in the paper); the last chunk of a document is kept shorter (the collator pads it) and chunks under
  `min_chunk_tokens` (5 in the released data) are dropped. Labels equal the inputs.
- Question/answer records (TOFU style) become one example each whose labels mask the question (-100), so that
  only the answer is learned or unlearned.
- `ForgetRetainDataset` pairs each forget example with a retain example, and `UnlearningCollator` pads both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset as TorchDataset

from .loading import load_documents, load_records
from .losses import IGNORE_INDEX

RETAIN_PREFIX = "retain_"
logger = logging.getLogger(__name__)


def check_tokenizer(tokenizer) -> None:
    """Fail early, with the fix, for a tokenizer that cannot pad."""
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"The tokenizer {type(tokenizer).__name__} has no pad token, which padding the last chunk of a document "
            "needs. Set one first, e.g. `tokenizer.pad_token = tokenizer.eos_token`."
        )


def chunk_documents(
    documents,
    tokenizer,
    max_length: int = 4096,
    text_column: str = "text",
    min_chunk_tokens: int = 2,
    add_eos: bool = True,
    num_proc: int | None = None,
    split: str = "train",
):
    """Tokenize documents and cut each into chunks of `max_length` tokens (labels = input_ids).

    Each document is cut on its own (chunks never span two documents); it starts with the tokenizer's own start
    token (BOS where the tokenizer adds one, see `start_tokens`) and, when `add_eos`, ends with EOS. Chunks shorter
    than `min_chunk_tokens` are dropped (default 2: the shortest chunk that has a next-token target; short texts such
    as a phone number are exactly what people unlearn, so they are kept). Whitespace-only documents are skipped.
    Both counts are logged. `split` picks the split of a Hub dataset id.
    """
    check_tokenizer(tokenizer)
    if min_chunk_tokens < 2:
        raise ValueError(f"min_chunk_tokens={min_chunk_tokens}: a chunk needs at least 2 tokens to have a target.")
    documents = load_documents(documents, text_column=text_column, split=split)
    start = start_tokens(tokenizer)
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
    texts = documents[text_column]
    blank = sum(1 for text in texts if isinstance(text, str) and not text.strip())
    if blank:
        documents = documents.filter(lambda row: bool(row[text_column].strip()))
        logger.warning("Skipped %d whitespace-only document(s) of %d.", blank, len(texts))
        if len(documents) == 0:
            raise ValueError(f"All {len(texts)} documents are empty or whitespace; there is nothing to unlearn or keep.")

    def chunk(batch):
        ids = tokenizer(batch[text_column], add_special_tokens=False)["input_ids"]
        out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
        for doc in ids:
            doc = start + doc + eos
            for begin in range(0, len(doc), max_length):
                piece = doc[begin : begin + max_length]
                if len(piece) < min_chunk_tokens:
                    continue
                out["input_ids"].append(piece)
                out["attention_mask"].append([1] * len(piece))
                out["labels"].append(list(piece))
        return out

    chunks = documents.map(chunk, batched=True, remove_columns=documents.column_names, num_proc=num_proc)
    if len(chunks) == 0:
        raise ValueError(
            f"No chunk of at least {min_chunk_tokens} tokens was made from {len(documents)} documents; "
            "the documents are empty or too short."
        )
    logger.info("Made %d chunk(s) of at most %d tokens from %d document(s).", len(chunks), max_length, len(documents))
    return chunks


def start_tokens(tokenizer) -> list[int]:
    """The tokens the tokenizer itself puts at the start of a text (`[bos]` for Llama-style tokenizers, nothing for
    GPT-2 / SmolLM2-style ones), so documents and prompts start the way the model saw them in pre-training."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [bos] if ids and ids[0] == bos else []


def prompt_boundary(prompt: str) -> int:
    """Where the answer starts in `prompt + answer`: trailing whitespace of the prompt belongs to the answer's first
    token (byte-level BPE and SentencePiece both merge a space into the next word), so it is not part of the prompt."""
    return len(prompt.rstrip())


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt for generation: the same tokens `encode_prompt_completion` masks as the prompt."""
    return start_tokens(tokenizer) + tokenizer(prompt[: prompt_boundary(prompt)], add_special_tokens=False)["input_ids"]


def encode_prompt_completion(
    tokenizer, prompt: str, completion: str, max_length: int | None = None, add_eos: bool = True
) -> dict[str, list[int]]:
    """Tokenise `prompt + completion` as ONE string and mask the prompt by character offsets.

    Tokenising the two parts separately changes the tokens at the seam (SmolLM2: `['Answer', ':', 'Ġ', 'The']`
    instead of `['Answer', ':', 'ĠThe']`), which costs about one nat per answer token. A token is a label when it
    ends after `prompt_boundary(prompt)`; the prompt gets -100. The tokenizer's start token (BOS) comes first when
    the tokenizer adds one; EOS ends the completion when `add_eos`. Needs a fast tokenizer (offsets).
    """
    text = prompt + completion
    boundary = prompt_boundary(prompt)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is a slow tokenizer without character offsets, which prompt masking needs; "
            "load the fast one (AutoTokenizer.from_pretrained(..., use_fast=True))."
        )
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    start = start_tokens(tokenizer)
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
    input_ids = start + list(encoded["input_ids"]) + eos
    is_label = [False] * len(start) + [end > boundary for _, end in encoded["offset_mapping"]] + [True] * len(eos)
    labels = [token if keep else IGNORE_INDEX for token, keep in zip(input_ids, is_label)]
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def build_qa_dataset(
    records,
    tokenizer,
    question_column: str = "question",
    answer_column: str = "answer",
    max_length: int = 512,
    prompt_template: str = "Question: {question}\nAnswer: ",
    split: str = "train",
):
    """Question/answer records (TOFU style) as examples whose labels cover only the answer.

    The prompt and the answer are tokenised together (`encode_prompt_completion`); the prompt tokens get label
    -100, so NLL, gradient ascent and every metric act on the answer alone.
    """
    import datasets

    check_tokenizer(tokenizer)
    if isinstance(records, (list, tuple)):
        records = datasets.Dataset.from_list(list(records))
    elif isinstance(records, (str, os.PathLike)):
        records = load_records(str(records), split)
    if len(records) == 0:
        raise ValueError("The question/answer data is empty.")
    for column in (question_column, answer_column):
        if column not in records.column_names:
            raise ValueError(
                f"The question/answer data has no column {column!r} (it has {records.column_names}); "
                "set `question_column` / `answer_column`."
            )

    def encode(record):
        prompt = prompt_template.format(question=record[question_column])
        return encode_prompt_completion(tokenizer, prompt, record[answer_column], max_length)

    return records.map(encode, remove_columns=records.column_names)


class ForgetRetainDataset(TorchDataset):
    """Each item is a forget example plus a retain example under keys prefixed with `retain_`.

    Forget example i is paired with retain example `order[i % len(order)]`, where `order` is a permutation of the
    retain set drawn once from `pairing_seed`. The pairing depends only on the forget example's global index, so
    each process (which holds different forget indices) gets different, deterministic retain examples, and the
    global batch is the same whatever the number of processes.
    """

    def __init__(self, forget, retain, pairing_seed: int = 0):
        if len(retain) == 0:
            raise ValueError("The retain dataset is empty; pass retain data or choose a method that needs none.")
        self.forget = forget
        self.retain = retain
        generator = torch.Generator().manual_seed(pairing_seed)
        self.order = torch.randperm(len(retain), generator=generator).tolist()

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.forget[index])
        retain = self.retain[self.order[index % len(self.order)]]
        item.update({RETAIN_PREFIX + key: value for key, value in retain.items()})
        return item


def pad_sequences(sequences: Sequence[Sequence[int]], value: int, side: str = "right", length: int | None = None):
    """Pad lists of ints (or 1-D tensors) to a `[batch, length]` long tensor."""
    length = length or max(len(seq) for seq in sequences)
    out = torch.full((len(sequences), length), value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        seq = torch.as_tensor(seq, dtype=torch.long)[:length]
        if side == "left":
            out[row, length - len(seq) :] = seq
        else:
            out[row, : len(seq)] = seq
    return out


class UnlearningCollator:
    """Pads examples; pairs forget and retain parts; keeps method-specific target columns aligned.

    Args:
        pad_token_id: id used to pad `input_ids`.
        base_collator: optional collator of the user's (e.g. `DataCollatorForLanguageModeling`); it is applied to
            the forget part and the retain part separately. Without one, `input_ids` are padded with
            `pad_token_id`, `attention_mask` with 0 and every `*labels` column with -100.
        padding_side: "right" or "left".
        target_columns: extra per-token label columns (e.g. `random_labels`) that are padded here with -100 to
            the length of `labels`, whatever the base collator does.
    """

    def __init__(
        self,
        pad_token_id: int,
        base_collator: Callable | None = None,
        padding_side: str = "right",
        target_columns: Sequence[str] = (),
    ):
        self.pad_token_id = pad_token_id
        self.base_collator = base_collator
        self.padding_side = padding_side
        self.target_columns = tuple(target_columns)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        forget = [{k: v for k, v in f.items() if not k.startswith(RETAIN_PREFIX)} for f in features]
        batch = self._collate(forget)
        if any(key.startswith(RETAIN_PREFIX) for key in features[0]):
            retain = [{k[len(RETAIN_PREFIX) :]: v for k, v in f.items() if k.startswith(RETAIN_PREFIX)} for f in features]
            batch.update({RETAIN_PREFIX + k: v for k, v in self._collate(retain).items()})
        return batch

    def _collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        targets = {name: [f.pop(name) for f in features] for name in self.target_columns if name in features[0]}
        if self.base_collator is not None:
            batch = dict(self.base_collator(features))
        else:
            batch = {}
            for key in features[0]:
                value = IGNORE_INDEX if key.endswith("labels") else 0 if key == "attention_mask" else self.pad_token_id
                batch[key] = pad_sequences([f[key] for f in features], value, self.padding_side)
        if "labels" not in batch:
            batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        length = batch["input_ids"].shape[1]
        for name, values in targets.items():
            batch[name] = pad_sequences(values, IGNORE_INDEX, self.padding_side, length)
        return batch


def as_hf_dataset(dataset):
    """A `datasets.Dataset` view of `dataset` (a datasets.Dataset, a list of dicts or a map-style torch Dataset)."""
    import datasets

    if isinstance(dataset, datasets.Dataset):
        return dataset
    return datasets.Dataset.from_list([dict(dataset[i]) for i in range(len(dataset))])


def build_examples(
    source,
    tokenizer,
    data_format: str = "documents",
    max_length: int = 4096,
    text_column: str = "text",
    question_column: str = "question",
    answer_column: str = "answer",
    max_examples: int | None = None,
    split: str = "train",
):
    """Examples from documents (chunked) or question/answer records (prompt-masked), optionally capped.

    `split` picks the split of a Hub dataset id (local files have one).
    """
    if data_format == "documents":
        examples = chunk_documents(source, tokenizer, max_length=max_length, text_column=text_column, split=split)
    elif data_format == "qa":
        examples = build_qa_dataset(source, tokenizer, question_column, answer_column, max_length=max_length, split=split)
    else:
        raise ValueError(f"data_format={data_format!r} is unknown; use 'documents' or 'qa'.")
    if max_examples is not None:
        examples = examples.select(range(min(max_examples, len(examples))))
    return examples
