#!/usr/bin/env python
"""TOFU end to end: fine-tune, retrain exactly, unlearn with every registered method, evaluate, attack.

    python benchmarks/tofu/run.py --size tiny  --out-dir /tmp/tofu_tiny       # CI smoke run (< 60 s)
    python benchmarks/tofu/run.py --size cpu                                  # SmolLM2-135M, author subset, 2 cores
    python benchmarks/tofu/run.py --size gpu                                  # all 200 authors, forget01/05/10

The protocol (Maini et al. 2024, as open-unlearning runs it), for each forget split:

1. fine-tune the base model on `full` (all authors of the size): the "full" model (the one to unlearn);
2. fine-tune the base model on `full` minus the forget authors: the "retain" model = exact retraining;
   both are cached under `--cache-dir` in a folder keyed by a hash of everything they depend on, and reused;
3. for every method of `hf_unlearn.list_methods()`, unlearn the forget authors' QA from the full model (retain
   data = the other authors' training QA; reference model = the full model);
4. evaluate every model with TOFU's metrics (`hf_unlearn.evaluation.tofu`): forget quality = KS-test p-value of the
   forget truth ratios against the retain model's, model utility = harmonic mean of probability / ROUGE-L / truth
   ratio on retain, real authors and world facts, forget truth ratio / probability / ROUGE-L; privacy: LOSS-attack
   MIA AUC of the forget answers against holdout answers (authors never trained on) and PrivLeak = (AUC - AUC of
   the retain model) / AUC of the retain model; extraction strength (ES, teacher forced, from the truth-ratio
   scoring pass);
5. attack every model (`hf_unlearn.evaluation.attacks`): 8- and 4-bit weight-only RTN quantisation (group 128),
   re-measuring the forget metrics; relearning: fine-tune on the first half of the forget QA, measure the second;
6. write `<out-dir>/tofu_<size>.json`, `.md` and `.png` (forget quality vs model utility per method).

Only aggregate numbers are written: no question, answer, generated text or token id.

On a shared CPU pass `--threads 1`: with two torch threads on two busy cores, one forward pass took 3.5x longer
(wall) and 5x more CPU time than with one thread (the threads wait for each other at every parallel region).

Data: the Hub id `locuslab/TOFU` when reachable (`--source auto`, the default), else the vendored subset in
benchmarks/tofu/data (enough for tiny and cpu; see its SOURCE.md); `--data-dir` names a folder of TOFU's
`<config>.jsonl` files instead. Sizes: see SIZES below (each size states its deviations from open-unlearning).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import harness  # noqa: E402

VENDORED = os.path.join(HERE, "data")
RESULTS = os.path.join(ROOT, "benchmarks", "results")
HUB_ID = "locuslab/TOFU"
RECORDS_PER_AUTHOR = 20
NUM_AUTHORS = 200
# Authors of each forget split: the tail of `full` (forget01 = the last 2 authors, forget05 = 10, forget10 = 20).
FORGET_AUTHORS = {
    "forget01": tuple(range(198, 200)),
    "forget05": tuple(range(190, 200)),
    "forget10": tuple(range(180, 200)),
}
HOLDOUT = {"forget01": "holdout01", "forget05": "holdout05", "forget10": "holdout10"}

# open-unlearning's published TOFU forget10 results with Llama-3.2-1B (forget quality, model utility).
OPEN_UNLEARNING_FORGET10 = {
    "retain": (1.0, 0.59),
    "ga": (1e-239, 0.0),
    "ga_descent": (1e-239, 0.49),
    "idk_dpo": (4.6e-12, 0.23),
    "npo": (0.02, 0.46),
    "simnpo": (2.5e-203, 0.54),
    "rmu": (3.2e-15, 0.59),
}
OPEN_UNLEARNING_NAMES = {
    "ga": "GradAscent",
    "ga_descent": "GradDiff",
    "idk_dpo": "IdkDPO",
    "npo": "NPO",
    "simnpo": "SimNPO",
    "rmu": "RMU",
}


@dataclass(frozen=True)
class Phase:
    """One optimisation phase: AdamW with this learning rate, epochs (or steps), batch size."""

    learning_rate: float
    epochs: float = 1.0
    batch_size: int = 8
    steps: int | None = None  # relearning: a number of steps instead of epochs


@dataclass(frozen=True)
class Size:
    """What a size runs. `None` means "all"."""

    name: str
    model: str  # "smollm2" (SmolLM2-135M-Instruct, hf_unlearn.scripts.demo.default_model_dir) or "tiny"
    forget_splits: tuple[str, ...]
    forget_authors: int | None  # keep the first N authors of each forget split
    retain_pool: tuple[int, ...] | None  # retain authors are drawn (seeded) from these
    retain_authors: int | None  # how many retain authors
    records_per_author: int | None  # training records kept per author
    retain_eval_per_author: int | None  # retain_perturbed records per selected retain author
    eval_cap: int | None  # first N records of real_authors / world_facts
    finetune: Phase
    unlearn: Phase
    relearn: Phase
    max_new_tokens: int
    max_length: int = 256
    eval_batch_size: int = 16
    deviations: tuple[str, ...] = ()


SIZES = {
    "tiny": Size(
        name="tiny",
        model="tiny",
        forget_splits=("forget01",),
        forget_authors=1,
        retain_pool=tuple(range(12)),
        retain_authors=2,
        records_per_author=4,
        retain_eval_per_author=1,
        eval_cap=2,
        finetune=Phase(1e-3, epochs=1, batch_size=4),
        unlearn=Phase(1e-3, epochs=1, batch_size=4),
        relearn=Phase(1e-3, steps=1, batch_size=2),
        max_new_tokens=2,
        max_length=128,
        deviations=(
            "a 0.2M-parameter random Llama and a 512-token BPE trained on the subset: a smoke test of the "
            "protocol, its numbers mean nothing",
        ),
    ),
    "cpu": Size(
        name="cpu",
        model="smollm2",
        forget_splits=("forget05",),
        forget_authors=5,
        retain_pool=tuple(range(12)),
        retain_authors=6,
        records_per_author=None,
        retain_eval_per_author=3,
        eval_cap=6,
        finetune=Phase(2e-4, epochs=8, batch_size=10),
        unlearn=Phase(1e-4, epochs=1, batch_size=10),
        relearn=Phase(2e-4, steps=2, batch_size=5),
        max_new_tokens=24,
        deviations=(
            "11 authors (the first half of TOFU's forget05 = authors 190-194, and 6 seeded retain authors of TOFU "
            "authors 0-11) instead of 200: 100 forget QA, so the forget quality KS test compares 100 truth ratios "
            "with 100 (its smallest possible p-value is about 2e-59, not 1e-239); with forget01's 40 QA the fine-tuned "
            "model could not be told apart from the retain model at p <= 1e-3",
            "fine-tuning: lr 2e-4, 8 epochs, batch 10 = 176 steps for the full model (TOFU: lr 1e-5, 5 epochs, batch "
            "32) so that a 135M model learns the authors well enough for the full model to be told apart from the "
            "retain model (forget quality <= 1e-3) in minutes on 2 cores",
            "unlearning (default row): lr 1e-4, 1 epoch = 10 steps of batch 10 (open-unlearning: lr 1e-5, 10 epochs, "
            "batch 32 = 125 steps on forget10): with 10 steps at lr 1e-5 the methods barely move, so the lr is 10x "
            "higher for 12x fewer steps",
            "evaluation: 18 retain_perturbed records (3 per retain author), the first 6 real_authors and "
            "world_facts records; holdout05 split in two halves: the first 100 records are the MIA non-members, the "
            "other 100 the unseen data of tuning and of methods that take unseen data; greedy answers up to 24 new "
            "tokens for ROUGE-L",
        ),
    ),
    "gpu": Size(
        name="gpu",
        model="smollm2",
        forget_splits=("forget01", "forget05", "forget10"),
        forget_authors=None,
        retain_pool=None,
        retain_authors=None,
        records_per_author=None,
        retain_eval_per_author=None,
        eval_cap=None,
        finetune=Phase(1e-5, epochs=5, batch_size=32),
        unlearn=Phase(1e-5, epochs=10, batch_size=32),
        relearn=Phase(1e-5, steps=20, batch_size=16),
        max_new_tokens=64,
        eval_batch_size=64,
        deviations=(
            "SmolLM2-135M-Instruct instead of Llama-3.2-1B (the only model this project ships offline; a 1B "
            "model does not fit the 10-minute budget for 3 splits x every method)",
        ),
    ),
}


# ============================================================================ data


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether `locuslab/TOFU` answers within `timeout` seconds (False offline or with HF_HUB_OFFLINE=1)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    try:
        from huggingface_hub import HfApi

        HfApi().dataset_info(HUB_ID, timeout=timeout)
        return True
    except Exception:
        return False


class TofuData:
    """TOFU's configs from the Hub or a local folder of `<config>.jsonl`, with the author of each `full` record."""

    def __init__(self, source: str):
        self.source = source
        self.folder = source if os.path.isdir(source) else None
        subset = os.path.join(source, "subset.json") if self.folder else None
        if subset and os.path.exists(subset):
            with open(subset) as handle:
                self.authors_in_full = json.load(handle)["authors"]
        else:
            self.authors_in_full = list(range(NUM_AUTHORS))
        self._cache: dict[str, list[dict]] = {}

    def records(self, config: str) -> list[dict]:
        if config not in self._cache:
            if self.folder:
                path = os.path.join(self.folder, f"{config}.jsonl")
                if not os.path.exists(path):
                    raise FileNotFoundError(
                        f"{path} does not exist: the vendored subset holds only what --size tiny/cpu need; for "
                        f"--size gpu make the Hub ({HUB_ID}) reachable or pass --data-dir with TOFU's files."
                    )
                with open(path) as handle:
                    self._cache[config] = [json.loads(line) for line in handle if line.strip()]
            else:
                import datasets

                self._cache[config] = datasets.load_dataset(self.source, config, split="train").to_list()
        return self._cache[config]

    def by_author(self) -> dict[int, list[dict]]:
        full = self.records("full")
        if len(full) != RECORDS_PER_AUTHOR * len(self.authors_in_full):
            raise ValueError(f"`full` has {len(full)} records, expected {RECORDS_PER_AUTHOR} per author.")
        out: dict[int, list[dict]] = {}
        for index, record in enumerate(full):
            out.setdefault(self.authors_in_full[index // RECORDS_PER_AUTHOR], []).append(record)
        return out


@dataclass
class SplitData:
    """Everything one forget split of one size needs (records; nothing of this is written out)."""

    forget_split: str
    forget_authors: list[int]
    retain_authors: list[int]
    train_full: list[dict]
    train_retain: list[dict]
    forget_train: list[dict]
    eval_sets: dict[str, list[dict]]  # role -> perturbed records (forget, retain, real_authors, world_facts)
    holdout: list[dict]  # MIA non-members
    unseen: list[dict]  # unseen same-domain QA for tuning and unseen-data methods (disjoint from `holdout`)

    def summary(self) -> dict:
        return {
            "forget_split": self.forget_split,
            "forget_authors": self.forget_authors,
            "retain_authors": self.retain_authors,
            "train_full_records": len(self.train_full),
            "train_retain_records": len(self.train_retain),
            "forget_records": len(self.forget_train),
            "eval_records": {role: len(rows) for role, rows in self.eval_sets.items()},
            "holdout_records": len(self.holdout),
            "unseen_records": len(self.unseen),
        }


def split_data(data: TofuData, size: Size, forget_split: str, seed: int) -> SplitData:
    """Select the authors and records of one forget split at this size (seeded, the same from Hub or folder)."""
    import random

    by_author = data.by_author()
    forget = list(FORGET_AUTHORS[forget_split])[: size.forget_authors]
    pool = [
        a
        for a in (size.retain_pool if size.retain_pool is not None else sorted(by_author))
        if a not in FORGET_AUTHORS[forget_split]
    ]
    retain = sorted(random.Random(seed).sample(pool, size.retain_authors)) if size.retain_authors else pool
    missing = [a for a in forget + retain if a not in by_author]
    if missing:
        raise ValueError(f"Authors {missing} are not in {data.source}'s `full`; use the Hub or --data-dir.")
    cap = size.records_per_author

    def records(authors):
        return [r for a in authors for r in by_author[a][:cap]]

    train_retain = records(retain)
    forget_train = records(forget)
    forget_questions = {r["question"] for r in forget_train}
    forget_eval = [r for r in data.records(f"{forget_split}_perturbed") if r["question"] in forget_questions]
    author_of = {r["question"]: a for a, rows in by_author.items() for r in rows}
    counts: dict[int, int] = {}
    retain_eval = []
    for record in data.records("retain_perturbed"):
        who = author_of.get(record["question"])
        if who in retain and (size.retain_eval_per_author is None or counts.get(who, 0) < size.retain_eval_per_author):
            counts[who] = counts.get(who, 0) + 1
            retain_eval.append(record)
    if not retain_eval:
        raise ValueError("No retain_perturbed record belongs to the selected retain authors.")
    eval_sets = {
        "forget": forget_eval,
        "retain": retain_eval,
        "real_authors": data.records("real_authors_perturbed")[: size.eval_cap],
        "world_facts": data.records("world_facts_perturbed")[: size.eval_cap],
    }
    # Questions about authors never trained on, in two disjoint halves: the MIA non-members (scoring only) and the
    # unseen data that tuning and unseen-data methods see (never scored by the report's MIA).
    others = data.records(HOLDOUT[forget_split])
    half = len(others) // 2
    holdout, unseen = others[:half][: len(forget_eval)], others[half:][: len(forget_eval)]
    return SplitData(
        forget_split,
        forget,
        retain,
        records(sorted(retain + forget)),
        train_retain,
        forget_train,
        eval_sets,
        holdout,
        unseen,
    )


# ============================================================================ models


def load_base(size: Size, data: TofuData, cache_dir: str):
    """(model, tokenizer, description) of the base model of the size."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if size.model == "tiny":
        from hf_unlearn.testing import build_llama, build_tokenizer

        texts = [r[key] for r in data.records("full") for key in ("question", "answer")]
        tokenizer = build_tokenizer(texts, vocab_size=512)
        model = build_llama(len(tokenizer), seed=0)
        return model, tokenizer, f"tiny random Llama ({sum(p.numel() for p in model.parameters()):,} parameters)"
    from hf_unlearn.scripts.demo import default_model_dir

    path = default_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    return model, tokenizer, f"SmolLM2-135M-Instruct ({sum(p.numel() for p in model.parameters()):,} parameters)"


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def finetune(model, tokenizer, records: list[dict], phase: Phase, max_length: int, seed: int) -> dict:
    """Fine-tune `model` in place on QA records (prompt-masked, `build_qa_dataset`) with `transformers.Trainer`:
    AdamW, linear decay, no warmup, weight decay 0.01 (TOFU's), batch `phase.batch_size`. Returns the run info."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from hf_unlearn.data import build_qa_dataset

    examples = build_qa_dataset(records, tokenizer, max_length=max_length)
    scratch = tempfile.mkdtemp(prefix="tofu_finetune_")
    try:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=phase.batch_size,
            learning_rate=phase.learning_rate,
            num_train_epochs=phase.epochs,
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.01,
            save_strategy="no",
            report_to="none",
            logging_steps=10,
            seed=seed,
            disable_tqdm=True,
            use_cpu=device_name() == "cpu",
            dataloader_num_workers=0,
        )
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=collator)
        _quiet(trainer)
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        return {
            "records": len(records),
            "optimizer_steps": int(trainer.state.global_step),
            "wall_s": wall,
            "last_logged_loss": losses[-1] if losses else None,
            **dataclasses.asdict(phase),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _quiet(trainer) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_finetune(name: str, size: Size, data: TofuData, records: list[dict], cache_dir: str, seed: int, log):
    """The base model fine-tuned on `records`, from `cache_dir/<name>-<key>` when there, else trained and saved.

    The key hashes the size's model and fine-tuning settings, the seed and the training records (questions and
    answers hashed, never stored)."""
    import torch
    from transformers import AutoModelForCausalLM

    digest = hashlib.sha256("".join(r["question"] + "\x00" + r["answer"] for r in records).encode()).hexdigest()
    key = cache_key(size.model, dataclasses.asdict(size.finetune), size.max_length, seed, digest)
    folder = os.path.join(cache_dir, f"{size.name}-{name}-{key}")
    info_path = os.path.join(folder, "finetune_info.json")
    if os.path.exists(info_path) and size.model != "tiny":
        from transformers import AutoTokenizer

        from hf_unlearn.scripts.demo import default_model_dir

        tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
        description = f"SmolLM2-135M-Instruct ({sum(p.numel() for p in model.parameters()):,} parameters)"
        with open(info_path) as handle:
            info = dict(json.load(handle), cached=True)
        log(f"{name}: reused {folder}")
        return model, tokenizer, description, info
    base, tokenizer, description = load_base(size, data, cache_dir)
    torch.manual_seed(seed)
    info = finetune(base, tokenizer, records, size.finetune, size.max_length, seed)
    base.eval()
    if size.model != "tiny":  # the tiny size (seconds) is never cached
        os.makedirs(folder, exist_ok=True)
        base.save_pretrained(folder)
        with open(info_path, "w") as handle:
            json.dump(info, handle)
    log(f"{name}: fine-tuned {info['optimizer_steps']} steps in {info['wall_s']:.0f} s")
    return base, tokenizer, description, dict(info, cached=False)


# ============================================================================ evaluation


def nan_to_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Evaluator:
    """TOFU metrics, privacy and extraction of one model on one split (aggregate numbers only)."""

    def __init__(self, split: SplitData, tokenizer, size: Size):
        from hf_unlearn.data import build_qa_dataset
        from hf_unlearn.evaluation.tofu import tofu_splits

        self.split, self.tokenizer, self.size = split, tokenizer, size
        self.splits = tofu_splits(split.forget_split)
        self.holdout = build_qa_dataset(split.holdout, tokenizer, max_length=size.max_length)
        half = len(split.forget_train) // 2
        self.relearn_records, self.heldout_records = split.forget_train[:half], split.forget_train[half:]
        heldout_questions = {r["question"] for r in self.heldout_records}
        self.heldout_eval = [r for r in split.eval_sets["forget"] if r["question"] in heldout_questions]
        self.relearn_examples = build_qa_dataset(self.relearn_records, tokenizer, max_length=size.max_length)
        # The retain model's values (set after evaluating it): forget truth ratios (on the whole forget set and on
        # its held-out half), MIA AUC and the MIA scores (forget answers, holdout answers) behind it.
        self.retain_truth_ratios = None
        self.retain_heldout_ratios = None
        self.retain_auc = None
        self.retain_members = None
        self.retain_nonmembers = None

    REFERENCES = ("retain_truth_ratios", "retain_heldout_ratios", "retain_auc", "retain_members", "retain_nonmembers")

    def references(self) -> dict:
        """The retain model's values that every other model is compared with (numbers only)."""
        return {name: getattr(self, name) for name in self.REFERENCES}

    def set_references(self, references: dict) -> None:
        for name in self.REFERENCES:
            setattr(self, name, references[name])

    def set_retain_reference(self, measured: dict, scores: dict) -> None:
        """The retain model's values from its `measure`; its held-out-half truth ratios from the same scores (the
        held-out records are a subset of the forget evaluation set), None when a record was left out of them."""
        self.retain_truth_ratios = scores["forget"].truth_ratios
        self.retain_auc = measured["mia_auc"]
        self.retain_members, self.retain_nonmembers = measured["_mia_scores"]
        index = self.heldout_index(scores["forget"])
        self.retain_heldout_ratios = None if index is None else scores["forget"].truth_ratios[index]

    def heldout_index(self, forget_scores) -> list[int] | None:
        """Positions of the held-out half's records in `forget_scores` (None when a record was left out of them,
        so that positions no longer align with the records)."""
        if forget_scores.records_without_targets:
            return None
        held = {r["question"] for r in self.heldout_eval}
        return [i for i, r in enumerate(self.split.eval_sets["forget"]) if r["question"] in held]

    def score(self, model, role: str, records=None, generate: bool = True):
        from hf_unlearn.evaluation.tofu import score_tofu_split

        split = next(s for s in self.splits if s.role == role)
        return score_tofu_split(
            model,
            self.tokenizer,
            records if records is not None else self.split.eval_sets[role],
            split,
            max_length=self.size.max_length,
            batch_size=self.size.eval_batch_size,
            generate=generate,
            max_new_tokens=self.size.max_new_tokens,
        )

    def measure(self, model) -> tuple[dict, dict]:
        """Everything of an evaluation that needs the model: (numbers, TofuScores by role). The numbers hold the
        MIA AUC with its interval, ES and, privately, the MIA scores (`_mia_scores`, for `compare`)."""
        scores = {split.role: self.score(model, split.role) for split in self.splits}
        measured = dict(
            self.membership(model, scores["forget"]), extraction_strength=mean_extraction_strength(scores["forget"])
        )
        return measured, scores

    def membership(self, model, forget_scores) -> dict:
        """The LOSS attack, forget answers (from `forget_scores`) against holdout answers: its AUC with a 95%
        bootstrap interval and, privately, the scores behind it (`_mia_scores`)."""
        from hf_unlearn.evaluation.metrics import roc_auc
        from hf_unlearn.evaluation.scores import score_examples
        from hf_unlearn.evaluation.uncertainty import bootstrap_auc, interval

        holdout = score_examples(model, self.holdout, self.tokenizer.pad_token_id, self.size.eval_batch_size)
        members, nonmembers = -forget_scores.answer_nll, -holdout.example_nll.numpy()
        return {
            "mia_auc": roc_auc(members, nonmembers),
            "mia_auc_interval": list(interval(bootstrap_auc, members, nonmembers)),
            "_mia_scores": (members, nonmembers),
        }

    def against_retain(self, membership: dict) -> dict:
        """PrivLeak and the AUC gap to the retain model's (a paired bootstrap interval: the same resampled records
        under both models) of a `membership` result; {} before the retain model's references are set."""
        from hf_unlearn.evaluation.metrics import privleak
        from hf_unlearn.evaluation.uncertainty import bootstrap_auc, percentile_interval

        if self.retain_auc is None:
            return {}
        out = {"privleak": privleak(membership["mia_auc"], self.retain_auc)}
        members, nonmembers = membership["_mia_scores"]
        if (members.size, nonmembers.size) == (self.retain_members.size, self.retain_nonmembers.size):
            gaps = bootstrap_auc(members, nonmembers) - bootstrap_auc(self.retain_members, self.retain_nonmembers)
            out["mia_auc_gap"] = [membership["mia_auc"] - self.retain_auc, *percentile_interval(gaps)]
        return out

    def compare(self, measured: dict, scores: dict) -> dict:
        """Every TOFU metric of a measured model, against the retain model's references when set (forget quality,
        PrivLeak, the AUC gap with a paired bootstrap interval); the private MIA scores are left out."""
        from hf_unlearn.evaluation.tofu import tofu_metrics

        return dict(
            tofu_metrics(scores, self.splits, self.retain_truth_ratios),
            **{k: measured[k] for k in ("mia_auc", "mia_auc_interval", "extraction_strength")},
            **self.against_retain(measured),
        )

    def full(self, model) -> tuple[dict, dict]:
        """Every TOFU metric + MIA + ES of `model` (`measure`, then `compare`). Returns (metrics, TofuScores by
        role)."""
        measured, scores = self.measure(model)
        return self.compare(measured, scores), scores

    def forget_only(self, model, records=None, reference_ratios=None) -> dict:
        """Teacher-forced forget metrics (no generation): forget quality vs the retain model, truth ratio, Prob.,
        ES; on `records` (default: the forget evaluation set)."""
        scores = self.score(model, "forget", records, generate=False)
        return self.forget_metrics(scores, reference_ratios, whole=records is None)

    def forget_metrics(self, scores, reference_ratios=None, whole: bool = True) -> dict:
        """`forget_only`'s numbers from a forget scoring pass (ES only for the `whole` forget evaluation set)."""
        from hf_unlearn.evaluation.metrics import answer_probability, forget_quality, truth_ratio_score

        reference = self.retain_truth_ratios if reference_ratios is None else reference_ratios
        out = {
            "forget_truth_ratio": truth_ratio_score(scores.truth_ratios, forget=True),
            "forget_probability": answer_probability(scores.answer_nll),
        }
        if reference is not None:
            out["forget_quality"] = forget_quality(scores.truth_ratios, reference)
        if whole:
            out["extraction_strength"] = mean_extraction_strength(scores)
        return out

    def seed_metrics(self, model) -> dict:
        """What a further seed of a method reports: the teacher-forced forget metrics and the LOSS attack with its
        gap to the retain model's (no generation, no utility sets)."""
        scores = self.score(model, "forget", generate=False)
        membership = self.membership(model, scores)
        return dict(
            self.forget_metrics(scores),
            **{k: membership[k] for k in ("mia_auc", "mia_auc_interval")},
            **self.against_retain(membership),
        )

    def forget_from_scores(self, metrics: dict, forget_scores) -> tuple[dict, dict]:
        """The attacks' "before" values from a `full` evaluation (no second scoring pass): on the whole forget
        set, and on its held-out half (the records of `heldout_eval`, a subset of the forget evaluation set)."""
        from hf_unlearn.evaluation.metrics import answer_probability, forget_quality, truth_ratio_score

        whole = {
            "forget_truth_ratio": metrics["forget"]["truth_ratio"],
            "forget_probability": metrics["forget"]["probability"],
            "extraction_strength": metrics["extraction_strength"],
        }
        if metrics.get("forget_quality") is not None:
            whole["forget_quality"] = metrics["forget_quality"]
        index = self.heldout_index(forget_scores)
        if index is None:  # the kept records no longer align with the records: rescore
            return whole, None
        ratios = forget_scores.truth_ratios[index]
        half = {
            "forget_truth_ratio": truth_ratio_score(ratios, forget=True),
            "forget_probability": answer_probability(forget_scores.answer_nll[index]),
        }
        if self.retain_heldout_ratios is not None:
            half["forget_quality"] = forget_quality(ratios, self.retain_heldout_ratios)
        return whole, half

    def attacks(self, model, before: tuple[dict, dict | None]) -> dict:
        from hf_unlearn.evaluation.attacks import quantization_attack, relearning_attack

        quant = quantization_attack(model, self.forget_only, bits=(8, 4), group_size=128, before=before[0])
        phase = self.size.relearn
        relearn = relearning_attack(
            model,
            self.relearn_examples,
            lambda m: self.forget_only(m, self.heldout_eval, self.retain_heldout_ratios),
            self.tokenizer.pad_token_id,
            steps=phase.steps,
            learning_rate=phase.learning_rate,
            batch_size=phase.batch_size,
            seed=0,
            before=before[1],
        )
        return {"quantization": quant, "relearning": relearn}


def mean_extraction_strength(scores) -> float:
    """The mean extraction strength of the true answers of a TOFU scoring pass (`TofuScores`)."""
    import numpy as np

    return float(np.nanmean(scores.extraction_strength))


# ============================================================================ unlearning


# Tuning (the tuned rows): the criterion of `hf-unlearn tune` (`hf_unlearn.tuning.TuningCriterion`: every attack's
# AUC interval, forget QA vs unseen QA, contains 0.5; retain NLL within 10%) over a grid of learning rates (the
# default's times these factors) and evaluations every TUNE_EVAL_STEPS steps; the cheapest setting that meets it
# (fewest steps, then the lower retain NLL). The grid runs in order of cost: a higher rate only when the default rate
# never met the criterion within its schedule. Each trajectory ends at its first evaluation that meets the criterion,
# over-unlearns or breaks the retain limit, as a tuner's trial does. Only user-side data: forget, unseen, retain QA.
TUNE_LR_FACTORS = (1.0, 3.0)
TUNE_EVAL_STEPS = 5
# The criterion's evaluations read every other forget and unseen QA (50 each at the cpu size) and 20 retain
# training QA, evenly spread: one evaluation costs about a tenth of the report's full evaluation.
TUNE_EVERY_NTH_QA = 2
TUNE_RETAIN_RECORDS = 20
TUNING_CRITERION_TEXT = (
    "every attack's AUC interval (forget vs unseen QA) contains 0.5, retain NLL within 10% of the start (at least "
    "+0.05 nats)"
)


@dataclass
class Trajectory:
    """One learning rate's evaluations under the tuning criterion, and the weights of its first that met it."""

    learning_rate: float
    points: list[dict]
    epochs: float | None = None  # the schedule's length (None: the size's unlearning epochs)
    met_step: int | None = None
    met_state: dict | None = None
    met_point: dict | None = None


def tuning_splits(split: SplitData, tokenizer, size: Size) -> dict:
    """The tuning criterion's splits: every `TUNE_EVERY_NTH_QA`-th forget QA and unseen QA (holdout's second half)
    and `TUNE_RETAIN_RECORDS` retain training QA."""
    from hf_unlearn.data import build_qa_dataset

    def build(records):
        return build_qa_dataset(records, tokenizer, max_length=size.max_length)

    retain = split.train_retain[:: max(1, len(split.train_retain) // TUNE_RETAIN_RECORDS)][:TUNE_RETAIN_RECORDS]
    return {
        "forget": build(split.forget_train[::TUNE_EVERY_NTH_QA]),
        "approximate": build(split.unseen[::TUNE_EVERY_NTH_QA]),
        "retain": build(retain),
    }


def trajectory_callbacks(
    splits: dict, learning_rate: float, stop: bool, epochs: float | None = None, starts: dict | None = None
):
    """(monitor, recorder, trajectory): the tuner's evaluation callback (attacks with intervals; with `stop`, the
    tuner's stopping rule; the start evaluation shared through `starts` between trajectories from the same weights)
    and a callback that follows it, recording each evaluation's status under the tuning criterion and keeping a CPU
    copy of the weights at the first that met it."""
    from transformers import TrainerCallback

    from hf_unlearn.tuning import MET, SharedStartEvalCallback, TuningCriterion, strongest

    criterion = TuningCriterion()
    monitor = SharedStartEvalCallback(
        splits,
        eval_steps=TUNE_EVAL_STEPS,
        criteria=criterion.stopping_criteria() if stop else None,
        batch_size=16,
        attacks="all",
        n_resamples=1000,
        seed=0,
        starts={} if starts is None else starts,
    )
    trajectory = Trajectory(learning_rate, [], epochs)

    class Recorder(TrainerCallback):
        seen = 1  # history[0] is the start (the original model)
        ended = False

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if len(monitor.history) <= self.seen:
                return
            record = monitor.history[-1]
            self.seen = len(monitor.history)
            status = criterion.status(record, monitor.start)
            top = strongest(record)
            point = {
                "step": record.step,
                "status": status or "not forgotten",
                "strongest": top,
                "loss_auc": record.attacks["loss"],
                "nll": dict(record.nll),
                "distance": criterion.distance(record, monitor.start),
            }
            if not self.ended:
                trajectory.points.append(point)
            if status is not None and not self.ended:
                self.ended = True  # a trial ends here: later evaluations are not candidates
                if status == MET:
                    trajectory.met_step, trajectory.met_point = record.step, point
                    trajectory.met_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    return monitor, Recorder(), trajectory


def unlearn(
    method: str,
    full_dir_or_model,
    reference,
    tokenizer,
    split: SplitData,
    size: Size,
    seed: int,
    learning_rate: float | None = None,
    callbacks: tuple = (),
    epochs: float | None = None,
):
    """One unlearning run of `method` from a fresh copy of the full model (at `learning_rate` for `epochs`, default
    the size's; `callbacks` added in order, an evaluation callback first). Returns (model, info)."""
    import torch

    from hf_unlearn import get_method, run_plan
    from hf_unlearn.data import build_qa_dataset

    trainer_class = get_method(method)
    model = copy.deepcopy(full_dir_or_model)
    model.requires_grad_(True)  # the copy of a model that may have been frozen as a reference
    model.train()
    forget = build_qa_dataset(split.forget_train, tokenizer, max_length=size.max_length)
    retain = build_qa_dataset(split.train_retain, tokenizer, max_length=size.max_length)
    scratch = tempfile.mkdtemp(prefix="tofu_unlearn_")
    try:
        phase = size.unlearn
        args = trainer_class.config_class(
            output_dir=os.path.join(scratch, "out"),
            per_device_train_batch_size=phase.batch_size,
            learning_rate=learning_rate or phase.learning_rate,
            num_train_epochs=epochs or phase.epochs,
            warmup_steps=0,
            seed=seed,
            use_cpu=device_name() == "cpu",
            report_to="none",
            logging_steps=1,
            save_strategy="no",
            disable_tqdm=True,
            cache_dir=os.path.join(scratch, "cache"),
            dataloader_num_workers=0,
            max_length=size.max_length,
        )
        layers = getattr(model.config, "num_hidden_layers", None)
        if getattr(args, "rmu_layer", None) is not None and layers is not None and args.rmu_layer >= layers:
            # The tiny model has 2 layers; RMU's default (layer 7, train layers 5-7) is for real models.
            args.rmu_layer = layers - 1
            args.rmu_trainable_params = rf"layers\.({'|'.join(str(i) for i in range(layers))})\.mlp\.down_proj\.weight"
        plan = run_plan(args, trainer_class)
        kwargs = {"retain_dataset": retain} if plan.uses_retain_data else {}
        if any(objective.reads_unseen for objective in plan.objectives):
            kwargs["unseen_dataset"] = build_qa_dataset(split.unseen, tokenizer, max_length=size.max_length)
        torch.manual_seed(seed)
        start = time.perf_counter()
        trainer = trainer_class(
            model=model, args=args, train_dataset=forget, processing_class=tokenizer, ref_model=reference, **kwargs
        )
        _quiet(trainer)
        for callback in callbacks:
            if hasattr(callback, "attach"):
                callback.attach(trainer)
            else:
                trainer.add_callback(callback)
        trainer.train()
        wall = time.perf_counter() - start
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.eval()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        info = {
            "optimizer_steps": int(trainer.state.global_step),
            "learning_rate": args.learning_rate,
            "wall_s": wall,
            "final_loss": nan_to_none(losses[-1]) if losses else None,
            "diverged": any(not math.isfinite(x) for x in losses),
            "retain_weight": args.retain_weight if plan.uses_retain_data else None,
            "forget_weight": args.forget_weight,
            "beta": getattr(
                args, {"npo": "npo_beta", "idk_dpo": "dpo_beta", "simnpo": "simnpo_beta"}.get(method, ""), None
            ),
        }
        del trainer
        return model, info
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def tuning_grid() -> list[tuple[float, float | None]]:
    """(learning-rate factor, epochs) after the default row's own trajectory: the higher rates at the size's schedule."""
    return [(factor, None) for factor in TUNE_LR_FACTORS[1:]]


def select_tuned(trajectories: list[Trajectory]) -> Trajectory | None:
    """The cheapest trajectory that met the tuning criterion (fewest steps, then the lower retain NLL), or None."""
    met = [t for t in trajectories if t.met_step is not None]
    return min(met, key=lambda t: (t.met_step, t.met_point["nll"]["retain"]), default=None)


# ============================================================================ report


def machine_info() -> dict:
    """The TOFU report's machine record: `harness.machine_info()`'s fields, the device and torch's thread count."""
    import torch

    info = harness.machine_info()
    return {
        **{k: info[k] for k in ("cpu_count", "platform", "python", "torch", "transformers")},
        "device": device_name(),
        "torch_threads": torch.get_num_threads(),
        "gpu": info["gpu"],
        "load_average_start": info["load_average"],
    }


# Table cells: scientific notation from 1e4 up.
fmt = functools.partial(harness.fmt, large=1e4)


def markdown(report: dict) -> str:
    size = report["size"]
    lines = [
        f"# TOFU end to end ({size['name']})",
        "",
        f"Command `{report['command']}`; {report['date']}; wall time {report['wall_s']:.0f} s "
        f"({report['wall_s'] / 60:.1f} min); machine: {report['machine']['platform']}, {report['machine']['cpu_count']}"
        f" cores, device {report['machine']['device']}{' ' + report['machine']['gpu'] if report['machine']['gpu'] else ''}"
        f", {report.get('workers', 1)} process(es) of {report.get('method_threads') or report['machine']['torch_threads']}"
        " torch thread(s) for the methods"
        f", torch {report['machine']['torch']}, transformers {report['machine']['transformers']}; load average at "
        f"start {', '.join(f'{x:.1f}' for x in report['machine']['load_average_start'])} (shared machine: wall times "
        f"are not benchmarks). Model: {report['model']}. Data: {report['data_source']}.",
        "",
        "Hyperparameters: fine-tuning (full and retain models) "
        + phase_text(size["finetune"])
        + "; unlearning "
        + phase_text(size["unlearn"])
        + ", cosine schedule, no warmup, alpha = gamma = 1 (forget and retain weights), "
        "beta 0.1 for NPO and IdkDPO, SimNPO beta 4.5, other method parameters at hf_unlearn's defaults "
        "(open-unlearning's where the method is theirs); relearning attack: "
        + phase_text(size["relearn"])
        + " on the first half of the forget QA, measured on the second half; quantisation: weight-only RTN, "
        "symmetric, group 128, every linear layer but the output head.",
        "",
        "Deviations from open-unlearning: " + "; ".join(size["deviations"]) + ".",
        "",
    ]
    if not report.get("finished"):
        lines += ["**Unfinished run**: this file is rewritten as the run goes; '-' = not measured yet.", ""]
    if report.get("skipped"):
        lines += [f"Skipped for the time limit (--max-wall-s): {', '.join(report['skipped'])}.", ""]
    for split_name, split in report["splits"].items():
        lines += [f"## {split_name}", "", "Data: " + json.dumps(split["data"]), ""]
        header = [
            "model",
            "FQ",
            "MU",
            "forget TR",
            "forget Prob",
            "forget ROUGE",
            "MIA AUC",
            "PrivLeak",
            "ES",
            "FQ 8-bit",
            "FQ 4-bit",
            "Prob 4-bit",
            "relearn FQ",
            "relearn Prob",
            "lr",
            "steps",
            "train s",
        ]
        rows = []
        for name, row in split["rows"].items():
            m, a = row["metrics"], row.get("attacks", {})
            quant, rel = a.get("quantization", {}), a.get("relearning", {})
            rows.append(
                [
                    name,
                    fmt(m.get("forget_quality")),
                    fmt(m.get("model_utility")),
                    fmt(m["forget"]["truth_ratio"]),
                    fmt(m["forget"]["probability"]),
                    fmt(m["forget"].get("rouge_l")),
                    with_interval(m.get("mia_auc"), m.get("mia_auc_interval")),
                    fmt(m.get("privleak")),
                    fmt(m.get("extraction_strength")),
                    fmt(quant.get("8bit", {}).get("forget_quality")),
                    fmt(quant.get("4bit", {}).get("forget_quality")),
                    fmt(quant.get("4bit", {}).get("forget_probability")),
                    f"{fmt(rel['before'].get('forget_quality'))} -> {fmt(rel['after'].get('forget_quality'))}"
                    if rel
                    else "-",
                    f"{fmt(rel['before'].get('forget_probability'))} -> {fmt(rel['after'].get('forget_probability'))}"
                    if rel
                    else "-",
                    fmt(row.get("train", {}).get("learning_rate"), 2),
                    fmt(row.get("train", {}).get("optimizer_steps")),
                    fmt(row.get("train", {}).get("wall_s"), 0),
                ]
            )
        lines += [harness.markdown_table(header, rows), ""]
        lines += timing_text(split.get("timing"), report.get("workers", 1))
        lines += tuning_section(split["rows"], report.get("tune_epochs"), HOLDOUT[split_name])
        lines += seeds_section(split["rows"], report.get("seed", 0))
    lines += [
        "Columns: FQ = forget quality (KS-test p-value of the forget truth ratios against the retain model's; 1 = "
        "indistinguishable); MU = model utility (harmonic mean of Prob., ROUGE-L and truth ratio on retain, real "
        "authors, world facts); forget TR = mean min(R, 1/R) of the forget truth ratios; forget Prob = mean "
        "P(answer | question); forget ROUGE = ROUGE-L recall of the greedy answer; MIA AUC = LOSS attack, forget "
        "answers vs holdout answers (0.5 = indistinguishable); PrivLeak = (AUC - retain model's AUC) / retain "
        "model's AUC; ES = extraction strength (1 - shortest answer prefix from which greedy decoding reproduces "
        "the rest / answer length); FQ 8/4-bit and Prob 4-bit: the same after RTN quantisation; relearn FQ / Prob: "
        "on the held-out half of the forget QA, before -> after the relearning attack (FQ against the retain "
        "model's truth ratios on that half); steps / train s: optimizer steps and wall seconds of the unlearning run "
        "(of the fine-tuning for the retain and full rows; 'cached' runs report the original run's).",
        "",
        "## open-unlearning's published forget10 numbers (Llama-3.2-1B), for comparison",
        "",
        harness.markdown_table(
            ["method", "hf_unlearn name", "FQ", "MU"],
            [
                [OPEN_UNLEARNING_NAMES.get(k, "retain model"), k, fmt(v[0]), fmt(v[1])]
                for k, v in OPEN_UNLEARNING_FORGET10.items()
            ],
        ),
        "",
    ]
    if report.get("comparison"):
        lines += [report["comparison"], ""]
    return "\n".join(lines)


def with_interval(value, bounds) -> str:
    """ "0.812 [0.75, 0.87]": a value and its 95% bootstrap interval (the value alone without one)."""
    if value is None:
        return "-"
    if not bounds or any(b is None for b in bounds):
        return fmt(value)
    return f"{fmt(value)} [{bounds[0]:.2f}, {bounds[1]:.2f}]"


def search_end(tuning: dict) -> str:
    """How each trajectory of a search ended: its last evaluation's status and step, and the forget, unseen and
    retain NLL the model had there (forget vs unseen under the same model is what the attacks compare)."""
    ends = []
    for t in tuning["trajectories"]:
        if not t["points"]:
            continue
        last = t["points"][-1]
        nll = last["nll"]
        ends.append(
            f"lr {t['learning_rate']:g}: {last['status']} at step {last['step']} (forget NLL {nll['forget']:.2f} vs "
            f"unseen {nll['approximate']:.2f}, retain {nll['retain']:.3f})"
        )
    return "; ".join(ends) or "no evaluation"


def tuning_section(rows: dict, tune_epochs: float | None = None, holdout: str = "holdout01") -> list[str]:
    """Default vs tuned per method: the tuner's choice (or how its search ended) and the distance to the retain
    model (forget quality; MIA AUC - the retain model's, with its paired 95% bootstrap interval) before and after."""
    methods = [name for name, row in rows.items() if "tuning" in row]
    if not methods:
        return []

    def gap(row):
        value = (row or {}).get("metrics", {}).get("mia_auc_gap")
        return "-" if not value else with_interval(value[0], value[1:])

    out = []
    for name in methods:
        tuned = rows.get(f"{name} (tuned)")
        tuning = rows[name]["tuning"]
        chosen = tuning.get("chosen")
        if chosen:
            schedule = f" of a {chosen['epochs']:g}-epoch schedule" if chosen.get("epochs") else ""
            setting = f"lr {chosen['learning_rate']:g}, {chosen['steps']} steps{schedule}"
        else:
            setting = "none met: " + search_end(tuning)
        out.append(
            [
                name,
                fmt(rows[name]["metrics"].get("forget_quality")),
                fmt(tuned["metrics"].get("forget_quality")) if tuned else "-",
                fmt(rows[name]["metrics"].get("model_utility")),
                fmt(tuned["metrics"].get("model_utility")) if tuned else "-",
                gap(rows[name]),
                gap(tuned) if tuned else "-",
                setting,
                fmt(tuning.get("search_wall_s"), 0),
            ]
        )
    header = ["method", "FQ default", "FQ tuned", "MU default", "MU tuned", "dAUC default", "dAUC tuned"]
    return [
        "### Default vs tuned",
        "",
        f"Tuned: the criterion of `hf-unlearn tune` ({TUNING_CRITERION_TEXT}) over learning rates "
        + " and ".join(f"{f:g}x" for f in TUNE_LR_FACTORS)
        + " the default's"
        + (f", each with a {tune_epochs:g}-epoch schedule after the default row's" if tune_epochs else "")
        + f", evaluated every {TUNE_EVAL_STEPS} steps; the cheapest setting that meets it (a further setting is "
        "tried only while none met it; a trajectory ends at its first evaluation that meets the criterion, "
        "over-unlearns or leaves the retain limit). It reads "
        f"only data an unlearner has: every {'other' if TUNE_EVERY_NTH_QA == 2 else f'{TUNE_EVERY_NTH_QA}th'} forget "
        f"and unseen QA (the second half of {holdout}) and {TUNE_RETAIN_RECORDS} retain training QA; the retain "
        "model only scores. "
        f"dAUC = MIA AUC - the retain model's MIA AUC (LOSS attack, forget vs the first half of {holdout}), with "
        "a paired 95% bootstrap interval (the same resampled records under both models). When none met, each "
        "trajectory's last evaluation says why (the retain limit: 10% above the full model's retain NLL on those "
        "20 QA, at least +0.05 nats).",
        "",
        harness.markdown_table(header + ["tuned setting", "search s"], out),
        "",
    ]


def timing_text(timing: dict | None, workers: int) -> list[str]:
    """The wall time of the methods' rows (default and tuned) and of the further seeds."""
    if not timing or "methods_wall_s" not in timing:
        return []
    text = (
        f"Every method's default and tuned rows: {timing['methods_wall_s'] / 60:.1f} min wall in {workers} process(es)"
    )
    if "seeds_wall_s" in timing:
        text += f"; the further seeds of the default rows: {timing['seeds_wall_s'] / 60:.1f} min"
    return [text + " (the fine-tunes and the retain and full models' evaluation not included).", ""]


def seeds_section(rows: dict, first_seed: int) -> list[str]:
    """Each method's default row over its seeds: forget quality, forget Prob., ES and the AUC gap to the retain
    model (with its paired interval) per seed, the first seed's from the row itself."""
    methods = [name for name, row in rows.items() if row.get("seeds")]
    if not methods:
        return []
    seeds = [first_seed] + [run["seed"] for run in rows[methods[0]]["seeds"]]

    def per_seed(name, value):
        runs = [rows[name]["metrics"]] + [run["metrics"] for run in rows[name]["seeds"]]
        return " / ".join(value(m) for m in runs)

    def gap(m):
        value = m.get("mia_auc_gap")
        return "-" if not value else with_interval(value[0], value[1:])

    table = [
        [
            name,
            per_seed(name, lambda m: fmt(m.get("forget_quality"))),
            per_seed(name, lambda m: fmt(m.get("forget_probability", m.get("forget", {}).get("probability")))),
            per_seed(name, lambda m: fmt(m.get("extraction_strength"))),
            per_seed(name, gap),
        ]
        for name in methods
    ]
    return [
        "### Seeds",
        "",
        f"Each method's default setting with seeds {', '.join(str(s) for s in seeds)} (the unlearning data order and "
        "the method's random draws; the fine-tuned models and the evaluation data are the same), one value per seed "
        "in that order; the further seeds are scored teacher forced (no generation, so no ROUGE or model utility).",
        "",
        harness.markdown_table(["method", "FQ", "forget Prob", "ES", "dAUC"], table),
        "",
    ]


def phase_text(phase: dict) -> str:
    amount = f"{phase['steps']} steps" if phase.get("steps") else f"{phase['epochs']:g} epochs"
    return f"AdamW lr {phase['learning_rate']:g}, {amount}, batch {phase['batch_size']}"


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(report["splits"].items())
    fig, axes = plt.subplots(1, len(splits), figsize=(6.5 * len(splits), 5), squeeze=False)
    for ax, (name, split) in zip(axes[0], splits):
        for label, row in split["rows"].items():
            fq, mu = row["metrics"].get("forget_quality"), row["metrics"].get("model_utility")
            if fq is None or mu is None:
                continue
            marker = "*" if label in ("full (no unlearning)", "retain (exact retraining)") else "o"
            ax.scatter(mu, max(fq, 1e-300), marker=marker, s=90 if marker == "*" else 40)
            ax.annotate(
                label.split(" ")[0], (mu, max(fq, 1e-300)), fontsize=8, xytext=(3, 3), textcoords="offset points"
            )
        ax.set_yscale("log")
        ax.set_xlabel("model utility")
        ax.set_ylabel("forget quality (KS p-value, log)")
        ax.set_title(f"TOFU {name}, size {report['size']['name']}")
        ax.axhline(0.05, color="grey", lw=0.5, ls="--")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ============================================================================ main


def run(argv=None, quiet_workers: bool = False) -> dict:
    """The benchmark (see the module docstring); `quiet_workers`: worker processes call `quiet_libraries()`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    parser.add_argument("--splits", nargs="+", default=None, help="forget splits (default: the size's)")
    parser.add_argument("--source", default="auto", help="'auto' (Hub if reachable, else vendored), 'hub', 'vendored'")
    parser.add_argument("--data-dir", default=None, help="folder of TOFU's <config>.jsonl files (overrides --source)")
    parser.add_argument("--out-dir", default=RESULTS)
    parser.add_argument("--cache-dir", default=None, help="fine-tuned models (default: ~/.cache/hf_unlearn/tofu)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run the methods in this many processes (each of --threads torch threads, default 1); on N cores, "
        "N workers of 1 thread each",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="run every method's default setting with this many seeds (--seed, --seed + 1, ...); the further seeds "
        "report the teacher-forced forget metrics and the LOSS attack",
    )
    parser.add_argument("--no-attacks", action="store_true")
    parser.add_argument(
        "--tune-epochs",
        type=float,
        default=None,
        help="tuned rows: try every learning-rate factor with a schedule of this many epochs (with the tuner's "
        "stopping rule) instead of the higher rates at the size's schedule",
    )
    parser.add_argument(
        "--max-wall-s",
        type=float,
        default=None,
        help="start no attack after this many seconds (the skipped ones are listed in the report)",
    )
    parser.add_argument(
        "--render",
        default=None,
        metavar="JSON",
        help="only rewrite the .md and .png of an existing report (with --comparison)",
    )
    parser.add_argument(
        "--comparison",
        default=None,
        metavar="MD",
        help="with --render: a Markdown paragraph comparing the results with open-unlearning's",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: pass 1 or more processes (e.g. --workers 2 on 2 cores).")
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: pass 1 or more (e.g. --seeds 3 for the default rows' spread over seeds).")
    args.report_skipped, args.quiet_workers = [], quiet_workers
    if args.render:
        return render(args.render, args.comparison)
    import torch

    from hf_unlearn import list_methods

    if args.threads:
        torch.set_num_threads(args.threads)
    size = SIZES[args.size]
    start = time.perf_counter()
    log = lambda message: print(f"[{time.perf_counter() - start:7.1f} s] {message}", flush=True)  # noqa: E731
    if args.data_dir:
        source = args.data_dir
    elif args.source == "hub" or (args.source == "auto" and hub_reachable()):
        source = HUB_ID
    else:
        source = VENDORED
    data = TofuData(source)
    args.data_source_path, args.started = source, start
    data_source = (
        "Hub " + HUB_ID
        if source == HUB_ID
        else "vendored subset benchmarks/tofu/data"
        if source == VENDORED
        else "local folder"
    )
    from hf_unlearn.config import default_cache_dir

    cache_dir = args.cache_dir or os.path.join(default_cache_dir(), "tofu")
    # Default order: the methods open-unlearning publishes first (an interrupted run has those), then the rest.
    methods = args.methods or sorted(
        list_methods(),
        key=lambda m: (
            m not in OPEN_UNLEARNING_NAMES,
            list(OPEN_UNLEARNING_NAMES).index(m) if m in OPEN_UNLEARNING_NAMES else 0,
        ),
    )
    report: dict[str, Any] = {
        "benchmark": "TOFU end to end",
        "command": harness.command_line(__file__, argv),
        "date": harness.now(),
        "machine": machine_info(),
        "size": dataclasses.asdict(size),
        "data_source": data_source,
        "seed": args.seed,
        "seeds": args.seeds,
        "methods": methods,
        "tune_epochs": args.tune_epochs,
        "workers": args.workers,
        "method_threads": None if args.workers == 1 else args.threads or 1,
        "open_unlearning_forget10": {
            k: {"forget_quality": v[0], "model_utility": v[1]} for k, v in OPEN_UNLEARNING_FORGET10.items()
        },
        "splits": {},
        "skipped": args.report_skipped,
    }
    for forget_split in args.splits or size.forget_splits:
        split = split_data(data, size, forget_split, args.seed)
        log(f"{forget_split}: {json.dumps(split.summary())}")
        full_model, tokenizer, description, full_info = cached_finetune(
            "full", size, data, split.train_full, cache_dir, args.seed, log
        )
        retain_model, _, _, retain_info = cached_finetune(
            f"retain-{forget_split}", size, data, split.train_retain, cache_dir, args.seed, log
        )
        report["model"] = description
        evaluator = Evaluator(split, tokenizer, size)
        rows: dict[str, dict] = {}
        report["splits"][forget_split] = {"data": split.summary(), "rows": rows}
        scratch = tempfile.mkdtemp(prefix="tofu_models_")  # unlearned weights between the two passes
        try:
            report["splits"][forget_split]["timing"] = run_split(
                args,
                size,
                split,
                evaluator,
                rows,
                full_model,
                retain_model,
                full_info,
                retain_info,
                methods,
                scratch,
                lambda: write_report(report, args.out_dir, size, start),
                start,
                log,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    report["complete"] = not report["skipped"]
    write_report(report, args.out_dir, size, start, final=True)
    log(f"wrote {os.path.join(args.out_dir, 'tofu_' + size.name)}.json/.md/.png")
    return report


def render(json_path: str, comparison: str | None = None) -> dict:
    """Rewrite the .md and .png beside `json_path` from it, adding the comparison paragraph of file `comparison`."""
    with open(json_path) as handle:
        report = json.load(handle)
    stem = json_path[: -len(".json")]
    if comparison:
        with open(comparison) as handle:
            report["comparison"] = handle.read().strip()
        harness.write_json(json_path, report)
    harness.write_text(stem + ".md", markdown(report))
    plot(report, stem + ".png")
    return report


# ============================================================================ one method


@dataclass
class MethodContext:
    """What every method's runs share in one process: the split, its evaluator (with the retain model's reference
    values set), the pristine full model, a frozen copy of it as the trainers' reference model, a model that holds a
    tuned trajectory's weights while they are evaluated, the tuning criterion's splits and the monitors' start
    evaluations (the full model's, computed once and shared by every trajectory)."""

    size: Size
    split: SplitData
    evaluator: Evaluator
    full_model: Any
    reference: Any
    work: Any
    tuning_splits: dict
    starts: dict
    seed: int
    tune_epochs: float | None
    scratch: str
    log: Any

    @classmethod
    def build(cls, size, split, evaluator, full_model, seed, tune_epochs, scratch, log) -> MethodContext:
        tokenizer = evaluator.tokenizer
        return cls(
            size,
            split,
            evaluator,
            full_model,
            copy.deepcopy(full_model),  # frozen by the trainers; full_model stays the pristine start
            copy.deepcopy(full_model),
            tuning_splits(split, tokenizer, size),
            {},
            seed,
            tune_epochs,
            scratch,
            log,
        )


def run_method(method: str, ctx: MethodContext) -> list[tuple[str, dict, tuple, str]]:
    """The default row of `method` and, when the tuning grid meets the criterion, its tuned row: a list of
    (row name, row, the attacks' "before" values, the file its unlearned weights are saved to)."""
    import torch

    size, split, evaluator, tokenizer = ctx.size, ctx.split, ctx.evaluator, ctx.evaluator.tokenizer
    default_lr = size.unlearn.learning_rate
    monitor, recorder, default_path = trajectory_callbacks(ctx.tuning_splits, default_lr, False, starts=ctx.starts)
    model, info = unlearn(
        method, ctx.full_model, ctx.reference, tokenizer, split, size, ctx.seed, callbacks=(monitor, recorder)
    )
    metrics, scores = evaluator.full(model)
    path = os.path.join(ctx.scratch, f"{method}.pt")
    torch.save(model.state_dict(), path)
    produced = [
        (method, {"metrics": metrics, "train": info}, evaluator.forget_from_scores(metrics, scores["forget"]), path)
    ]
    ctx.log(
        f"{method}: {info['optimizer_steps']} steps, FQ {fmt(metrics.get('forget_quality'))} "
        f"MU {fmt(metrics.get('model_utility'))} forget Prob {fmt(metrics['forget']['probability'])}"
    )
    del model
    trajectories = [default_path]
    tune_s = info["wall_s"]
    # The grid in order of cost, each point only while none met: the default row's own trajectory, then the higher
    # rates at the default schedule, or every rate at a schedule of --tune-epochs.
    grid = [(f, ctx.tune_epochs) for f in TUNE_LR_FACTORS] if ctx.tune_epochs else tuning_grid()
    for factor, epochs in grid:
        if any(t.met_step is not None for t in trajectories):
            break
        monitor, recorder, trajectory = trajectory_callbacks(
            ctx.tuning_splits, default_lr * factor, True, epochs=epochs, starts=ctx.starts
        )
        other, other_info = unlearn(
            method,
            ctx.full_model,
            ctx.reference,
            tokenizer,
            split,
            size,
            ctx.seed,
            learning_rate=default_lr * factor,
            callbacks=(monitor, recorder),
            epochs=epochs,
        )
        del other
        tune_s += other_info["wall_s"]
        trajectories.append(trajectory)
    chosen = select_tuned(trajectories)
    produced[0][1]["tuning"] = {
        "criterion": TUNING_CRITERION_TEXT,
        "trajectories": [
            {"learning_rate": t.learning_rate, "epochs": t.epochs, "met_step": t.met_step, "points": t.points}
            for t in trajectories
        ],
        "chosen": None
        if chosen is None
        else {"learning_rate": chosen.learning_rate, "epochs": chosen.epochs, "steps": chosen.met_step},
        "search_wall_s": tune_s,
    }
    if chosen is not None:
        name = f"{method} (tuned)"
        ctx.work.load_state_dict(chosen.met_state)
        ctx.work.eval()
        metrics, scores = evaluator.full(ctx.work)
        path = os.path.join(ctx.scratch, f"{method}-tuned.pt")
        torch.save(chosen.met_state, path)
        train = {"optimizer_steps": chosen.met_step, "learning_rate": chosen.learning_rate, "wall_s": tune_s}
        row = {"metrics": metrics, "train": train, "tuned_from": method}
        produced.append((name, row, evaluator.forget_from_scores(metrics, scores["forget"]), path))
        ctx.log(
            f"{name}: lr {chosen.learning_rate:g}, {chosen.met_step} steps, FQ {fmt(metrics.get('forget_quality'))} "
            f"MU {fmt(metrics.get('model_utility'))}"
        )
    else:
        ctx.log(f"{method}: no setting of the grid met the tuning criterion")
    for t in trajectories:
        t.met_state = None
    return [(name, _clean(row), before, path) for name, row, before, path in produced]


def run_seed(method: str, seed: int, ctx: MethodContext) -> dict:
    """`method` at its default setting with another `seed` (the unlearning data order and the method's random
    draws), scored by `Evaluator.seed_metrics`."""
    start = time.perf_counter()
    model, info = unlearn(method, ctx.full_model, ctx.reference, ctx.evaluator.tokenizer, ctx.split, ctx.size, seed)
    metrics = ctx.evaluator.seed_metrics(model)
    ctx.log(f"{method} seed {seed}: FQ {fmt(metrics.get('forget_quality'))}")
    train = {k: info[k] for k in ("optimizer_steps", "wall_s", "diverged")}
    return _clean({"seed": seed, "metrics": metrics, "train": train, "wall_s": time.perf_counter() - start})


def run_task(task: tuple, ctx: MethodContext):
    """("method", name): `run_method`; ("seed", name, seed): `run_seed`."""
    if task[0] == "method":
        return run_method(task[1], ctx)
    return run_seed(task[1], task[2], ctx)


class InProcess:
    """Evaluations and methods in this process (`--workers 1`)."""

    def __init__(self, args, size, split, evaluator, full_model, scratch, log):
        self.evaluator, self.full_model = evaluator, full_model
        self.context = MethodContext.build(
            size, split, evaluator, full_model, args.seed, args.tune_epochs, scratch, log
        )

    def measure(self, models: dict) -> dict:
        """`Evaluator.measure` of each model (None: the full model), by name."""
        return {name: self.evaluator.measure(model or self.full_model) for name, model in models.items()}

    def run_tasks(self, tasks, references, collect) -> None:
        for task in tasks:
            collect(task, run_task(task, self.context))

    def close(self) -> None:
        self.context = None


# Worker processes (--workers N): each loads the full model once from the scratch folder and rebuilds the split from
# the same data and seed; it measures the models it is handed (the retain and the full model, in parallel) and runs
# whole methods (`run_method`) as they come, with the retain model's reference values sent along with each.
_WORKER: dict[str, Any] = {}


def _start_worker(spec: dict) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(spec["threads"])
    if spec["quiet"]:
        quiet_libraries()
    size = SIZES[spec["size"]]
    split = split_data(TofuData(spec["source"]), size, spec["forget_split"], spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    model.eval()
    evaluator = Evaluator(split, tokenizer, size)
    started = spec["started"]
    log = lambda message: print(f"[{time.time() - started:7.1f} s] {message}", flush=True)  # noqa: E731
    _WORKER["context"] = MethodContext.build(
        size, split, evaluator, model, spec["seed"], spec["tune_epochs"], spec["scratch"], log
    )


def _worker_measure(model_dir: str | None) -> tuple[dict, dict]:
    from transformers import AutoModelForCausalLM

    context = _WORKER["context"]
    model = context.full_model if model_dir is None else AutoModelForCausalLM.from_pretrained(model_dir).eval()
    return context.evaluator.measure(model)


def _worker_task(task: tuple, references: dict):
    context = _WORKER["context"]
    context.evaluator.set_references(references)
    return run_task(task, context)


class WorkerPool:
    """Evaluations and methods in `args.workers` spawned processes of `args.threads` torch threads each (default 1)."""

    def __init__(self, args, size, split, evaluator, full_model, scratch, log):
        import importlib
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.scratch, self.log, self.workers = scratch, log, args.workers
        model_dir = os.path.join(scratch, "full")
        full_model.save_pretrained(model_dir)
        evaluator.tokenizer.save_pretrained(model_dir)
        spec = {
            "threads": args.threads or 1,
            "quiet": args.quiet_workers,
            "size": size.name,
            "source": args.data_source_path,
            "forget_split": split.forget_split,
            "seed": args.seed,
            "tune_epochs": args.tune_epochs,
            "scratch": scratch,
            "model_dir": model_dir,
            "started": time.time() - (time.perf_counter() - args.started),
        }
        # By module name, so that a spawned worker imports the functions whether this file runs as a script or not.
        self.module = importlib.import_module("benchmarks.tofu.run")
        self.pool = ProcessPoolExecutor(
            args.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=self.module._start_worker,
            initargs=(spec,),
        )

    def measure(self, models: dict) -> dict:
        futures = {}
        for name, model in models.items():
            path = None
            if model is not None:
                path = os.path.join(self.scratch, f"measure-{len(futures)}")
                model.save_pretrained(path)
            futures[name] = self.pool.submit(self.module._worker_measure, path)
        return {name: future.result() for name, future in futures.items()}

    def run_tasks(self, tasks, references, collect) -> None:
        from concurrent.futures import as_completed

        futures = {self.pool.submit(self.module._worker_task, task, references): task for task in tasks}
        for future in as_completed(futures):
            collect(futures[future], future.result())
        self.log(f"{len(tasks)} runs in {self.workers} worker processes: done")

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


ATTACK_PASSES = ("4bit", "relearning", "8bit")  # in this order: the most telling first


def run_split(
    args,
    size,
    split,
    evaluator,
    rows,
    full_model,
    retain_model,
    full_info,
    retain_info,
    methods,
    scratch,
    save,
    start,
    log,
) -> dict[str, float]:
    """Pass 1: the retain and full models and every method's unlearned model, evaluated (each unlearned model's
    weights kept in `scratch`); pass 2: the attacks, one attack over every model at a time (4-bit, relearning,
    8-bit), the report rewritten after each model so that an interrupted run keeps what it measured. Attacks that
    would start after `--max-wall-s` are skipped and listed in the report. With `--seeds` N > 1, every method's
    default row is run again with N - 1 further seeds after pass 1's methods. Returns the wall seconds of pass 1's
    methods and of the further seeds."""
    import torch

    retain_name, full_name = "retain (exact retraining)", "full (no unlearning)"
    timing: dict[str, float] = {}
    runner = (InProcess if args.workers == 1 else WorkerPool)(args, size, split, evaluator, full_model, scratch, log)
    try:
        measured = runner.measure({retain_name: retain_model, full_name: None})
        retain_measured, retain_scores = measured[retain_name]
        evaluator.set_retain_reference(retain_measured, retain_scores)
        if evaluator.retain_heldout_ratios is None and not args.no_attacks:
            heldout = evaluator.score(retain_model, "forget", evaluator.heldout_eval, generate=False)
            evaluator.retain_heldout_ratios = heldout.truth_ratios
        befores, paths = {}, {retain_name: os.path.join(scratch, "retain.pt"), full_name: None}
        for name, info in ((retain_name, retain_info), (full_name, full_info)):
            metrics = evaluator.compare(*measured[name])
            rows[name] = _clean({"metrics": metrics, "train": info})
            befores[name] = evaluator.forget_from_scores(metrics, measured[name][1]["forget"])
            log(f"{name.split(' ')[0]}: FQ {fmt(metrics['forget_quality'])} MU {fmt(metrics['model_utility'])}")
        save()
        torch.save(retain_model.state_dict(), paths[retain_name])
        del retain_model, measured
        results: dict[str, list] = {}

        def collect(task: tuple, produced: list) -> None:
            method = task[1]
            results[method] = produced
            for name, row, before, path in produced:
                befores[name], paths[name] = before, path
            for name in [n for n in rows if n not in (retain_name, full_name)]:
                del rows[name]
            for done in [m for m in methods if m in results]:  # the table keeps the methods' order
                for name, row, _, _ in results[done]:
                    rows[name] = row
            save()

        phase_start = time.perf_counter()
        runner.run_tasks([("method", m) for m in methods], evaluator.references(), collect)
        timing["methods_wall_s"] = time.perf_counter() - phase_start
        if args.seeds > 1:
            # Further seeds of every default row, after every method's own rows (which the time target covers).
            phase_start = time.perf_counter()
            seeds = range(args.seed + 1, args.seed + args.seeds)

            def collect_seed(task: tuple, produced: dict) -> None:
                runs = rows[task[1]].setdefault("seeds", [])
                runs.append(produced)
                runs.sort(key=lambda run: run["seed"])
                save()

            runner.run_tasks([("seed", m, s) for s in seeds for m in methods], evaluator.references(), collect_seed)
            timing["seeds_wall_s"] = time.perf_counter() - phase_start
    finally:
        runner.close()
    if args.no_attacks:
        return timing
    work = copy.deepcopy(full_model)  # holds an unlearned model's weights while it is attacked
    from hf_unlearn.evaluation.attacks import quantization_attack, relearning_attack

    for attack in ATTACK_PASSES:
        for name in rows:
            if args.max_wall_s and time.perf_counter() - start > args.max_wall_s:
                args.report_skipped.append(f"{split.forget_split}/{name}/{attack}")
                continue
            model = full_model if paths[name] is None else work
            if paths[name] is not None:
                work.load_state_dict(torch.load(paths[name]))
            attacks = rows[name].setdefault("attacks", {})
            if attack in ("4bit", "8bit"):
                bits = int(attack[0])
                result = quantization_attack(
                    model, evaluator.forget_only, bits=(bits,), group_size=128, before=befores[name][0]
                )
                quant = attacks.setdefault("quantization", {"before": result["before"], "settings": result["settings"]})
                quant[attack] = result[attack]
                quant["settings"]["bits"] = sorted(set(quant["settings"]["bits"]) | {bits}, reverse=True)
            else:
                phase = size.relearn
                attacks["relearning"] = relearning_attack(
                    model,
                    evaluator.relearn_examples,
                    lambda m: evaluator.forget_only(m, evaluator.heldout_eval, evaluator.retain_heldout_ratios),
                    evaluator.tokenizer.pad_token_id,
                    steps=phase.steps,
                    learning_rate=phase.learning_rate,
                    batch_size=phase.batch_size,
                    seed=0,
                    before=befores[name][1],
                )
            rows[name]["attacks"] = _clean(attacks)
            log(f"{attack} attack on {name}: done")
            save()
    return timing


def tokenizer_of(evaluator) -> Any:
    return evaluator.tokenizer


def write_report(report: dict, out_dir: str, size: Size, start: float, final: bool = False) -> None:
    """Write tofu_<size>.json, .md and .png; an unfinished report says so."""
    report["wall_s"] = time.perf_counter() - start
    report["finished"] = final
    harness.write_report(out_dir, f"tofu_{size.name}", _clean(report), markdown(report))
    plot(report, os.path.join(out_dir, f"tofu_{size.name}.png"))


def _clean(value):
    """JSON-safe: numpy numbers to floats, non-finite floats to None."""
    import numpy as np

    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    return nan_to_none(value)


def quiet_libraries() -> None:
    """Process-wide: silence library logs, progress bars and warnings. Called only when run as a script, so that
    `run()` called in-process (the tests) leaves the caller's logging and warning settings alone."""
    import logging
    import warnings

    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    logging.getLogger("hf_unlearn").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


if __name__ == "__main__":
    quiet_libraries()
    run(quiet_workers=True)
