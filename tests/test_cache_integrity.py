"""The precompute cache: names keyed with the cache's own secret, owner-only permissions, verified contents."""

from __future__ import annotations

import hashlib
import logging
import os
import stat

import torch


def test_an_entry_name_cannot_be_recomputed_without_the_cache_secret(tmp_path):
    """A guesser holding the model and a candidate forget text computes both fingerprints; the name is an HMAC
    under a secret only the cache holds, so neither a plain hash nor an HMAC under another cache's secret matches."""
    from hf_unlearn.precompute import cache_key, cache_secret

    model_fp, data_fp = "m" * 64, "d" * 64
    name = cache_key("adversarial_targets", model_fp, data_fp, cache_secret(str(tmp_path / "a")))
    message = f"1|adversarial_targets|{model_fp}|{data_fp}".encode()
    assert name != hashlib.sha256(message).hexdigest()
    assert name != cache_key("adversarial_targets", model_fp, data_fp, b"")
    assert name != cache_key("adversarial_targets", model_fp, data_fp, cache_secret(str(tmp_path / "b")))
    assert name == cache_key("adversarial_targets", model_fp, data_fp, cache_secret(str(tmp_path / "a")))


def test_the_secret_and_the_entries_are_readable_by_the_owner_only(tmp_path):
    from hf_unlearn.precompute import cache_path, cache_secret, save_values

    cache = str(tmp_path / "cache")
    secret = cache_secret(cache)
    key_file = os.path.join(cache, "precomputed", ".key")
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(key_file)).st_mode) == 0o700
    path = cache_path(cache, "kind", "k")
    save_values(path, [torch.tensor([1, 2])], key="k", secret=secret)
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) & 0o077 == 0


def rewrite_values(path, values):
    """Replace the stored values, keeping the file's metadata (key, checksum): what a bit flip or an edit does."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, framework="pt") as handle:
        metadata, lengths = handle.metadata(), handle.get_tensor("lengths")
    save_file({"values": values, "lengths": lengths}, path, metadata=metadata)


def test_changed_contents_or_out_of_range_values_are_recomputed_with_a_warning(tmp_path, caplog):
    """An entry whose values changed (same lengths, same key) fails its checksum; a target id 99999 with a
    300-token vocabulary lies outside (0, 299): both are ignored with a warning naming the file, not used (an
    embedding lookup would fail with "index 99999 is out of bounds")."""
    from hf_unlearn.precompute import load_values, save_values

    path = str(tmp_path / "entry.safetensors")
    secret = b"s" * 32
    save_values(path, [torch.tensor([1, 2, 3])], key="k", secret=secret)
    assert load_values(path, "k", [3], secret, (0, 299))[0].tolist() == [1, 2, 3]
    rewrite_values(path, torch.tensor([1, 2, 4]))
    with caplog.at_level(logging.WARNING):
        assert load_values(path, "k", [3], secret) is None
    assert "checksum does not match" in caplog.text and path in caplog.text
    save_values(path, [torch.tensor([1, 99999, 3])], key="k", secret=secret)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert load_values(path, "k", [3], secret, (0, 299)) is None
    assert "outside [0, 299]" in caplog.text and path in caplog.text


def test_precompute_reads_back_its_own_entry_and_recomputes_a_damaged_one(tmp_path):
    from hf_unlearn.precompute import precompute

    calls = []

    def compute(indices):
        calls.append(list(indices))
        return [torch.tensor([i, i + 1]) for i in indices]

    dataset = [{"input_ids": [5, 6]}, {"input_ids": [7, 8]}]
    kwargs = dict(
        kind="kind",
        batch_size=2,
        cache_dir=str(tmp_path),
        model_fingerprint=lambda: "m",
        expected_lengths=[2, 2],
        value_range=(0, 10),
    )
    first = precompute(dataset, compute, **kwargs)
    assert [v.tolist() for v in precompute(dataset, compute, **kwargs)] == [v.tolist() for v in first]
    assert len(calls) == 1
    (entry,) = [
        os.path.join(root, name) for root, _, names in os.walk(tmp_path / "precomputed" / "kind") for name in names
    ]
    rewrite_values(entry, torch.tensor([9, 9, 9, 9]))
    assert [v.tolist() for v in precompute(dataset, compute, **kwargs)] == [[0, 1], [1, 2]]
    assert len(calls) == 2


def test_an_adversarial_target_outside_the_vocabulary_is_recomputed_not_used(
    trained_model_dir, forget_data, tokenizer, tmp_path, caplog
):
    """An entry with a valid checksum (as a stale or buggy writer under the cache's secret leaves it) whose target
    id 99999 lies outside the vocabulary: the adversarial objective ignores it with a warning naming the file and
    recomputes the targets (an embedding lookup would fail with "index 99999 is out of bounds")."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from hf_unlearn import get_method
    from hf_unlearn.precompute import cache_secret, save_values
    from tests.conftest import unlearning_args

    cache = tmp_path / "cache"
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)

    def targets(out):
        trainer = get_method("adversarial")(
            model=model,
            args=unlearning_args("adversarial", tmp_path / out, cache_dir=str(cache)),
            train_dataset=forget_data,
            processing_class=tokenizer,
            ref_model=model,
        )
        return trainer.forget_dataset["adversarial_labels"]

    first = targets("a")
    (path,) = [str(p) for p in cache.rglob("*.safetensors")]
    with safe_open(path, framework="pt") as handle:
        key, flat, lengths = handle.metadata()["key"], handle.get_tensor("values"), handle.get_tensor("lengths")
    flat[flat != -100] = 99999  # every real target, out of range
    save_values(path, list(torch.split(flat, lengths.tolist())), key, cache_secret(str(cache)))
    with caplog.at_level(logging.WARNING):
        again = targets("b")
    assert again == first
    assert path in caplog.text and f"outside [0, {model.config.vocab_size - 1}]" in caplog.text
