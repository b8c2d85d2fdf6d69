"""The embedded default job: a small, offline, end-to-end unlearning run that needs neither the Hub nor a GPU.

Data: source files of the running Python's standard library (present on every machine with Python).
- forget: four modules the model is trained on and must then forget;
- retain: eight other modules it is trained on and must keep;
- approximate: four modules it never sees (the paper's "approximate" set: what a retrained model looks like).

Model: a ~1M-parameter Llama with a byte-level BPE tokenizer, both trained here on forget + retain in about half
a minute, then cached (so the forget set really is in its "pre-training" data). The unlearning itself then runs
through the ordinary recipe path, like any real model.
"""

from __future__ import annotations

import os
import sysconfig

FORGET_MODULES = ("heapq.py", "bisect.py", "textwrap.py", "colorsys.py")
RETAIN_MODULES = ("fnmatch.py", "glob.py", "shlex.py", "string.py", "sched.py", "queue.py", "numbers.py", "keyword.py")
APPROXIMATE_MODULES = ("graphlib.py", "copy.py", "stat.py", "reprlib.py")
CHUNK_TOKENS = 128
CHUNKS_PER_SPLIT = {"forget": 32, "retain": 64, "approximate": 32}
CACHE_VERSION = "stdlib-llama-v1"


def stdlib_texts(names: tuple[str, ...]) -> list[str]:
    """Source text of standard-library modules, by file name."""
    root = sysconfig.get_paths()["stdlib"]
    texts = []
    for name in names:
        with open(os.path.join(root, name), encoding="utf-8") as handle:
            texts.append(handle.read())
    return texts


def default_splits(tokenizer, max_length: int = CHUNK_TOKENS) -> dict:
    """forget / retain / approximate chunk datasets of the embedded default job."""
    from .data import chunk_documents

    modules = {"forget": FORGET_MODULES, "retain": RETAIN_MODULES, "approximate": APPROXIMATE_MODULES}
    splits = {}
    for split, names in modules.items():
        chunks = chunk_documents(stdlib_texts(names), tokenizer, max_length=max_length)
        splits[split] = chunks.shuffle(seed=0).select(range(min(CHUNKS_PER_SPLIT[split], len(chunks))))
    return splits


def default_model_dir(cache_dir: str | None = None) -> str:
    """Path of the embedded default model, trained and saved on first use (about 30 s on 2 CPU cores)."""
    from .methods.adversarial import default_cache_dir

    path = os.path.join(default_cache_dir(cache_dir), CACHE_VERSION)
    if not os.path.exists(os.path.join(path, "config.json")):
        _train_default_model(path)
    return path


def _train_default_model(path: str) -> None:
    import tempfile

    import datasets
    from transformers import Trainer, TrainingArguments

    from .data import UnlearningCollator
    from .toy import build_llama, build_tokenizer

    all_text = stdlib_texts(FORGET_MODULES + RETAIN_MODULES + APPROXIMATE_MODULES)
    tokenizer = build_tokenizer(all_text, vocab_size=1024)
    splits = default_splits(tokenizer)
    model = build_llama(len(tokenizer), hidden_size=128, layers=4, heads=4)
    train = datasets.concatenate_datasets([splits["forget"], splits["retain"]])
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=8,
            num_train_epochs=40,
            learning_rate=3e-3,
            lr_scheduler_type="cosine",
            warmup_steps=0.05,
            logging_steps=50,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            seed=0,
        )
        print(f"Pre-training the embedded default model on {len(train)} chunks (once; cached in {path})")
        Trainer(model=model, args=args, train_dataset=train, data_collator=UnlearningCollator(tokenizer.pad_token_id)).train()
    tmp = path + ".tmp"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, path)  # a complete folder or none
