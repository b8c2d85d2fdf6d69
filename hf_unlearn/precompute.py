"""Per-example values computed once from a frozen model before training, optionally cached on disk.

Adversarial targets use it today (one wrong-token id per target position); reference log-probabilities for NPO and
DPO-style methods (one number per sequence) are the next users. `precompute` does the whole job:

1. With a cache folder, the key is a fingerprint of the model's weights (`weights_fingerprint`: every parameter's
   name, dtype, shape and bytes, over all processes' shards) and of the data (`data_fingerprint`), plus the kind of
   value. An overwritten checkpoint folder or a model modified in memory gets a new key, never old values.
2. Rank 0 alone decides whether the cache holds a valid entry and tells the other processes (one decision, no
   multi-node disagreement); on a hit rank 0 reads it and broadcasts the values.
3. On a miss every process computes its share of the examples (the same number of batches on each, as ZeRO-3
   needs every rank in every forward pass), the shares are gathered, and rank 0 writes the file atomically: a
   unique temporary file in the same folder, then `os.replace`.
4. Files are safetensors (never pickle); on load the count, the per-example lengths and the key stored in the
   file are checked, and an entry that is corrupt or does not match is recomputed, with a warning.

Privacy: cached values are derived from the forget set (adversarial targets, for instance, let anyone holding the
model test a guess about the text). Without `cache_dir` nothing is written: the values live in memory for the run.
`hf-unlearn traces` lists and removes cache entries.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)

CACHE_SUBDIR = "precomputed"
FORMAT_VERSION = "1"


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy().tobytes()


def weights_fingerprint(model: torch.nn.Module, accelerator: Any | None = None) -> str:
    """A hex digest of every parameter and buffer (name, dtype, shape, bytes) of `model`, over all processes.

    Under DeepSpeed ZeRO-3 each process hashes its own partition (`ds_tensor`) and the digests are gathered in rank
    order, so the fingerprint is the same on every rank (it also depends on the partitioning, which only costs a
    cache miss). Cost: one pass over the weights (about 1 GB/s per process).
    """
    digest = hashlib.blake2b(digest_size=32)
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        local = getattr(tensor, "ds_tensor", tensor)
        digest.update(f"{name}|{tensor.dtype}|{tuple(getattr(tensor, 'ds_shape', tensor.shape))}|".encode())
        digest.update(_tensor_bytes(local))
    own = digest.hexdigest()
    if accelerator is None or accelerator.num_processes == 1:
        return own
    from accelerate.utils import gather_object

    return hashlib.blake2b("".join(gather_object([own])).encode(), digest_size=32).hexdigest()


def data_fingerprint(dataset, columns: Sequence[str] = ("input_ids", "attention_mask", "labels")) -> str:
    """A hex digest of the given columns of every example, in order."""
    digest = hashlib.blake2b(digest_size=32)
    for index in range(len(dataset)):
        example = dataset[index]
        for column in columns:
            if column in example:
                digest.update(column.encode())
                digest.update(torch.as_tensor(example[column], dtype=torch.int64).numpy().tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def cache_key(kind: str, model_fingerprint: str, dataset_fingerprint: str) -> str:
    return hashlib.sha256(f"{FORMAT_VERSION}|{kind}|{model_fingerprint}|{dataset_fingerprint}".encode()).hexdigest()


def cache_path(cache_dir: str, kind: str, key: str) -> str:
    return os.path.join(cache_dir, CACHE_SUBDIR, kind, key + ".safetensors")


def save_values(path: str, values: Sequence[torch.Tensor], key: str) -> None:
    """Write per-example 1-D tensors to `path` atomically (safetensors: the concatenation plus offsets)."""
    from safetensors.torch import save_file

    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    lengths = torch.tensor([len(v) for v in values], dtype=torch.int64)
    flat = torch.cat([v.reshape(-1) for v in values]) if values else torch.zeros(0)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".safetensors")
    os.close(handle)
    try:
        save_file({"values": flat.contiguous(), "lengths": lengths}, temporary, metadata={"key": key, "format": FORMAT_VERSION})
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load_values(path: str, key: str, expected_lengths: Sequence[int] | None) -> list[torch.Tensor] | None:
    """The values stored at `path`, or None when the file is missing, corrupt or does not match (key, lengths)."""
    from safetensors import safe_open

    if not os.path.exists(path):
        return None
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            flat, lengths = handle.get_tensor("values"), handle.get_tensor("lengths")
    except Exception as error:  # a truncated or garbled file raises several exception types
        logger.warning("Ignoring the unreadable precomputed cache file %s (%s); recomputing.", path, type(error).__name__)
        return None
    problems = []
    if metadata.get("key") != key or metadata.get("format") != FORMAT_VERSION:
        problems.append("its key or format differs")
    if int(lengths.sum()) != flat.numel():
        problems.append("its lengths do not add up")
    if expected_lengths is not None and lengths.tolist() != list(expected_lengths):
        problems.append("its per-example lengths do not match the data")
    if problems:
        logger.warning("Ignoring the precomputed cache file %s (%s); recomputing.", path, "; ".join(problems))
        return None
    return list(torch.split(flat, lengths.tolist()))


def compute_sharded(
    dataset,
    compute_batch: Callable[[list[int]], list[torch.Tensor]],
    batch_size: int,
    accelerator: Any | None = None,
) -> list[torch.Tensor]:
    """`compute_batch(indices) -> one 1-D tensor per index`, run over the dataset split across processes and
    gathered, in dataset order, on every process."""
    indices = list(range(len(dataset)))

    def run(share: list[int]) -> list[tuple[int, torch.Tensor]]:
        out = []
        for start in range(0, len(share), batch_size):
            chunk = share[start : start + batch_size]
            out += [(index, value.cpu()) for index, value in zip(chunk, compute_batch(chunk))]
        return out

    if accelerator is None or accelerator.num_processes == 1:
        return [value for _, value in run(indices)]
    from accelerate.utils import gather_object

    with accelerator.split_between_processes(indices, apply_padding=True) as share:
        mine = run(share)
    by_index = dict(gather_object(mine))  # padding repeats the last index with the same value
    return [by_index[i] for i in indices]


def precompute(
    dataset,
    compute_batch: Callable[[list[int]], list[torch.Tensor]],
    *,
    kind: str,
    batch_size: int,
    accelerator: Any | None = None,
    cache_dir: str | None = None,
    model_fingerprint: Callable[[], str] | None = None,
    expected_lengths: Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """Per-example values of `dataset` (see the module docstring), computed or read from the cache.

    Args:
        compute_batch: indices -> one 1-D tensor per index (runs the frozen model).
        kind: what the values are (e.g. "adversarial_targets"); part of the key and of the cache path.
        cache_dir: hf_unlearn's cache folder; None keeps the values in memory only (nothing is written).
        model_fingerprint: called only with a cache folder (hashing 7B weights takes seconds).
        expected_lengths: per-example lengths a valid entry must have (None: not checked).
    """
    if cache_dir is None or model_fingerprint is None:
        return compute_sharded(dataset, compute_batch, batch_size, accelerator)
    key = cache_key(kind, model_fingerprint(), data_fingerprint(dataset))
    path = cache_path(cache_dir, kind, key)
    main = accelerator is None or accelerator.is_main_process
    values = load_values(path, key, expected_lengths) if main else None
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        shared = [values]
        broadcast_object_list(shared, from_process=0)  # rank 0's decision (and values) for everyone
        values = shared[0]
    if values is not None:
        logger.info("Read %d precomputed %s values from %s.", len(values), kind, path)
        return values
    values = compute_sharded(dataset, compute_batch, batch_size, accelerator)
    if main:
        save_values(path, values, key)
        logger.warning(
            "Cached %d precomputed %s values derived from the data at %s; remove them with `hf-unlearn traces --remove`.",
            len(values), kind, path,
        )
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return values
