"""Shared fixtures: a tokenizer built in the test session, tiny Llama models from a config, tiny datasets.

Everything is offline and built here; nothing reads ../shared or the Hub.
"""

from __future__ import annotations

import concurrent.futures
import os
import random

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# `make test` runs the suite in two pytest-xdist workers on a 2-core machine: one torch thread each (and in the
# processes they launch), so that the workers do not wait on each other's threads. A plain `pytest` keeps two.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    """Files with slow or multi-process tests first, each file's tests kept together and in order: with `make test`'s
    workers (one file at a time each) the long files start early and the short ones fill in behind them."""
    slow_files = {
        item.path for item in items if item.get_closest_marker("slow") or item.get_closest_marker("multiprocess")
    }
    items.sort(key=lambda item: item.path not in slow_files)


WORDS = (
    "the quick brown fox jumps over lazy dog while a small cat sleeps near warm fire and old man reads "
    "long book about river mountain city garden winter summer light dark stone water tree bird song"
).split()


def make_documents(n: int, seed: int, min_words: int = 20, max_words: int = 60) -> list[str]:
    """Deterministic pseudo-English documents of varying length."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))) + "." for _ in range(n)]


@pytest.fixture(scope="session")
def tokenizer():
    from hf_unlearn.testing import build_tokenizer

    return build_tokenizer(make_documents(200, seed=123), vocab_size=300)


@pytest.fixture(scope="session")
def forget_data(tokenizer):
    from hf_unlearn import chunk_documents

    return chunk_documents(make_documents(8, seed=1), tokenizer, max_length=32)


@pytest.fixture(scope="session")
def retain_data(tokenizer):
    from hf_unlearn import chunk_documents

    return chunk_documents(make_documents(12, seed=2), tokenizer, max_length=32)


@pytest.fixture
def tiny_model(tokenizer):
    from hf_unlearn.testing import build_llama

    return build_llama(len(tokenizer), hidden_size=32, layers=2, heads=2)


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, tokenizer, forget_data, retain_data):
    """A tiny Llama fitted to forget + retain data (so there is something to forget), saved to disk."""
    import datasets
    from transformers import Trainer, TrainingArguments

    from hf_unlearn.data import UnlearningCollator
    from hf_unlearn.testing import build_llama

    path = str(tmp_path_factory.mktemp("trained"))
    model = build_llama(len(tokenizer), hidden_size=32, layers=2, heads=2)
    args = TrainingArguments(
        output_dir=path,
        per_device_train_batch_size=8,
        num_train_epochs=15,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        logging_strategy="no",
    )
    train = datasets.concatenate_datasets([forget_data, retain_data])
    Trainer(model=model, args=args, train_dataset=train, data_collator=UnlearningCollator(0)).train()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def unlearning_args(method: str, tmp_path, **overrides):
    """The method's config with small, fast settings for tests."""
    from hf_unlearn import config_for

    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=4,
        learning_rate=1e-3,
        warmup_steps=0,
        lr_scheduler_type="constant",
        report_to="none",
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
    values.update(overrides)
    return config_for(method, values.get("forget_loss"), values.get("retain_loss"))(**values)


def exit_worker() -> None:
    """End a torchrun test worker after its results are written: leave the process group, flush, and exit without
    interpreter teardown, where a native thread left by a library can abort a rank under load ("terminate called
    without an active exception", seen on CI-like machines) and fail a run whose work is done."""
    import sys

    from hf_unlearn.distributed import finish_distributed

    finish_distributed()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.fixture
def data(tmp_path):
    """JSONL forget, retain and approximate files of 4 documents each, for the scripts."""
    from tests._support import write_jsonl

    return {
        "forget": write_jsonl(tmp_path / "forget.jsonl", make_documents(4, seed=1)),
        "retain": write_jsonl(tmp_path / "retain.jsonl", make_documents(4, seed=2)),
        "approximate": write_jsonl(tmp_path / "approx.jsonl", make_documents(4, seed=3)),
    }


@pytest.fixture
def hub(monkeypatch):
    """Intercept every Hub call: `uploads` holds one {path in repo: bytes} per upload_folder call."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoUrl
    from huggingface_hub.utils import filter_repo_objects

    from tests._support import read_tree

    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_test")
    uploads: list[dict[str, bytes]] = []

    def create_repo(self, repo_id, *args, **kwargs):
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(
        self,
        *,
        repo_id,
        folder_path,
        path_in_repo=None,
        allow_patterns=None,
        ignore_patterns=None,
        run_as_future=False,
        **kwargs,
    ):
        files = read_tree(folder_path)
        relative = {os.path.relpath(path, folder_path).replace(os.sep, "/"): content for path, content in files.items()}
        kept = set(filter_repo_objects(relative, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        prefix = f"{path_in_repo.strip('/')}/" if path_in_repo else ""
        uploads.append({prefix + name: content for name, content in relative.items() if name in kept})
        if run_as_future:
            future = concurrent.futures.Future()
            future.set_result(None)
            return future
        return None

    def refuse(self, *args, **kwargs):
        raise AssertionError("an unexpected Hub call was made")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    for name in ("create_commit", "upload_file", "upload_large_folder"):
        monkeypatch.setattr(HfApi, name, refuse, raising=False)
    return uploads
