"""Reading raw data (files, folders, lists, `datasets.Dataset`, Hub ids) into a `datasets.Dataset` of records.

Tokenisation and chunking live in `hf_unlearn.data`; this module only reads.
"""

from __future__ import annotations

import os
from typing import Any

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
