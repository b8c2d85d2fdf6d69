"""Shared code of the exact-retrain testbed: corpus, splits, pre-training (cached), unlearning runs, evaluation,
compute accounting and reporting. The three scripts (build.py, run_methods.py, grid.py) are thin command lines
over this module.

The testbed (full mode)
    A Llama-style model is pre-trained from scratch, with plain `transformers.Trainer`, on real text: a slice of
    the books in ../shared/data/books (KJV epistles, three Shakespeare plays, the head of one Austen novel) and
    Python standard-library modules (`sysconfig.get_paths()["stdlib"]`, *.py outside test folders), all cut into
    256-token chunks with `hf_unlearn.chunk_documents`. A few stdlib modules are the designated forget set. The
    same recipe is run a second time without the forget chunks ("retrained": what exact unlearning produces),
    and other stdlib modules that neither model ever sees are the "approximate" set (same domain, unseen).

"Same recipe" means, precisely
    - the same tokenizer (trained once, on the retrained model's corpus: it never saw the forget or approximate
      documents, so the vocabulary leaks nothing about them), the same architecture and the same initial weights
      (`build_llama(seed=...)`);
    - the same optimizer and hyperparameters: AdamW, peak learning rate, cosine schedule with the same warmup
      *ratio* over the run's own total steps, weight decay, gradient clipping, batch size in chunks, fp32;
    - the same number of epochs and the same data order: for epoch e the original's chunk order is a
      permutation of all its chunks drawn from a generator seeded by (seed, e); the retrained model reads that
      same permutation with the forget chunks deleted. Both read the concatenated epochs sequentially
      (`train_sampling_strategy="sequential"`), so every retained chunk is seen equally often and in the same
      relative order. The retrained run is shorter by exactly the forget chunks (fewer optimizer steps).

Splits (chunks)
    forget       every chunk of the forget modules (trained on by the original model only);
    approximate  chunks of held-out stdlib modules (never trained on by either model);
    retain       stdlib chunks both models were trained on (evaluation only);
    retain_train other stdlib chunks both models were trained on, disjoint from `retain`: the in-distribution
                 retain data of GA + descent / GA + KL;
    general      book chunks both models were trained on (evaluation only).

Compute
    Training FLOPs = 6 * params * tokens (forward + backward), forward-only passes (the frozen reference of
    GA + KL, the adversarial targets, the stopping rule's evaluations) = 2 * params * tokens; params counts every
    parameter (embeddings and head included: the same P on both sides of the ratio). Tokens are real (non-pad)
    tokens actually fed to the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import harness  # noqa: E402
from benchmarks.harness import document_methods, fmt, markdown_table, now, write_json  # noqa: E402, F401

# Registered methods the testbed cannot run (question/answer data only), with the reason.
SKIPPED_METHODS = harness.skipped_on_documents()

CACHE_VERSION = "v1"
DEFAULT_DATA_DIR = os.path.join(os.path.dirname(REPO), "shared", "data")
DEFAULT_RESULTS_DIR = os.path.join(REPO, "benchmarks", "results", "testbed")
SPLITS = ("forget", "approximate", "retain", "general")
# Folders of the standard library that are tests, vendored packages or generated tables.
EXCLUDED_DIRS = {
    "test",
    "tests",
    "idle_test",
    "site-packages",
    "__pycache__",
    "encodings",
    "pydoc_data",
    "lib2to3",
    "ensurepip",
}


# ============================================================================ configuration


@dataclass(frozen=True)
class TestbedConfig:
    """Everything that determines the two pre-trained models (its hash names the cache folder)."""

    name: str = "full"
    # model
    vocab_size: int = 2048
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    chunk_tokens: int = 256
    # pre-training recipe (shared by the original and the retrained model)
    epochs: int = 8
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    max_steps: int = -1  # > 0 caps the run (tiny mode only)
    # corpus: stdlib modules of min..max bytes in a seeded order. The forget and the approximate modules are the
    # first ones no larger than `small_max_bytes` (same size class, so members and non-members are alike); the
    # training code is the next modules of any size in range, up to `train_code_bytes`.
    code_min_bytes: int = 2000
    code_max_bytes: int = 12000
    small_max_bytes: int = 3500
    forget_modules: int = 5
    approximate_modules: int = 16
    train_code_bytes: int = 450000
    use_books: bool = True
    # (file, titles, max characters per document); None titles = every document of the file
    books: tuple = (
        (
            "kjv.jsonl",
            (
                "Galatians",
                "Ephesians",
                "Philippians",
                "Colossians",
                "1 Thessalonians",
                "2 Thessalonians",
                "1 Timothy",
                "2 Timothy",
                "Titus",
                "Philemon",
                "James",
                "1 Peter",
                "2 Peter",
                "1 John",
                "2 John",
                "3 John",
                "Jude",
            ),
            None,
        ),
        ("shakespeare.jsonl", ("Macbeth", "Tempest"), None),
        ("austen.jsonl", ("Persuasion",), 100000),
    )
    # evaluation / unlearning split sizes (chunks)
    max_forget_chunks: int = 24
    max_approximate_chunks: int = 64
    retain_eval_chunks: int = 48
    retain_train_chunks: int = 64
    general_eval_chunks: int = 32

    @property
    def version(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]
        py = "py%d%d" % sys.version_info[:2]
        return f"{CACHE_VERSION}-{self.name}-{py}-{digest}"


TINY = TestbedConfig(
    name="tiny",
    vocab_size=320,
    hidden_size=32,
    layers=2,
    heads=2,
    chunk_tokens=128,
    epochs=1,
    batch_size=4,
    learning_rate=3e-3,
    max_steps=3,
    code_min_bytes=1000,
    code_max_bytes=2500,
    small_max_bytes=2000,
    forget_modules=1,
    approximate_modules=1,
    train_code_bytes=12000,
    use_books=False,
    books=(),
    max_forget_chunks=16,
    max_approximate_chunks=8,
    retain_eval_chunks=8,
    retain_train_chunks=8,
    general_eval_chunks=0,
)
FULL = TestbedConfig()
# The testbed of sequential.py / scaling.py (six pre-trainings): the full testbed's model and pre-training recipe on a
# smaller corpus (stdlib code and the KJV epistles) with more forget modules, split there into successive deletion
# requests; TINY_SEQUENTIAL is its smoke-test size.
SEQUENTIAL = replace(
    FULL,
    name="sequential",
    forget_modules=8,
    train_code_bytes=140000,
    books=(FULL.books[0],),
    max_forget_chunks=64,
)
TINY_SEQUENTIAL = replace(TINY, name="tiny_sequential", forget_modules=8, max_forget_chunks=96)


def get_config(tiny: bool) -> TestbedConfig:
    return TINY if tiny else FULL


def method_settings(method: str, config: TestbedConfig) -> dict:
    """Config values a method needs to run on the testbed's model at all (everything else: its preset's defaults).
    RMU steers the output of a decoder layer (WMDP: layer 7 of 32, training the MLP down projections of layers
    5-7); the testbed's model has `config.layers`, so RMU steers the middle layer and trains its and the previous
    layer's down projections."""
    if method == "rmu":
        layer = max(1, config.layers // 2)
        return {"rmu_layer": layer, "rmu_trainable_params": rf"layers\.({layer - 1}|{layer})\.mlp\.down_proj\.weight"}
    return {}


@dataclass(frozen=True)
class UnlearnSettings:
    """Unlearning hyperparameters shared by run_methods.py and grid.py (see run_methods.py for the choice)."""

    batch_size: int = 8
    learning_rate: float = 2e-4
    epochs: float = 10.0
    retain_weight: float = 1.0


def cache_root(cache_dir: str | None = None) -> str:
    base = (
        cache_dir or os.environ.get("HF_UNLEARN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hf_unlearn")
    )
    return os.path.join(base, "testbed")


def quiet() -> None:
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    hf_logging.set_verbosity_error()


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable once per process
        torch.set_num_interop_threads(1)


# ============================================================================ corpus


def stdlib_modules(config: TestbedConfig) -> list[tuple[str, str]]:
    """(relative path, source) of stdlib *.py files outside test folders, within the size range, sorted."""
    root = sysconfig.get_paths()["stdlib"]
    found = []
    for folder, dirs, files in os.walk(root):
        parts = os.path.relpath(folder, root).split(os.sep)
        if any(p in EXCLUDED_DIRS or p.startswith("test") for p in parts if p != "."):
            dirs[:] = []
            continue
        dirs.sort()
        for name in sorted(files):
            if not name.endswith(".py") or name.startswith("test"):
                continue
            path = os.path.join(folder, name)
            if config.code_min_bytes <= os.path.getsize(path) <= config.code_max_bytes:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    found.append((os.path.relpath(path, root), handle.read()))
    return sorted(found)


def load_books(config: TestbedConfig, data_dir: str) -> list[tuple[str, str]]:
    """(title, text) of the configured book documents, in the configured order."""
    docs = []
    for filename, titles, max_chars in config.books:
        path = os.path.join(data_dir, "books", filename)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} is missing: the full testbed reads the books of ../shared/data (pass --data-dir), "
                "or run with --tiny (stdlib code only)."
            )
        by_title = {}
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                by_title[record["title"]] = record["text"]
        for title in titles or sorted(by_title):
            text = by_title[title]
            docs.append((f"{filename}:{title}", text[:max_chars] if max_chars else text))
    return docs


