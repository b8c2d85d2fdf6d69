"""Reading raw data (files, folders, lists, `datasets.Dataset`, Hub ids) into a `datasets.Dataset` of records.

Tokenisation and chunking live in `hf_unlearn.data`; this module only reads.

Local files are read in memory (Python's `json`, `pyarrow.parquet`, plain text) and turned into an in-memory
`datasets.Dataset`: nothing is written to the `datasets` cache, and later `.map` / `.filter` calls on an in-memory
dataset write no cache files either. (`datasets.load_dataset` on a local file would leave the forget text and its
token ids behind in `~/.cache/huggingface/datasets` as `json-train.arrow` and `cache-*.arrow`.) Hub dataset ids
still go through `datasets.load_dataset` and its cache.

Errors name the file and the fix, and never quote the data (it may be the text that must go).
"""

from __future__ import annotations

import json
import os
from typing import Any

# Field names an error may quote (hf_unlearn's own); any other is counted, never shown (it can be the text itself).
NAMED_FIELDS = frozenset(
    {"text", "question", "answer", "prompt", "completion", "input_ids", "attention_mask", "labels"}
)
_FILE_FORMATS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def load_documents(source: Any, text_column: str = "text", split: str = "train"):
    """Load documents as a `datasets.Dataset` with a text column.

    `source` may be a `datasets.Dataset`, a list of strings, a path to a text / JSON Lines / Parquet file, a
    directory of such files, or a Hub dataset id (optionally "id:config", e.g. "llmunlearn/unlearn_dataset:arxiv"
    with `split="forget"`), which needs the Hub to be reachable. Every text value must be a string.
    """
    import datasets

    if isinstance(source, datasets.Dataset):
        dataset = source
    elif isinstance(source, (list, tuple)):
        _check_texts(source, text_column, "the list of documents")
        dataset = datasets.Dataset.from_dict({text_column: list(source)})
    elif isinstance(source, (str, os.PathLike)):
        dataset = load_records(str(source), split)
        if str(source).endswith(".txt") and text_column != "text":
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
            missing_field(source, dataset, text_column, "set `text_column` to the field that holds the text")
        )
    _check_texts(dataset[text_column], text_column, _describe(source))
    return dataset


def _check_texts(values, column: str, where: str) -> None:
    """Every document must be a string: name the column and the row (never the value) otherwise."""
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(
                f"Row {row} of column {column!r} in {where} is {type(value).__name__}, not text; make every "
                f"{column!r} value a string (or set `text_column` to the column that holds the text)."
            )


def _describe(source: Any) -> str:
    return repr(str(source)) if isinstance(source, (str, os.PathLike)) else type(source).__name__


def record_location(source: Any, index: int) -> str:
    """Where record `index` (from 0) of `source` is, for an error: "line N of 'file.jsonl'" for JSON Lines (blank
    lines counted), else "record N of <source>"."""
    path = str(source) if isinstance(source, (str, os.PathLike)) else None
    if path is not None and path.endswith((".jsonl", ".json")) and os.path.isfile(path):
        seen = -1
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                seen += bool(line.strip())
                if seen == index and path.endswith(".jsonl"):
                    return f"line {number} of {path!r}"
    return f"record {index + 1} of {_describe(source)}"


def missing_field(source: Any, dataset, field: str, fix: str) -> str:
    """The error for records without `field`: where the first one is and how many fields it has, never their
    names (a JSON line whose only key is the text would be quoted)."""
    others = len(dataset.column_names)
    return (
        f"The data from {_describe(source)} has no {field!r} field ({record_location(source, 0)} has {others} "
        f"other field(s), not listed: a field name can be the text itself); {fix}."
    )


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except UnicodeDecodeError as error:
        raise ValueError(
            f"Data file {path!r} is not UTF-8 text (invalid byte at position {error.start}); re-encode it as UTF-8, "
            "e.g. `iconv -f latin1 -t utf-8`."
        ) from None


def _json_records(path: str) -> list[dict]:
    """Records of a JSON Lines file, or of a .json file holding a list of records, a mapping of columns, or
    JSON Lines."""
    text = _read_text(path)
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # maybe JSON Lines in a .json file
        if isinstance(data, list):
            records = data
        elif isinstance(data, dict):
            if all(isinstance(v, list) for v in data.values()) and len({len(v) for v in data.values()}) <= 1:
                keys = list(data)
                records = [dict(zip(keys, row)) for row in zip(*data.values())]
            else:
                records = [data]
        else:
            records = _json_lines(path, text)
    else:
        records = _json_lines(path, text)
    for number, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(
                f"Record {number} of {path!r} is {type(record).__name__}, not an object; each record must be a JSON "
                'object such as {"text": "..."}.'
            )
    return records


