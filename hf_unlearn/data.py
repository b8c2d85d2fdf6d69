"""Turning forget / retain data into training examples.

- Documents (the paper's setting: arXiv papers, books, code) become fixed-length chunks of `max_length` tokens
  (4096 in the paper); the last chunk of a document is kept shorter (the collator pads it) and chunks under
  `min_chunk_tokens` (5 in the released data) are dropped. Labels equal the inputs.
- Question/answer records (TOFU style) become one example each whose labels mask the question (-100), so that
  only the answer is learned or unlearned.
- `ForgetRetainDataset` pairs each forget example with a retain example, and `UnlearningCollator` pads both.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset as TorchDataset

from .losses import IGNORE_INDEX

RETAIN_PREFIX = "retain_"
_FILE_FORMATS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def load_documents(source: Any, text_column: str = "text", split: str = "train"):
    """Load documents as a `datasets.Dataset` with a text column.

    `source` may be a `datasets.Dataset`, a list of strings, a path to a text / JSON Lines / Parquet file, a
    directory of such files, or a Hub dataset id (optionally "id:config", e.g. "llmunlearn/unlearn_dataset:arxiv"
    with `split="forget"`), which needs the Hub to be reachable.
    """
    import datasets

    if isinstance(source, datasets.Dataset):
        dataset = source
    elif isinstance(source, (list, tuple)):
        dataset = datasets.Dataset.from_dict({text_column: list(source)})
    elif isinstance(source, (str, os.PathLike)):
        dataset = load_records(str(source), split)
        if isinstance(source, str) and source.endswith(".txt") and text_column != "text":
            dataset = dataset.rename_column("text", text_column)
    else:
        raise TypeError(
            f"Cannot load documents from {type(source).__name__}; pass a datasets.Dataset, a list of strings, "
            "a .txt/.jsonl/.parquet path or a Hub dataset id."
        )
    if len(dataset) == 0:
        raise ValueError(f"The data from {_describe(source)} is empty; the forget and retain sets need documents.")
    if text_column not in dataset.column_names:
        raise ValueError(
            f"The data from {_describe(source)} has no column {text_column!r} (it has {dataset.column_names}); "
            "set `text_column` to the column that holds the text."
        )
    return dataset


def _describe(source: Any) -> str:
    return repr(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__


def load_records(source: str, split: str = "train"):
    """A `datasets.Dataset` from a local .txt / .jsonl / .json / .parquet file, a folder of them, or a Hub id
    ("id" or "id:config", with `split`). A .txt file is one record with a "text" field."""
    import datasets

    if os.path.isdir(source):
        files = sorted(
            os.path.join(source, name) for name in os.listdir(source) if os.path.splitext(name)[1] in _FILE_FORMATS
        )
        if not files:
            raise ValueError(f"The directory {source!r} holds no .txt, .jsonl, .json or .parquet files.")
        builder = _FILE_FORMATS[os.path.splitext(files[0])[1]]
        if builder == "text":
            texts = [open(path, encoding="utf-8").read() for path in files]
            return datasets.Dataset.from_dict({"text": texts})
        return datasets.load_dataset(builder, data_files=files, split="train")
    extension = os.path.splitext(source)[1]
    if extension in _FILE_FORMATS:
        if not os.path.exists(source):
            raise FileNotFoundError(f"Data file {source!r} does not exist; check the path.")
        if _FILE_FORMATS[extension] == "text":
            # A .txt file is one document (not one document per line).
            with open(source, encoding="utf-8") as handle:
                return datasets.Dataset.from_dict({"text": [handle.read()]})
        return datasets.load_dataset(_FILE_FORMATS[extension], data_files=source, split="train")
    if os.path.exists(source):
        raise ValueError(f"Unsupported data file {source!r}; use .txt, .jsonl, .json or .parquet.")
    name, _, config = source.partition(":")
    try:
        return datasets.load_dataset(name, config or None, split=split)
    except Exception as error:  # the Hub being unreachable surfaces as several exception types
        raise ValueError(
            f"Could not load {source!r} as a local file or a Hub dataset ({type(error).__name__}: {error}). "
            "Check the path, or that the Hub is reachable for dataset ids."
        ) from error


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
    min_chunk_tokens: int = 5,
    add_eos: bool = True,
    num_proc: int | None = None,
    split: str = "train",
):
    """Tokenize documents and cut each into chunks of `max_length` tokens (labels = input_ids).

    Each document is cut on its own (chunks never span two documents); an EOS token ends each document when
    `add_eos`. Chunks shorter than `min_chunk_tokens` are dropped, as in the paper's released data. `split` picks the
    split of a Hub dataset id.
    """
    check_tokenizer(tokenizer)
    documents = load_documents(documents, text_column=text_column, split=split)
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []

    def chunk(batch):
        ids = tokenizer(batch[text_column], add_special_tokens=False)["input_ids"]
        out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
        for doc in ids:
            doc = doc + eos
            for start in range(0, len(doc), max_length):
                piece = doc[start : start + max_length]
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
    return chunks


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

    The prompt tokens get label -100, so NLL, gradient ascent and every metric act on the answer alone.
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
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def encode(record):
        prompt = tokenizer(prompt_template.format(question=record[question_column]), add_special_tokens=False)
        answer = tokenizer(record[answer_column], add_special_tokens=False)
        prompt_ids = prompt["input_ids"]
        input_ids = (prompt_ids + answer["input_ids"] + eos)[:max_length]
        labels = ([IGNORE_INDEX] * len(prompt_ids) + answer["input_ids"] + eos)[:max_length]
        return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}

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