def assign_code(config: TestbedConfig) -> dict[str, list[tuple[str, str]]]:
    """Seeded assignment of stdlib modules to forget / approximate (small ones) and train (any size in range)."""
    modules = stdlib_modules(config)
    random.Random(config.seed).shuffle(modules)
    out: dict[str, list] = {"forget": [], "approximate": [], "train": []}
    rest = []
    for name, text in modules:
        small = len(text.encode()) <= config.small_max_bytes
        if small and len(out["forget"]) < config.forget_modules:
            out["forget"].append((name, text))
        elif small and len(out["approximate"]) < config.approximate_modules:
            out["approximate"].append((name, text))
        else:
            rest.append((name, text))
    size = 0
    for name, text in rest:
        if size >= config.train_code_bytes:
            break
        out["train"].append((name, text))
        size += len(text.encode())
    if not out["train"] or len(out["approximate"]) < config.approximate_modules:
        raise RuntimeError("Not enough stdlib modules in the size range for the testbed's corpus.")
    return out


# ============================================================================ tokenized data


def _chunks(docs: list[tuple[str, str]], tokenizer, config: TestbedConfig, source: str):
    """Chunk documents with hf_unlearn.chunk_documents; adds `doc` (document name) and `source` columns."""
    import datasets

    from hf_unlearn import chunk_documents

    parts = []
    for name, text in docs:
        chunks = chunk_documents([text], tokenizer, max_length=config.chunk_tokens)
        parts.append(chunks.add_column("doc", [name] * len(chunks)).add_column("source", [source] * len(chunks)))
    return datasets.concatenate_datasets(parts)