def _mixed_types(path: str, records: list[dict]) -> str:
    """Name the first record whose field changes type (the record and the field's position), without quoting any
    value or field name (a field name can be the text itself)."""
    first: dict[str, tuple[str, int]] = {}
    for row, record in enumerate(records):
        for position, (key, value) in enumerate(record.items(), start=1):
            if value is None:
                continue
            kind = type(value).__name__
            seen = first.setdefault(key, (kind, row))
            if seen[0] != kind:
                field = repr(key) if key in NAMED_FIELDS else str(position)
                return (
                    f"Field {field} of {record_location(path, row)} is {kind} but the same field of "
                    f"{record_location(path, seen[1])} is {seen[0]}; make every value of a field the same type "
                    "(text fields: strings)."
                )
    return f"The records of {path!r} cannot form a table; give every record the same fields and value types."


def _json_lines(path: str, text: str) -> list[dict]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(
                f"Line {number} of {path!r} is not valid JSON ({error.msg} at column {error.colno}); JSON Lines "
                "files need one JSON object per line."
            ) from None
    return records


def _read_file(path: str):
    """One local file as an in-memory `datasets.Dataset` (nothing written to the datasets cache)."""
    import datasets

    kind = _FILE_FORMATS[os.path.splitext(path)[1]]
    if kind == "text":  # a .txt file is one document (not one document per line)
        return datasets.Dataset.from_dict({"text": [_read_text(path)]})
    if kind == "json":
        records = _json_records(path)
        try:
            return datasets.Dataset.from_list(records)
        except Exception:  # pyarrow's type errors quote the offending value: never show it
            raise ValueError(_mixed_types(path, records)) from None
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a damaged or non-Parquet file
        raise ValueError(
            f"Data file {path!r} is not a readable Parquet file ({type(error).__name__}); check it."
        ) from None
    return datasets.Dataset(table)


def load_records(source: str, split: str = "train"):
    """A `datasets.Dataset` from a local .txt / .jsonl / .json / .parquet file, a folder of them, or a Hub id
    ("id" or "id:config", with `split`). A .txt file is one record with a "text" field. Local files are read in
    memory (see the module docstring)."""
    import datasets

    if os.path.isdir(source):
        files = sorted(
            os.path.join(source, name) for name in os.listdir(source) if os.path.splitext(name)[1] in _FILE_FORMATS
        )
        if not files:
            raise ValueError(f"The directory {source!r} holds no .txt, .jsonl, .json or .parquet files.")
        kinds = {_FILE_FORMATS[os.path.splitext(path)[1]] for path in files}
        if len(kinds) > 1:
            raise ValueError(
                f"The directory {source!r} mixes file types ({', '.join(sorted(kinds))}); keep one type per folder."
            )
        parts = [_read_file(path) for path in files]
        parts = [part for part in parts if len(part)]
        return datasets.concatenate_datasets(parts) if parts else datasets.Dataset.from_list([])
    extension = os.path.splitext(source)[1]
    if extension in _FILE_FORMATS:
        if not os.path.exists(source):
            raise FileNotFoundError(f"Data file {source!r} does not exist; check the path.")
        return _read_file(source)
    if os.path.exists(source):
        raise ValueError(f"Unsupported data file {source!r}; use .txt, .jsonl, .json or .parquet.")
    if not looks_like_hub_id(source):  # maybe pasted text instead of a path: never echoed
        raise FileNotFoundError(
            f"The data source ({len(source)} characters, not shown) is neither an existing file or folder nor a Hub "
            "dataset id (org/name[:config]); pass the path of a .txt, .jsonl, .json or .parquet file."
        )
    name, _, config = source.partition(":")
    try:
        return datasets.load_dataset(name, config or None, split=split)
    except Exception as error:  # the Hub being unreachable surfaces as several exception types
        raise ValueError(
            f"Could not load {source!r} as a local file or a Hub dataset ({type(error).__name__}). "
            "Check the path, or that the Hub is reachable for dataset ids."
        ) from None


def looks_like_hub_id(source: str) -> bool:
    """ "org/name" or "org/name:config" in Hub id characters (what `datasets.load_dataset` takes from the Hub)."""
    import re

    return re.fullmatch(r"[\w.-]+/[\w.-]+(:[\w.-]+)?", source) is not None
