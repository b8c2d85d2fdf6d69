"""Streams: the forget set, the retain set and any further set a method trains on, as one structure.

The dataset, the collator and the trainer agree on it:

- `StreamDataset` yields `{"forget": example, "retain": example, ...}`. The forget set drives the epoch (its
  length is the dataset's); every other stream is paired with it by `pair_index`: a seeded permutation of that
  stream that advances with the epoch, so over the epochs every example of a larger retain set is used.
- `UnlearningCollator` pads each stream on its own and returns `{"forget": batch, "retain": batch, ...}` (each a
  dict of `[batch, seq]` tensors). A flat example (evaluation data, `trainer.evaluate()`) is padded as one batch.
- Each stream keeps only the columns the collator knows how to pad: `input_ids`, `attention_mask`, `labels`, and
  the per-token columns its objectives declare (e.g. `random_labels`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import torch
from torch.utils.data import Dataset as TorchDataset

from .losses import IGNORE_INDEX

FORGET, RETAIN = "forget", "retain"
BASE_COLUMNS = ("input_ids", "attention_mask", "labels")


def pair_index(position: int, epoch: int, size: int, length: int, seed: int) -> int:
    """Index into a paired stream of `size` examples for forget example `position` in `epoch`.

    The pairs walk through the stream in seeded random order: draw number d = epoch * length + position falls in
    cycle d // size, whose permutation (seeded by `seed` and the cycle) is read at d % size. Consecutive epochs
    continue where the last one stopped, so every example is used once per `size` draws. The result depends on
    the global position only, not on the number of processes.
    """
    cycle, offset = divmod(epoch * length + position, size)
    return _permutation(size, seed, cycle)[offset]


@lru_cache(maxsize=8)
def _permutation(size: int, seed: int, cycle: int) -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + cycle)
    return tuple(torch.randperm(size, generator=generator).tolist())


class StreamDataset(TorchDataset):
    """Forget examples paired with examples of every other stream; see the module docstring.

    Args:
        streams: stream name -> dataset (map-style: `datasets.Dataset`, list of dicts, torch Dataset). Must hold
            "forget"; the others are paired with it.
        columns: stream name -> the columns to keep (defaults to `BASE_COLUMNS`).
        seed: seed of the pairing permutations.
        aligned: streams built one-to-one from the forget set (e.g. "idk" answers to the forget questions): example
            i of such a stream goes with forget example i.
    """

    def __init__(
        self,
        streams: Mapping[str, Any],
        columns: Mapping[str, Sequence[str]] | None = None,
        seed: int = 0,
        aligned: Sequence[str] = (),
    ):
        if FORGET not in streams:
            raise ValueError(f"StreamDataset needs a {FORGET!r} stream; got {sorted(streams)}.")
        for name, dataset in streams.items():
            if len(dataset) == 0:
                raise ValueError(f"The {name} set is empty; pass at least one example.")
            if name in aligned and len(dataset) != len(streams[FORGET]):
                raise ValueError(
                    f"The {name} stream has {len(dataset)} examples, the forget set {len(streams[FORGET])}."
                )
        self.aligned = tuple(aligned)
        self.streams = dict(streams)
        self.columns = {name: tuple((columns or {}).get(name, BASE_COLUMNS)) for name in self.streams}
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Advance the pairing (the trainer calls this at the start of every epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.streams[FORGET])

    def _select(self, name: str, example: Mapping[str, Any]) -> dict[str, Any]:
        return {key: example[key] for key in self.columns[name] if key in example}

    def __getitem__(self, index: int) -> dict[str, dict[str, Any]]:
        item = {FORGET: self._select(FORGET, self.streams[FORGET][index])}
        for name, dataset in self.streams.items():
            if name in self.aligned:
                item[name] = self._select(name, dataset[index])
            elif name != FORGET:
                paired = pair_index(index, self.epoch, len(dataset), len(self), self.seed)
                item[name] = self._select(name, dataset[paired])
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


def is_stream_example(example: Mapping[str, Any]) -> bool:
    """Whether `example` (an item or a collated batch) is stream-structured (`{"forget": {...}, ...}`) rather than
    a flat example: every stream item has a forget part."""
    return isinstance(example.get(FORGET), Mapping)


class UnlearningCollator:
    """Pads each stream of a batch of `StreamDataset` items (or a batch of flat examples).

    Args:
        pad_token_id: id used to pad `input_ids`.
        base_collator: optional collator of the user's (e.g. `DataCollatorForLanguageModeling`), applied to each
            stream separately. Without one, `input_ids` are padded with `pad_token_id`, `attention_mask` with 0 and
            every `*labels` column with -100.
        padding_side: "right" or "left" (the losses give the same result either way).
        token_columns: extra per-token label columns (e.g. `random_labels`), padded here with -100 to the length of
            `input_ids` on the same side, whatever the base collator does.
        example_columns: per-example numbers (e.g. a reference log-probability), stacked into a float32 tensor.
    """

    def __init__(
        self,
        pad_token_id: int,
        base_collator: Callable | None = None,
        padding_side: str = "right",
        token_columns: Sequence[str] = (),
        example_columns: Sequence[str] = (),
    ):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}; use 'left' or 'right'.")
        self.pad_token_id = pad_token_id
        self.base_collator = base_collator
        self.padding_side = padding_side
        self.token_columns = tuple(token_columns)
        self.example_columns = tuple(example_columns)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if features and is_stream_example(features[0]):
            return {name: self.collate([dict(f[name]) for f in features]) for name in features[0]}
        return self.collate([dict(f) for f in features])

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad one stream's examples into a batch."""
        extra = {name: [f.pop(name) for f in features] for name in self.token_columns if name in features[0]}
        numbers = {name: [f.pop(name) for f in features] for name in self.example_columns if name in features[0]}
        if self.base_collator is not None:
            batch = dict(self.base_collator(features))
        else:
            batch = {}
            for key in features[0]:
                value = IGNORE_INDEX if key.endswith("labels") else 0 if key == "attention_mask" else self.pad_token_id
                batch[key] = pad_sequences([f[key] for f in features], value, self.padding_side)
        if "attention_mask" not in batch:
            batch["attention_mask"] = pad_sequences([[1] * len(f["input_ids"]) for f in features], 0, self.padding_side)
        if "labels" not in batch:
            batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        length = batch["input_ids"].shape[1]
        mask = batch["attention_mask"]
        side = "left" if bool((mask[:, 0] == 0).any()) else "right"  # the side the (user's) collator padded on
        for name, values in extra.items():
            batch[name] = pad_sequences(values, IGNORE_INDEX, side, length)
        for name, values in numbers.items():
            batch[name] = torch.tensor(values, dtype=torch.float32)
        return batch
