"""Running a per-example function over a dataset on every process, with the same result on 1 or N processes.

Each process takes a contiguous shard of ceil(N / world_size) examples; a shorter last shard is padded by
repeating one of its examples, so that every process runs the same number of batches (DeepSpeed ZeRO-3 gathers
parameters inside each forward pass, which hangs unless every rank makes the same number of calls). Padded
results are dropped, and the shards are all-gathered in rank order, so every process ends with the full
result in dataset order (every rank can then take the same decision, e.g. to stop training).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tqdm.auto import tqdm

Item = TypeVar("Item")
Result = TypeVar("Result")


def process_layout(accelerator: Any | None) -> tuple[int, int]:
    """(process index, number of processes) of an `accelerate.Accelerator` / `PartialState`, or (0, 1) for None."""
    if accelerator is None:
        return 0, 1
    return accelerator.process_index, accelerator.num_processes


def shard_indices(num_examples: int, rank: int, world_size: int) -> tuple[list[int], int]:
    """This rank's example indices, padded to ceil(num_examples / world_size), and how many of them are real.

    Example: 5 examples on 2 ranks -> rank 0 gets [0, 1, 2] (3 real), rank 1 gets [3, 4, 4] (2 real).
    """
    if num_examples <= 0:
        raise ValueError("Cannot evaluate an empty dataset; pass at least one example.")
    per_rank = math.ceil(num_examples / world_size)
    start = min(rank * per_rank, num_examples)
    real = list(range(start, min(start + per_rank, num_examples)))
    filler = real[-1] if real else 0
    return real + [filler] * (per_rank - len(real)), len(real)


def map_batches(
    fn: Callable[[list[Item]], list[Result]],
    items: Sequence[Item],
    batch_size: int,
    accelerator: Any | None = None,
    sort_key: Callable[[Item], int] | None = None,
    progress: bool = False,
    desc: str = "evaluating",
) -> list[Result]:
    """Apply `fn` (a batch of items -> one result per item) to every item, sharded over processes.

    Args:
        fn: called on lists of at most `batch_size` items; returns one picklable result per item, or a
            function returning them, which is called after the next batch has been launched (this lets an
            accelerator run batch i + 1 while the host copies batch i's results).
        items: anything indexable with a length (a `datasets.Dataset`, a list).
        accelerator: an `accelerate.Accelerator` or `PartialState` (None: this process alone).
        sort_key: if given, each process batches its shard in decreasing `sort_key` order (e.g. length, to
            pad less); results are returned in the original order whatever it is.

    Returns:
        The results of all items in item order, on every process.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1.")
    rank, world_size = process_layout(accelerator)
    indices, num_real = shard_indices(len(items), rank, world_size)
    shard = [items[i] for i in indices]
    order = list(range(len(shard)))
    if sort_key is not None:
        order.sort(key=lambda i: -sort_key(shard[i]))
    results: list[Any] = [None] * len(shard)

    def store(batch: list[int], outputs: list | Callable[[], list]) -> None:
        outputs = outputs() if callable(outputs) else outputs
        if len(outputs) != len(batch):
            raise RuntimeError(f"The batch function returned {len(outputs)} results for {len(batch)} items.")
        for i, output in zip(batch, outputs):
            results[i] = output

    pending = None  # a deferred batch: resolved once the next one is launched, so the GPU never waits for us
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress or rank != 0):
        batch = order[start : start + batch_size]
        outputs = fn([shard[i] for i in batch])
        if pending is not None:
            store(*pending)
        pending = (batch, outputs)
    if pending is not None:
        store(*pending)
    results = results[:num_real]
    if world_size == 1:
        return results
    from accelerate.utils import gather_object

    return gather_object(results)