def corpus(config: TestbedConfig, data_dir: str):
    """Documents of every role: {"forget", "approximate", "code_train", "books"} -> list of (name, text)."""
    code = assign_code(config)
    books = load_books(config, data_dir) if config.use_books else []
    return {"forget": code["forget"], "approximate": code["approximate"], "code_train": code["train"], "books": books}


def tokenized_corpus(config: TestbedConfig, tokenizer, docs) -> dict:
    """Chunk datasets: forget, approximate, code_train, books."""
    out = {
        "forget": _chunks(docs["forget"], tokenizer, config, "forget"),
        "approximate": _chunks(docs["approximate"], tokenizer, config, "approximate"),
        "code_train": _chunks(docs["code_train"], tokenizer, config, "code"),
    }
    if docs["books"]:
        out["books"] = _chunks(docs["books"], tokenizer, config, "books")
    return out


def training_chunks(tok: dict):
    """The original model's training chunks (forget + code + books), with an `is_forget` column."""
    import datasets

    parts = [tok["forget"], tok["code_train"]] + ([tok["books"]] if "books" in tok else [])
    train = datasets.concatenate_datasets(parts)
    return train.add_column("is_forget", [s == "forget" for s in train["source"]])


def stream_order(train, config: TestbedConfig, drop_forget: bool, dropped_docs=None) -> list[int]:
    """Indices of the multi-epoch training stream: per-epoch seeded permutations (forget chunks deleted when
    `drop_forget`; only those of the forget documents named in `dropped_docs` when it is given): the one data order
    every model of the testbed shares."""
    import torch

    is_forget = train["is_forget"]
    if dropped_docs is not None:
        dropped = set(dropped_docs)
        is_forget = [f and d in dropped for f, d in zip(is_forget, train["doc"])]
    order = []
    for epoch in range(config.epochs):
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        perm = torch.randperm(len(train), generator=generator).tolist()
        order += [i for i in perm if not (drop_forget and is_forget[i])]
    return order


def evaluation_splits(config: TestbedConfig, tok: dict) -> dict:
    """forget / approximate / retain / retain_train / general chunk sets (see the module docstring)."""
    columns = ["input_ids", "attention_mask", "labels"]

    def head(dataset, count, seed):
        dataset = dataset.shuffle(seed=seed) if seed is not None else dataset
        return dataset.select(range(min(count, len(dataset)))).select_columns(columns)

    forget = tok["forget"].select_columns(columns)
    if len(forget) > config.max_forget_chunks:
        raise ValueError(
            f"{len(forget)} forget chunks > max_forget_chunks={config.max_forget_chunks}; lower forget_code_bytes."
        )
    code = tok["code_train"].shuffle(seed=config.seed + 1)
    n_eval = min(config.retain_eval_chunks, len(code) // 2)
    splits = {
        "forget": forget,
        "approximate": head(tok["approximate"], config.max_approximate_chunks, config.seed + 2),
        "retain": code.select(range(n_eval)).select_columns(columns),
        "retain_train": code.select(range(n_eval, min(len(code), n_eval + config.retain_train_chunks))).select_columns(
            columns
        ),
    }
    if "books" in tok and config.general_eval_chunks:
        splits["general"] = head(tok["books"], config.general_eval_chunks, config.seed + 3)
    return splits


# ============================================================================ pre-training (cached)


@dataclass
class Testbed:
    """Paths and metadata of a built testbed."""

    config: TestbedConfig
    root: str
    meta: dict

    @property
    def original(self) -> str:
        return os.path.join(self.root, "original")

    @property
    def retrained(self) -> str:
        return os.path.join(self.root, "retrained")

    @property
    def tokenizer_dir(self) -> str:
        return os.path.join(self.root, "tokenizer")

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.tokenizer_dir)

    def splits(self) -> dict:
        import datasets

        return {name: datasets.load_from_disk(os.path.join(self.root, "splits", name)) for name in self.meta["splits"]}


