"""Per-example values computed once from a frozen model before training, optionally cached on disk.

Adversarial targets use it today (one wrong-token id per target position); reference log-probabilities for NPO and
DPO-style methods (one number per sequence) are the next users. `precompute` does the whole job:

1. With a cache folder, the key is an HMAC, under the cache's own secret, of a fingerprint of the model's weights
   (`weights_fingerprint`: every parameter's name, dtype, shape and bytes, over all processes' shards), of the data
   (`data_fingerprint`) and of the kind of value. An overwritten checkpoint folder or a model modified in memory
   gets a new key, never old values. The secret (`precomputed/.key`: random, created on first use, file 0600,
   folders 0700) keeps a file name from confirming a guess: without it, anyone who can list the cache and holds
   the original model could hash a candidate forget text and look for its name.
2. Rank 0 alone decides whether the cache holds a valid entry and tells the other processes (one decision, no
   multi-node disagreement); on a hit rank 0 reads it and broadcasts the values.
3. On a miss every process computes its share of the examples (the same number of batches on each, as ZeRO-3
   needs every rank in every forward pass), the shares are gathered, and rank 0 writes the file atomically: a
   unique temporary file in the same folder, then `os.replace`.
4. Files are safetensors (never pickle); on load the count, the per-example lengths, the key stored in the file,
   a checksum of the values (an HMAC under the cache's secret) and, when given, the values' range are checked, and
   an entry that is corrupt or does not match is recomputed, with a warning naming the file.

Privacy: cached values are derived from the forget set (adversarial targets, for instance, let anyone holding the
model test a guess about the text). Without `cache_dir` nothing is written: the values live in memory for the run.
`hf-unlearn traces` lists and removes cache entries.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)

CACHE_SUBDIR = "precomputed"
FORMAT_VERSION = "1"


def _local_part(tensor: torch.Tensor) -> torch.Tensor:
    """What this process holds of `tensor`: its ZeRO-3 partition (`ds_tensor`), its FSDP2 shard (a DTensor's local
    tensor), else the tensor itself."""
    tensor = getattr(tensor, "ds_tensor", tensor)
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy().tobytes()


def weights_fingerprint(model: torch.nn.Module, accelerator: Any | None = None) -> str:
    """A hex digest of every parameter and buffer (name, dtype, shape, bytes) of `model`, over all processes.

    Under DeepSpeed ZeRO-3 and FSDP2 each process hashes its own partition (`ds_tensor`, a DTensor's local shard)
    and the digests are gathered in rank order, so the fingerprint is the same on every rank (it also depends on
    the partitioning, which only costs a cache miss). Cost: one pass over the weights (about 1 GB/s per process).
    """
    digest = hashlib.blake2b(digest_size=32)
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(getattr(tensor, 'ds_shape', tensor.shape))}|".encode())
        digest.update(_tensor_bytes(_local_part(tensor)))
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


SECRET_FILE = ".key"


def cache_secret(cache_dir: str) -> bytes:
    """The cache's secret (`<cache_dir>/precomputed/.key`), created on first use: 32 random bytes, readable by the
    owner only (0600, in a 0700 folder). Concurrent first uses agree: one creates it exclusively, the others read."""
    folder = os.path.join(cache_dir, CACHE_SUBDIR)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    path = os.path.join(folder, SECRET_FILE)
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path) as existing:
            value = existing.read().strip()
        if len(value) == 64:
            return bytes.fromhex(value)
        raise ValueError(
            f"The cache secret {path!r} is damaged; delete it (its cache entries are then recomputed)."
        ) from None
    value = secrets.token_hex(32)
    with os.fdopen(handle, "w") as new:
        new.write(value)
    return bytes.fromhex(value)


def cache_key(kind: str, model_fingerprint: str, dataset_fingerprint: str, secret: bytes = b"") -> str:
    """The entry's name: an HMAC-SHA256 under the cache's `secret` of the kind and both fingerprints."""
    message = f"{FORMAT_VERSION}|{kind}|{model_fingerprint}|{dataset_fingerprint}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def checksum(flat: torch.Tensor, lengths: torch.Tensor, secret: bytes) -> str:
    """An HMAC-SHA256 under `secret` of the stored values and lengths (their dtype and bytes)."""
    digest = hmac.new(secret, f"{flat.dtype}|".encode(), hashlib.sha256)
    digest.update(_tensor_bytes(flat))
    digest.update(_tensor_bytes(lengths))
    return digest.hexdigest()


def cache_path(cache_dir: str, kind: str, key: str) -> str:
    return os.path.join(cache_dir, CACHE_SUBDIR, kind, key + ".safetensors")


def save_values(path: str, values: Sequence[torch.Tensor], key: str, secret: bytes | None = None) -> None:
    """Write per-example 1-D tensors to `path` atomically (safetensors: the concatenation plus offsets), with a
    checksum under `secret` (the key's bytes when None), in a folder only the owner can read (0700)."""
    from safetensors.torch import save_file

    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    lengths = torch.tensor([len(v) for v in values], dtype=torch.int64)
    flat = torch.cat([v.reshape(-1) for v in values]) if values else torch.zeros(0)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".safetensors")
    os.close(handle)
    try:
        flat = flat.contiguous()
        metadata = {
            "key": key,
            "format": FORMAT_VERSION,
            "checksum": checksum(flat, lengths, secret if secret is not None else key.encode()),
        }
        save_file({"values": flat, "lengths": lengths}, temporary, metadata=metadata)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load_values(
    path: str,
    key: str,
    expected_lengths: Sequence[int] | None,
    secret: bytes | None = None,
    value_range: tuple[float, float] | None = None,
    ignore_value: float | None = None,
) -> list[torch.Tensor] | None:
    """The values stored at `path`, or None when the file is missing, corrupt or does not match: key, lengths,
    checksum under `secret` (the key's bytes when None), and every value within `value_range` (low, high), e.g.
    token ids within the vocabulary; values equal to `ignore_value` (e.g. -100, a position without a target) are
    exempt from the range."""
    from safetensors import safe_open

    if not os.path.exists(path):
        return None
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            flat, lengths = handle.get_tensor("values"), handle.get_tensor("lengths")
    except Exception as error:  # a truncated or garbled file raises several exception types
        logger.warning(
            "Ignoring the unreadable precomputed cache file %s (%s); recomputing.", path, type(error).__name__
        )
        return None
    problems = []
    if metadata.get("key") != key or metadata.get("format") != FORMAT_VERSION:
        problems.append("its key or format differs")
    if int(lengths.sum()) != flat.numel():
        problems.append("its lengths do not add up")
    if expected_lengths is not None and lengths.tolist() != list(expected_lengths):
        problems.append("its per-example lengths do not match the data")
    if not hmac.compare_digest(
        str(metadata.get("checksum", "")), checksum(flat, lengths, secret if secret is not None else key.encode())
    ):
        problems.append("its checksum does not match its values")
    checked = flat if ignore_value is None else flat[flat != ignore_value]
    if (
        value_range is not None
        and checked.numel()
        and (checked.min() < value_range[0] or checked.max() > value_range[1])
    ):
        problems.append(f"a value lies outside [{value_range[0]}, {value_range[1]}]")
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
    gathered, in dataset order, on every process (`evaluation.sharding.map_batches`, as evaluation runs)."""
    from .evaluation.sharding import map_batches

    def run(indices: list[int]) -> list[torch.Tensor]:
        return [value.cpu() for value in compute_batch(indices)]

    return map_batches(run, list(range(len(dataset))), batch_size, accelerator)


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
    value_range: tuple[float, float] | None = None,
    ignore_value: float | None = None,
) -> list[torch.Tensor]:
    """Per-example values of `dataset` (see the module docstring), computed or read from the cache.

    Args:
        compute_batch: indices -> one 1-D tensor per index (runs the frozen model).
        kind: what the values are (e.g. "adversarial_targets"); part of the key and of the cache path.
        cache_dir: hf_unlearn's cache folder; None keeps the values in memory only (nothing is written).
        model_fingerprint: called only with a cache folder (hashing 7B weights takes seconds).
        expected_lengths: per-example lengths a valid entry must have (None: not checked).
        value_range: (low, high) every cached value must lie in, e.g. (0, vocab_size - 1) for token ids.
        ignore_value: a value exempt from `value_range` (e.g. -100 where a position has no target).
    """
    if cache_dir is None or model_fingerprint is None:
        return compute_sharded(dataset, compute_batch, batch_size, accelerator)
    main = accelerator is None or accelerator.is_main_process
    secret = cache_secret(cache_dir) if main else b""
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        shared_secret = [secret]
        broadcast_object_list(shared_secret, from_process=0)
        secret = shared_secret[0]
    key = cache_key(kind, model_fingerprint(), data_fingerprint(dataset), secret)
    path = cache_path(cache_dir, kind, key)
    values = load_values(path, key, expected_lengths, secret, value_range, ignore_value) if main else None
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
        save_values(path, values, key, secret)
        logger.warning(
            "Cached %d precomputed %s values derived from the data at %s; remove them with `hf-unlearn traces --remove`.",
            len(values),
            kind,
            path,
        )
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return values