def _pretrain(args: tuple) -> dict:
    """Pre-train one model (worker: runs in its own process when building in parallel). `args`: (config, root,
    which, threads[, dropped_docs]); a `which` starting with "retrained" deletes the forget chunks (only those of
    `dropped_docs` when given)."""
    config, root, which, threads = args[:4]
    dropped_docs = args[4] if len(args) > 4 else None
    set_threads(threads)
    import datasets
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    from hf_unlearn.data import UnlearningCollator
    from hf_unlearn.testing import build_llama

    tokenizer = AutoTokenizer.from_pretrained(os.path.join(root, "tokenizer"))
    train = datasets.load_from_disk(os.path.join(root, "train_chunks"))
    order = stream_order(train, config, drop_forget=which.startswith("retrained"), dropped_docs=dropped_docs)
    stream = train.select(order).select_columns(["input_ids", "attention_mask", "labels"])
    tokens = int(sum(len(ids) for ids in stream["input_ids"]))
    model = build_llama(
        len(tokenizer), hidden_size=config.hidden_size, layers=config.layers, heads=config.heads, seed=config.seed
    )
    params = sum(p.numel() for p in model.parameters())
    steps = math.ceil(len(stream) / config.batch_size)
    if config.max_steps > 0:
        steps = min(steps, config.max_steps)
        tokens = int(
            sum(len(ids) for ids in stream.select(range(min(len(stream), steps * config.batch_size)))["input_ids"])
        )
    with tempfile.TemporaryDirectory() as scratch:
        targs = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=config.batch_size,
            num_train_epochs=1,
            max_steps=config.max_steps,
            learning_rate=config.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=config.warmup_ratio,
            weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm,
            train_sampling_strategy="sequential",
            logging_steps=max(1, steps // 20),
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            seed=config.seed,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=model, args=targs, train_dataset=stream, data_collator=UnlearningCollator(tokenizer.pad_token_id)
        )
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.train()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    out = os.path.join(root, which)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "model": which,
        "chunks": len(stream) if config.max_steps <= 0 else min(len(stream), steps * config.batch_size),
        "tokens": tokens,
        "optimizer_steps": int(trainer.state.global_step),
        "params": params,
        "flops": 6 * params * tokens,
        "wall_s": wall,
        "cpu_s": cpu,
        "threads": threads,
        "loss_curve": losses,
    }


def build(
    config: TestbedConfig,
    data_dir: str = DEFAULT_DATA_DIR,
    cache_dir: str | None = None,
    jobs: int = 2,
    log=print,
    threads: int | None = None,
) -> Testbed:
    """Build (or load from the cache) the tokenizer, the splits, the original and the retrained model."""
    root = os.path.join(cache_root(cache_dir), config.version)
    meta_path = os.path.join(root, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as handle:
            meta = json.load(handle)
        log(f"testbed {config.version}: cached in {root}")
        return Testbed(config, root, meta)
    from hf_unlearn.testing import build_tokenizer

    os.makedirs(root, exist_ok=True)
    start = time.perf_counter()
    docs = corpus(config, data_dir)
    tokenizer = build_tokenizer([t for _, t in docs["code_train"] + docs["books"]], vocab_size=config.vocab_size)
    tokenizer.save_pretrained(os.path.join(root, "tokenizer"))
    tok = tokenized_corpus(config, tokenizer, docs)
    train = training_chunks(tok)
    train.save_to_disk(os.path.join(root, "train_chunks"))
    splits = evaluation_splits(config, tok)
    for name, split in splits.items():
        split.save_to_disk(os.path.join(root, "splits", name))
    prep_s = time.perf_counter() - start
    log(
        f"testbed {config.version}: {len(train)} training chunks ({sum(train['is_forget'])} forget); "
        f"splits { ({k: len(v) for k, v in splits.items()}) }; pre-training original + retrained ({jobs} job(s)) ..."
    )
    threads = threads or (1 if jobs > 1 else 2)
    tasks = [(config, root, which, threads) for which in ("original", "retrained")]
    wall = time.perf_counter()
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
            runs = list(pool.map(_pretrain, tasks))
    else:
        runs = [_pretrain(task) for task in tasks]
    build_wall = time.perf_counter() - wall
    meta = {
        "version": config.version,
        "config": asdict(config),
        "documents": {k: [name for name, _ in v] for k, v in docs.items()},
        "document_bytes": {k: sum(len(t.encode()) for _, t in v) for k, v in docs.items()},
        "train_chunks": len(train),
        "forget_chunks_in_training": int(sum(train["is_forget"])),
        "splits": {k: len(v) for k, v in splits.items()},
        "split_tokens": {k: int(sum(len(x) for x in v["input_ids"])) for k, v in splits.items()},
        "runs": {run["model"]: run for run in runs},
        "prepare_wall_s": prep_s,
        "build_wall_s": build_wall,
        "build_jobs": jobs,
        "machine": machine_info(),
        "built": now(),
    }
    with open(meta_path + ".tmp", "w") as handle:
        json.dump(meta, handle, indent=1)
    os.replace(meta_path + ".tmp", meta_path)  # meta.json last: a folder without it is rebuilt
    log(
        f"built in {build_wall:.0f} s wall: "
        + ", ".join(
            f"{r['model']} {r['tokens']} tokens, {r['optimizer_steps']} steps, {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} s CPU"
            for r in runs
        )
    )
    return Testbed(config, root, meta)


def retrained_replica(testbed: Testbed, seed: int = 1, threads: int = 1, log=print) -> str:
    """Path of a second retrained model, `<root>/retrained_seed<seed>`, built on first use: the retrained model's
    recipe and data with another seed for the initial weights and the per-epoch data order. Two models that never
    saw the forget set differ by this much: the floor of every distance to the retrained model."""
    path = os.path.join(testbed.root, f"retrained_seed{seed}")
    run_path, lock = os.path.join(path, "run.json"), path + ".building"
    while os.path.exists(lock) and not os.path.exists(run_path):  # another process is building it
        time.sleep(10)
    if os.path.exists(run_path):
        return path
    if seed == testbed.config.seed:
        raise ValueError(f"seed={seed} is the testbed's own seed (the retrained model itself); pass another seed.")
    from dataclasses import replace

    log(f"building the retrained replica with seed {seed} in {path} (one pre-training run) ...")
    with open(lock, "w") as handle:
        handle.write(str(os.getpid()))
    try:
        run = _pretrain((replace(testbed.config, seed=seed), testbed.root, f"retrained_seed{seed}", threads))
        run["seed"] = seed
        with open(run_path + ".tmp", "w") as handle:
            json.dump(run, handle, indent=1)
        os.replace(run_path + ".tmp", run_path)  # run.json last: a folder without it is rebuilt
    finally:
        os.remove(lock)
    return path


def retrained_without(testbed: Testbed, subsets: dict, jobs: int = 2, threads: int = 1, log=print) -> dict:
    """Paths of models retrained without part of the forget set, `<root>/retrained_without_<name>` for every
    `name -> forget document names` of `subsets`: the retrained recipe (same tokenizer, initial weights, data order)
    with only those documents' chunks deleted. Missing ones are pre-trained `jobs` at a time and cached (run.json
    written last: a folder without it is rebuilt)."""
    paths = {name: os.path.join(testbed.root, f"retrained_without_{name}") for name in subsets}
    missing = [name for name, path in paths.items() if not os.path.exists(os.path.join(path, "run.json"))]
    unknown = sorted(set().union(*subsets.values()) - set(testbed.meta["documents"]["forget"])) if subsets else []
    if unknown:
        raise ValueError(
            f"{len(unknown)} document(s) of `subsets` are not forget documents of {testbed.config.version}."
        )
    if missing:
        log(f"pre-training {len(missing)} partial retrain(s) ({', '.join(missing)}), {jobs} at a time ...")
        tasks = [
            (testbed.config, testbed.root, os.path.basename(paths[name]), threads, tuple(subsets[name]))
            for name in missing
        ]
        if jobs > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
                runs = list(pool.map(_pretrain, tasks))
        else:
            runs = [_pretrain(task) for task in tasks]
        for name, run in zip(missing, runs):
            run["dropped_documents"] = len(subsets[name])
            run_path = os.path.join(paths[name], "run.json")
            with open(run_path + ".tmp", "w") as handle:
                json.dump(run, handle, indent=1)
            os.replace(run_path + ".tmp", run_path)
            log(f"{run['model']}: {run['tokens']} tokens, {run['optimizer_steps']} steps, {run['wall_s']:.0f} s wall")
    return paths


def unseen_split(testbed: Testbed, max_chunks: int | None = None):
    """A second never-seen stdlib split, disjoint from `approximate`, built on first use and cached in
    `<root>/extra_splits/unseen`: chunks of stdlib modules in the corpus's size range that neither model trained on
    and that are not approximate modules (the smallest first, like the forget and approximate modules). Methods
    that take unseen data (`unseen_dataset`) and the tuning criterion read it, so the approximate split that scores
    membership stays untouched by every choice."""
    import datasets

    path = os.path.join(testbed.root, "extra_splits", "unseen")
    if os.path.exists(os.path.join(path, "dataset_info.json")):
        return datasets.load_from_disk(path)
    config = testbed.config
    used = {name for names in testbed.meta["documents"].values() for name in names}
    unused = [(name, text) for name, text in stdlib_modules(config) if name not in used]
    unused.sort(key=lambda item: (len(item[1].encode()), item[0]))
    count = max_chunks or config.max_approximate_chunks
    docs, chunks = [], 0
    for name, text in unused:
        if chunks >= count:
            break
        docs.append((name, text))
        chunks += len(_chunks([(name, text)], testbed.tokenizer(), config, "unseen"))
    if not docs:
        raise RuntimeError("No unused stdlib module is left for the unseen split.")
    split = _chunks(docs, testbed.tokenizer(), config, "unseen")
    split = split.select(range(min(count, len(split)))).select_columns(["input_ids", "attention_mask", "labels"])
    tmp = path + ".tmp"
    split.save_to_disk(tmp)
    os.replace(tmp, path)
    return split


# ============================================================================ evaluation


def load_model(path: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    return model


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


class Reference:
    """The retrained model's per-token log-probabilities on the forget and retain splits (computed once), for
    KL(P_retrained || P_model) and |delta NLL| of any model."""

    KL_SPLITS = ("forget", "retain")

    def __init__(self, retrained, splits: dict, pad_token_id: int, batch_size: int = 8):
        self.splits, self.pad, self.batch_size = splits, pad_token_id, batch_size
        self.logprobs = {name: list(self._logprobs(retrained, splits[name])) for name in self.KL_SPLITS}

    def _batches(self, dataset):
        from hf_unlearn.data import UnlearningCollator

        collator = UnlearningCollator(pad_token_id=self.pad)
        for start in range(0, len(dataset), self.batch_size):
            rows = [dataset[i] for i in range(start, min(len(dataset), start + self.batch_size))]
            yield collator([{k: r[k] for k in ("input_ids", "attention_mask", "labels")} for r in rows])

    def _logprobs(self, model, dataset):
        import torch

        with torch.no_grad():
            for batch in self._batches(dataset):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                yield torch.log_softmax(logits.float(), dim=-1)

    def mean_kl(self, model, split: str) -> float:
        """Mean per-token KL(P_retrained || P_model) over the split's next-token positions (hf_unlearn.losses.kl_sum)."""
        import torch

        from hf_unlearn.losses import kl_sum

        total, count = 0.0, 0
        with torch.no_grad():
            for ref, batch in zip(self.logprobs[split], self._batches(self.splits[split])):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                kl, n = kl_sum(ref, logits, batch["labels"])
                total, count = total + float(kl), count + int(n)
        return total / max(count, 1)


def evaluate(
    model,
    splits: dict,
    pad_token_id: int,
    reference: Reference | None = None,
    retrained_nll: dict | None = None,
    names=SPLITS,
    texts: dict | None = None,
) -> dict:
    """Mean NLL per split, LOSS-attack AUC (forget vs approximate), every membership attack's AUC
    (`attack_auc`: LOSS, zlib with `texts`, Min-K% and Min-K%++ at K = 10..100%; forget vs approximate), the LOSS
    AUC of forget vs the unseen split when `splits` has one (`unseen_auc`), and distances to the retrained model."""
    from hf_unlearn.evaluation.membership import attack_scores
    from hf_unlearn.evaluation.metrics import roc_auc
    from hf_unlearn.evaluation.scores import score_examples

    model.eval()
    attacked = ("forget", "approximate")
    scores = {
        name: score_examples(model, splits[name], pad_token_id, batch_size=8, token_scores=name in attacked)
        for name in dict.fromkeys((*names, "unseen"))
        if name in splits
    }
    out = {"nll": {name: s.mean_nll for name, s in scores.items()}}
    out["mia_auc"] = roc_auc(-scores["forget"].example_nll.numpy(), -scores["approximate"].example_nll.numpy())
    members, nonmembers = (attack_scores(scores[name], (texts or {}).get(name)) for name in attacked)
    out["attack_auc"] = {name: roc_auc(members[name], nonmembers[name]) for name in members if name in nonmembers}
    if "unseen" in scores:
        out["unseen_auc"] = roc_auc(-scores["forget"].example_nll.numpy(), -scores["unseen"].example_nll.numpy())
    if reference is not None:
        out["kl_to_retrained"] = {name: reference.mean_kl(model, name) for name in Reference.KL_SPLITS}
    if retrained_nll is not None:
        out["abs_dnll_to_retrained"] = {
            name: abs(out["nll"][name] - retrained_nll[name]) for name in Reference.KL_SPLITS
        }
    return out


# ============================================================================ unlearning runs


@dataclass
class ComputeLog:
    """Tokens fed to the model during unlearning: with gradients (6PT) and forward-only (2PT)."""

    train_tokens: int = 0
    forward_tokens: int = 0
    detail: dict = field(default_factory=dict)

    def add(self, kind: str, what: str, tokens: int) -> None:
        if kind == "train":
            self.train_tokens += tokens
        else:
            self.forward_tokens += tokens
        self.detail[what] = self.detail.get(what, 0) + tokens

    def flops(self, params: int) -> float:
        return 6.0 * params * self.train_tokens + 2.0 * params * self.forward_tokens


def _real_tokens(batch: dict) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def counted_trainer_class(method: str, log: ComputeLog):
    """The registered trainer of `method`, counting the tokens of every training forward / backward pass."""
    from hf_unlearn import get_method

    base = get_method(method)

    class Counted(base):
        def training_step(self, model, inputs, num_items_in_batch=None):
            log.add("train", "forget", _real_tokens(inputs["forget"]))
            if "retain" in inputs and self.retain_objective is not None:
                log.add("train", "retain", _real_tokens(inputs["retain"]))
                if self.retain_objective.uses_reference_in_training():
                    log.add("forward", "reference_on_retain", _real_tokens(inputs["retain"]))
            return super().training_step(model, inputs, num_items_in_batch)

    Counted.__name__ = Counted.__qualname__ = "Counted" + base.__name__
    return Counted


def unlearn(
    testbed: Testbed,
    splits: dict,
    method: str,
    learning_rate: float,
    epochs: float,
    batch_size: int,
    target_nll: float | None = None,
    retain_weight: float | None = 1.0,
    scratch: str | None = None,
    seed: int = 0,
    unseen=None,
    start: str | None = None,
    settings: dict | None = None,
) -> tuple:
    """One unlearning run from the original model (or from the model saved at `start`, which is then also the
    frozen reference of the methods that have one). Returns (model, info) with the compute log and timings.

    The library's defaults otherwise (AdamW, cosine schedule, no weight decay) but no warmup: the paper's 3% of
    a run of at most a few dozen steps is one step at learning rate 0, a third of the shortest runs.

    `target_nll` set: the paper's stopping rule (stop once the forget NLL reaches it, checked after every step
    with hf_unlearn.callbacks.UnlearningEvalCallback; those evaluations are counted as forward passes).
    `retain_weight` None: the method's preset default. `seed`: the run's seed and its forget/retain pairing seed.
    `unseen`: same-domain data neither model saw, handed to methods whose objectives read `unseen_dataset`.
    `settings`: config values set for this run beyond the preset's (`run_methods.py --set`).
    """
    import torch

    from hf_unlearn import run_plan
    from hf_unlearn.callbacks import StoppingCriteria, UnlearningEvalCallback

    log = ComputeLog()
    tokenizer = testbed.tokenizer()
    model = load_model(start or testbed.original)
    model.train()
    trainer_class = counted_trainer_class(method, log)
    own_scratch = scratch is None
    scratch = scratch or tempfile.mkdtemp(prefix="testbed_unlearn_")
    overrides = method_settings(method, testbed.config)
    if retain_weight is not None:
        overrides["retain_weight"] = retain_weight
    overrides.update(settings or {})
    args = trainer_class.config_class(
        output_dir=os.path.join(scratch, "out"),
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        num_train_epochs=epochs,
        warmup_steps=0,
        use_cpu=True,
        report_to="none",
        seed=seed,
        pairing_seed=seed,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        cache_dir=os.path.join(scratch, "cache"),
        dataloader_num_workers=0,
        **overrides,
    )
    kwargs = {}
    plan = run_plan(args, trainer_class)
    if plan.uses_retain_data:
        kwargs["retain_dataset"] = splits["retain_train"]
    if plan.needs_reference or plan.precomputes_reference:
        kwargs["ref_model"] = start or testbed.original
    if unseen is not None and any(o.reads_unseen for o in plan.objectives):
        kwargs["unseen_dataset"] = unseen
    wall, cpu = time.perf_counter(), time.process_time()
    trainer = trainer_class(
        model=model, args=args, train_dataset=splits["forget"], processing_class=tokenizer, **kwargs
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # no per-step log lines (the logs stay in trainer.state.log_history)
    if plan.precomputes_reference:  # one pass of the original model over the forget set, before training
        log.add("forward", "precompute_on_forget", sum(len(x) for x in splits["forget"]["input_ids"]))
    if "unseen_dataset" in kwargs:
        log.add("forward", "precompute_on_unseen", sum(len(x) for x in unseen["input_ids"]))
    callback = None
    if target_nll is not None:
        callback = UnlearningEvalCallback(
            {"forget": splits["forget"]}, eval_steps=1, criteria=StoppingCriteria(target_nll=target_nll)
        ).attach(trainer)
    trainer.train()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    forget_tokens = sum(len(x) for x in splits["forget"]["input_ids"])
    evals = len(callback.history) if callback is not None else 0
    if evals:
        log.add("forward", "stopping_rule_evaluations", evals * forget_tokens)
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.eval()
    info = {
        "method": method,
        "learning_rate": learning_rate,
        "max_epochs": epochs,
        "batch_size": batch_size,
        "retain_weight": args.retain_weight if plan.uses_retain_data else None,
        "seed": seed,
        "optimizer_steps": int(trainer.state.global_step),
        "max_steps": int(trainer.state.max_steps),
        "stop_reason": callback.stop_reason if callback is not None else None,
        "forget_nll_trajectory": [r.nll["forget"] for r in callback.history] if callback is not None else None,
        "train_tokens": log.train_tokens,
        "forward_tokens": log.forward_tokens,
        "token_detail": dict(log.detail),
        "wall_s": wall,
        "cpu_s": cpu,
        "threads": torch.get_num_threads(),
    }
    del trainer
    if own_scratch:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return model, info


# ============================================================================ shared context for workers


_CONTEXT: dict = {}


def init_context(config: TestbedConfig, cache_dir: str | None, threads: int, data_dir: str = DEFAULT_DATA_DIR) -> dict:
    """Load the testbed, its splits and the retrained reference (once per process)."""
    set_threads(threads)
    if _CONTEXT.get("version") == config.version:
        return _CONTEXT
    from hf_unlearn.evaluation.membership import target_texts

    testbed = build(config, data_dir=data_dir, cache_dir=cache_dir, log=lambda *a: None)
    tokenizer = testbed.tokenizer()
    splits = testbed.splits()
    splits["unseen"] = unseen_split(testbed)
    texts = {name: target_texts(splits[name], tokenizer) for name in ("forget", "approximate")}
    retrained = load_model(testbed.retrained)
    reference = Reference(retrained, splits, tokenizer.pad_token_id)
    retrained_eval = evaluate(retrained, splits, tokenizer.pad_token_id, texts=texts)
    original = load_model(testbed.original)
    original_eval = evaluate(original, splits, tokenizer.pad_token_id, reference, retrained_eval["nll"], texts=texts)
    _CONTEXT.clear()
    _CONTEXT.update(
        version=config.version,
        testbed=testbed,
        tokenizer=tokenizer,
        splits=splits,
        reference=reference,
        retrained_eval=retrained_eval,
        original_eval=original_eval,
        params=count_params(original),
        texts=texts,
    )
    return _CONTEXT


def evaluate_model(ctx: dict, path: str) -> dict:
    """`evaluate` of the model saved at `path` against the retrained model (e.g. the retrained replica)."""
    model = load_model(path)
    return evaluate(
        model,
        ctx["splits"],
        ctx["tokenizer"].pad_token_id,
        ctx["reference"],
        ctx["retrained_eval"]["nll"],
        texts=ctx["texts"],
    )


def run_cell(task: dict) -> dict:
    """Worker entry: one unlearning run + its evaluation. `task` holds config, cache_dir, threads and the run's
    settings (method, learning_rate, epochs, batch_size, retain_weight (None: the preset's), stop, seed)."""
    ctx = init_context(task["config"], task["cache_dir"], task["threads"], task.get("data_dir", DEFAULT_DATA_DIR))
    target = ctx["original_eval"]["nll"]["approximate"] if task.get("stop") else None
    model, info = unlearn(
        ctx["testbed"],
        ctx["splits"],
        task["method"],
        task["learning_rate"],
        task["epochs"],
        task["batch_size"],
        target_nll=target,
        retain_weight=task.get("retain_weight", 1.0),
        seed=task.get("seed", 0),
        unseen=ctx["splits"]["unseen"],
        settings=task.get("settings"),
    )
    result = evaluate(
        model,
        ctx["splits"],
        ctx["tokenizer"].pad_token_id,
        ctx["reference"],
        ctx["retrained_eval"]["nll"],
        names=task.get("eval_splits", SPLITS),
        texts=ctx["texts"],
    )
    result.update(info)
    result["key"] = task.get("key")
    result["flops"] = 6.0 * ctx["params"] * info["train_tokens"] + 2.0 * ctx["params"] * info["forward_tokens"]
    return result


def run_tasks(tasks: list[dict], jobs: int, log=print, worker=None, summary=None) -> list[dict]:
    """Run unlearning tasks in `jobs` processes (one torch thread each) or in this process (jobs=1): `worker(task)`
    (default `run_cell`, a module-level function so that it pickles) for each, logging `summary(result)` (default
    `describe`) as each ends."""
    worker, summary = worker or run_cell, summary or describe
    results = []
    if jobs <= 1:
        for task in tasks:
            results.append(worker(task))
            log(summary(results[-1]))
        return results
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        for result in pool.map(worker, tasks):
            results.append(result)
            log(summary(result))
    return results


def describe(r: dict) -> str:
    nll = r["nll"]
    return (
        f"{r['method']:>12} seed={r.get('seed', 0)} lr={r['learning_rate']:.0e} steps={r['optimizer_steps']:>3}/{r['max_steps']:<3} "
        f"forget={nll['forget']:.3f} approx={nll['approximate']:.3f} retain={nll['retain']:.3f} "
        f"auc={r['mia_auc']:.3f} ({r['cpu_s']:.1f} s CPU)"
    )


# ============================================================================ reporting


def acceptance(result: dict, retrained: dict, auc_tol: float = 0.05, retain_tol: float = 0.05) -> dict:
    """The acceptance band: MIA AUC within `auc_tol` of the retrained model's and retain NLL within `retain_tol`
    (relative) of the retrained model's."""
    auc_gap = abs(result["mia_auc"] - retrained["mia_auc"])
    retain_rel = abs(result["nll"]["retain"] - retrained["nll"]["retain"]) / retrained["nll"]["retain"]
    return {
        "auc_gap": auc_gap,
        "retain_rel_gap": retain_rel,
        "auc_ok": bool(auc_gap <= auc_tol),
        "retain_ok": bool(retain_rel <= retain_tol),
        "in_band": bool(auc_gap <= auc_tol and retain_rel <= retain_tol),
        # distance to the band in units of its tolerances: <= 1 inside
        "band_distance": max(auc_gap / auc_tol, retain_rel / retain_tol),
    }


def machine_info() -> dict:
    """The testbed's machine record: `harness.machine_info()`'s CPU, software and load-average fields."""
    info = harness.machine_info()
    keys = ("cpu_model", "cpu_count", "torch", "transformers", "python", "platform", "load_average")
    return {k: info[k] for k in keys}


def command_line() -> str:
    """The command that started this process (`harness.command_line()`)."""
    return harness.command_line()


def common_arguments(parser) -> None:
    parser.add_argument("--tiny", action="store_true", help="tiny corpus (stdlib only) and model: the smoke test")
    parser.add_argument(
        "--cache-dir", default=None, help="cache root (default $HF_UNLEARN_CACHE or ~/.cache/hf_unlearn)"
    )
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="folder with books/*.jsonl (full mode)")
    parser.add_argument("--out-dir", default=DEFAULT_RESULTS_DIR, help="where the JSON / Markdown / PNG go")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes; 1 = everything in this process")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per process (default: 1 with --jobs >= 2, else 2)"
    )


def threads_for(args) -> int:
    return args.threads or (1 if args.jobs > 1 else 2)


def prepare(args, config: TestbedConfig) -> tuple[dict, int, Any, dict]:
    """What every testbed command does first: machine info, thread count, the (cached) build and the context
    (original/retrained evaluations). Returns (machine_start, threads, testbed, ctx)."""
    machine_start = machine_info()
    threads = threads_for(args)
    testbed = build(config, data_dir=args.data_dir, cache_dir=args.cache_dir, jobs=args.jobs, threads=threads)
    ctx = init_context(config, args.cache_dir, threads, args.data_dir)
    return machine_start, threads, testbed, ctx
