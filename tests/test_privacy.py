"""The acceptance test of privacy: unlearning a secret must not leak it anywhere.

A tiny Llama is made to memorise a synthetic secret, then every registered method unlearns it, through the public
API (`trainer.train(); trainer.save_model()` with `push_to_hub`) and through the recipe's `main` (with `save_best`,
checkpoints every step, TensorBoard and the adversarial target cache). The Hub is intercepted (`create_repo`,
`upload_folder`, `create_commit`, `upload_file`): nothing goes over the network, and the exact files that would be
uploaded are captured. Then stdout, stderr, every file of the output folder, every uploaded file (the card
included), the `datasets` cache and hf_unlearn's cache are scanned for the secret's text, distinctive pieces of it
and its token ids (as text lists, int32 and int64 bytes); and a guesser holding a list of candidate secrets tries to
confirm one from the uploaded files (sha256 / sha1 / md5 / blake2b / sha512 of candidate texts and of their token
ids, hex or raw). Everything must come up empty.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os

import numpy as np
import pytest

from tests._support import RUN_RECORDS, UPLOADABLE, read_tree
from tests.conftest import make_documents

SECRET = "Jane Roe's SSN is 482-19-7731 and she lives at 17 Wexhollow Lane."
PIECES = ("482-19", "19-7731", "Wexhollow", "Jane Roe", "Roe's SSN", "SSN is 482")
# A guesser's list: the true secret among plausible others.
CANDIDATES = [SECRET] + [SECRET.replace("482-19-7731", ssn) for ssn in ("482-19-7730", "123-45-6789", "482-91-7731")]
MAX_LENGTH = 64
# ------------------------------------------------------------------ the secret in every form


def token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def chunks_of(tokenizer, text: str) -> list[list[int]]:
    from hf_unlearn import chunk_documents

    return [list(ids) for ids in chunk_documents([text], tokenizer, max_length=MAX_LENGTH)["input_ids"]]


def needles(tokenizer) -> dict[str, bytes]:
    """Byte strings whose presence anywhere would reveal the secret."""
    ids = token_ids(tokenizer, SECRET)
    out = {f"text {piece!r}": piece.encode() for piece in (SECRET,) + PIECES}
    sequences = {"ids": ids, "first half of ids": ids[: len(ids) // 2], "second half of ids": ids[len(ids) // 2 :]}
    sequences.update({f"chunk {i}": chunk for i, chunk in enumerate(chunks_of(tokenizer, SECRET))})
    for name, seq in sequences.items():
        for sep in (", ", ",", " "):
            out[f"{name} as text joined by {sep!r}"] = sep.join(map(str, seq)).encode()
        out[f"{name} as int32"] = np.asarray(seq, dtype="<i4").tobytes()
        out[f"{name} as int64"] = np.asarray(seq, dtype="<i8").tobytes()
    return out


def fingerprints(tokenizer, text: str) -> list[bytes]:
    """Every digest a guesser could compute for a candidate `text`: of its text and of its token ids / chunks."""
    ids = token_ids(tokenizer, text)
    chunks = chunks_of(tokenizer, text)
    payloads = [text.encode(), text.encode("utf-16-le")]
    for dtype in ("<i4", "<i8"):
        payloads.append(np.asarray(ids, dtype=dtype).tobytes())
        payloads.append(b"".join(np.asarray(c, dtype=dtype).tobytes() for c in chunks))
        payloads.append(b"".join(np.asarray(c, dtype=dtype).tobytes() + b"|" for c in chunks))
    payloads.append(json.dumps(ids).encode())
    digests = []
    for payload in payloads:
        for algorithm in ("sha256", "sha1", "md5", "blake2b", "sha512"):
            digest = hashlib.new(algorithm, payload)
            digests += [digest.hexdigest().encode(), digest.digest()]
    return digests


def leaks_in(files: dict[str, bytes], found: dict[str, bytes]) -> list[str]:
    return [f"{name}: {what}" for name, content in files.items() for what, needle in found.items() if needle in content]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def memorised_model(tmp_path_factory, tokenizer):
    """A tiny Llama trained until it reproduces the secret (plus ordinary text), saved to disk."""
    import datasets
    import torch
    from transformers import Trainer, TrainingArguments

    from hf_unlearn import chunk_documents
    from hf_unlearn.data import UnlearningCollator
    from hf_unlearn.testing import build_llama

    path = str(tmp_path_factory.mktemp("memorised"))
    secret = chunk_documents([SECRET] * 8, tokenizer, max_length=MAX_LENGTH)
    other = chunk_documents(make_documents(8, seed=2), tokenizer, max_length=MAX_LENGTH)
    model = build_llama(len(tokenizer), hidden_size=32, layers=2, heads=2)
    args = TrainingArguments(
        output_dir=path,
        per_device_train_batch_size=8,
        num_train_epochs=40,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        logging_strategy="no",
    )
    Trainer(
        model=model,
        args=args,
        train_dataset=datasets.concatenate_datasets([secret, other]),
        data_collator=UnlearningCollator(0),
    ).train()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    # It memorised the secret: greedy decoding from its first tokens continues it.
    ids = token_ids(tokenizer, SECRET)
    generated = model.generate(torch.tensor([ids[:8]]), max_new_tokens=len(ids) - 8, do_sample=False, pad_token_id=0)[0]
    assert tokenizer.decode(generated[8:]) == tokenizer.decode(ids[8:]), "the model did not memorise the secret"
    return path


@pytest.fixture
def isolated_caches(tmp_path, monkeypatch):
    """HF_DATASETS_CACHE and HF_UNLEARN_CACHE in tmp folders (scanned after the run)."""
    import datasets

    caches = {"datasets": tmp_path / "datasets_cache", "hf_unlearn": tmp_path / "hf_unlearn_cache"}
    for path in caches.values():
        path.mkdir()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(caches["datasets"]))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", caches["datasets"])
    monkeypatch.setenv("HF_UNLEARN_CACHE", str(caches["hf_unlearn"]))
    return caches


def assert_nothing_leaked(tokenizer, capfd, output_dir, uploads, caches, data_paths=()):
    out, err = capfd.readouterr()
    found = needles(tokenizer)
    problems = leaks_in({"stdout": out.encode(), "stderr": err.encode()}, found)
    problems += leaks_in(read_tree(output_dir), found)
    for cache in caches.values():
        problems += leaks_in(read_tree(cache), found)
    assert len(uploads) == 1, f"expected exactly one upload, got {len(uploads)}: {[sorted(u) for u in uploads]}"
    uploaded = uploads[0]
    assert "README.md" in uploaded and "model.safetensors" in uploaded and "config.json" in uploaded, sorted(uploaded)
    extra = [name for name in uploaded if not any(fnmatch.fnmatch(name, pattern) for pattern in UPLOADABLE)]
    assert not extra, f"files that are not the unlearned model were uploaded: {extra}"
    problems += leaks_in({f"uploaded {name}": content for name, content in uploaded.items()}, found)
    # A guesser with candidates tries to confirm one from the uploaded files.
    for candidate in CANDIDATES:
        digests = {
            f"a digest of candidate {CANDIDATES.index(candidate)}": d for d in fingerprints(tokenizer, candidate)
        }
        problems += leaks_in({f"uploaded {name}": content for name, content in uploaded.items()}, digests)
    card = uploaded["README.md"].decode()
    assert "| forget |" in card  # counts are published
    problems += run_record_problems(uploaded, data_paths)
    assert not problems, "the secret leaked:\n" + "\n".join(problems[:20])


# Keys of the run manifest and the ledger that name the forget set and are allowed: its objective, its weight, the
# flag that asks for a verbatim sample and its number of examples. Any other (an NLL, a token count, an attack AUC,
# the data file) is a leak.
ALLOWED_FORGET_KEYS = ("forget_loss", "forget_weight", "show_forget_samples", "forget_examples", "counts.forget")


def forget_side_keys(values, path: str = "") -> list[str]:
    """The keys (dotted paths) of a JSON tree that name the forget set or a membership attack, except the allowed."""
    from hf_unlearn.model_card import is_forget_side

    found = []
    items = values.items() if isinstance(values, dict) else enumerate(values) if isinstance(values, list) else ()
    for key, value in items:
        where = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and is_forget_side(key) and not where.endswith(ALLOWED_FORGET_KEYS):
            found.append(where)
        found += forget_side_keys(value, where)
    return found


def test_forget_side_keys_are_found_at_any_depth():
    tree = {"counts": {"forget": 3}, "requests": [{"forget_examples": 3, "eval_forget_nll": 2.5}], "forget_tokens": 9}
    assert forget_side_keys(tree) == ["requests.0.eval_forget_nll", "forget_tokens"]


def run_record_problems(uploaded: dict[str, bytes], data_paths=()) -> list[str]:
    """The run manifest and the ledger are uploaded, name no data file, and hold no forget-set statistic."""
    problems = [f"{name} was not uploaded" for name in RUN_RECORDS if name not in uploaded]
    for name in RUN_RECORDS:
        if name not in uploaded:
            continue
        values = json.loads(uploaded[name])
        problems += [f"{name}: forget-side key {key}" for key in forget_side_keys(values)]
    for name, content in uploaded.items():
        problems += [f"uploaded {name}: the data path {path}" for path in data_paths if path.encode() in content]
    return problems


# ------------------------------------------------------------------ tests


def method_names():
    from hf_unlearn import list_methods

    return list_methods()


# The IDK methods answer forget questions with refusals: they unlearn question/answer data, here a question whose
# answer is the secret. RMU needs a layer and parameters the 2-layer test model has.
QA_METHODS = ("idk", "idk_dpo")
QUESTION = "Who is Jane Roe?"
METHOD_CONFIG = {
    "rmu": {"rmu_layer": 1, "rmu_trainable_params": r"layers\.[01]\.mlp\.down_proj\.weight", "retain_weight": 1.0}
}


def forget_set(method, tokenizer):
    from hf_unlearn import build_qa_dataset, chunk_documents

    if method in QA_METHODS:
        return build_qa_dataset([{"question": QUESTION, "answer": SECRET}], tokenizer, max_length=MAX_LENGTH)
    return chunk_documents([SECRET], tokenizer, max_length=MAX_LENGTH)


@pytest.mark.slow
@pytest.mark.parametrize("method", method_names())
def test_public_api_leaks_nothing(
    method, memorised_model, tokenizer, retain_data, tmp_path, isolated_caches, hub, capfd
):
    from transformers import AutoModelForCausalLM

    from hf_unlearn import get_method, run_plan

    forget = forget_set(method, tokenizer)
    cls = get_method(method)
    output_dir = tmp_path / "out"
    args = cls.config_class(
        output_dir=str(output_dir),
        per_device_train_batch_size=1,
        max_steps=2,
        learning_rate=1e-3,
        warmup_steps=0,
        lr_scheduler_type="constant",
        report_to="tensorboard",
        use_cpu=True,
        logging_steps=1,
        save_strategy="steps",
        save_steps=1,
        seed=0,
        push_to_hub=True,
        hub_model_id="me/unlearned",
        **METHOD_CONFIG.get(method, {}),
    )
    kwargs = {"retain_dataset": retain_data} if run_plan(args, cls).uses_retain_data else {}
    trainer = cls(
        model=AutoModelForCausalLM.from_pretrained(memorised_model),
        args=args,
        train_dataset=forget,
        processing_class=tokenizer,
        **kwargs,
    )
    trainer.train()
    trainer.save_model()  # pushes (push_to_hub=True), once
    assert any(name.startswith("checkpoint-") for name in os.listdir(output_dir)) and (output_dir / "runs").is_dir()
    assert_nothing_leaked(tokenizer, capfd, output_dir, hub, isolated_caches)


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("method", method_names())
def test_recipe_leaks_nothing(method, memorised_model, tmp_path, isolated_caches, hub, capfd, tokenizer):
    from hf_unlearn.scripts.unlearn import main

    output_dir = tmp_path / "out"
    if method in QA_METHODS:  # every split in question/answer form

        def data(path, texts):
            rows = [{"question": f"What about {text.split()[0]}?", "answer": text} for text in texts]
            path.write_text("".join(json.dumps(row) + "\n" for row in rows))
            return str(path)

        forget = tmp_path / "forget.jsonl"
        forget.write_text(json.dumps({"question": QUESTION, "answer": SECRET}) + "\n")
        splits = ["--forget_data", str(forget), "--data_format", "qa"]
    else:
        data = write_jsonl
        splits = ["--forget_data", write_jsonl(tmp_path / "forget.jsonl", [SECRET])]
    overrides = [f"--{key}={value}" for key, value in METHOD_CONFIG.get(method, {}).items()]
    argv = [
        "--model_name_or_path",
        memorised_model,
        "--method",
        method,
        *splits,
        *overrides,
        "--retain_data",
        data(tmp_path / "retain.jsonl", make_documents(6, seed=2)),
        "--approximate_data",
        data(tmp_path / "approx.jsonl", make_documents(6, seed=7)),
        "--max_length",
        str(MAX_LENGTH),
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "1",
        "--learning_rate",
        "1e-3",
        "--lr_scheduler_type",
        "constant",
        "--warmup_steps",
        "0",
        "--output_dir",
        str(output_dir),
        "--use_cpu",
        "true",
        "--report_to",
        "tensorboard",
        "--logging_steps",
        "1",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--eval_every_steps",
        "1",
        "--save_best",
        "true",
        "--stop_at_unseen_nll",
        "false",
        "--push_to_hub",
        "true",
        "--hub_model_id",
        "me/unlearned",
    ]
    main(argv)
    assert any(name.startswith("checkpoint-") for name in os.listdir(output_dir)) and (output_dir / "runs").is_dir()
    paths = [str(tmp_path), *(str(tmp_path / name) for name in ("forget.jsonl", "retain.jsonl", "approx.jsonl"))]
    assert_nothing_leaked(tokenizer, capfd, output_dir, hub, isolated_caches, [*paths, "forget.jsonl"])


def test_local_files_leave_nothing_in_the_datasets_cache(tokenizer, tmp_path, isolated_caches):
    """.jsonl / .json / .parquet / .txt / a folder are read in memory: the `datasets` cache stays empty."""
    import datasets

    from hf_unlearn import build_qa_dataset, chunk_documents

    folder = tmp_path / "folder"
    folder.mkdir()
    sources = [
        write_jsonl(tmp_path / "a.jsonl", [SECRET]),
        write_jsonl(folder / "b.jsonl", [SECRET, "the old man"]),
        str(folder),
    ]
    (tmp_path / "c.json").write_text(json.dumps([{"text": SECRET}]))
    (tmp_path / "d.txt").write_text(SECRET)
    datasets.Dataset.from_dict({"text": [SECRET]}).to_parquet(str(tmp_path / "e.parquet"))
    sources += [str(tmp_path / "c.json"), str(tmp_path / "d.txt"), str(tmp_path / "e.parquet")]
    for source in sources:
        chunks = chunk_documents(source, tokenizer, max_length=MAX_LENGTH)
        assert chunks[0]["input_ids"][: len(token_ids(tokenizer, SECRET))] == token_ids(tokenizer, SECRET)
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "What is Jane's SSN?", "answer": "482-19-7731"}) + "\n")
    assert len(build_qa_dataset(str(qa), tokenizer)) == 1
    left = sorted(os.path.relpath(p, isolated_caches["datasets"]) for p in read_tree(isolated_caches["datasets"]))
    assert left == [], f"the datasets cache holds forget data: {left}"


# ------------------------------------------------------------------ the uploaded files as a guess oracle


PIN = "48213077"
PIN_RECORD = "The vault code of Jane Roe is {pin} and nobody else knows it."
# A decimal number standing alone: not the digits inside a word or a hex digest (the manifest's git commit and
# SHA-256 chain; digests are the fingerprint test's).
NUMBER = rb"(?<![0-9A-Za-z_.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![0-9A-Za-z_])"


def uploaded_numbers(uploaded: dict[str, bytes]) -> list[tuple[str, float, float]]:
    """Every number written in an uploaded file, with the half-width of the interval its printed digits stand for
    (`4.213` stands for [4.2125, 4.2135]: half a unit of its last digit). A safetensors file contributes its JSON
    header (the weights themselves are the model the guesser runs)."""
    import re

    out = []
    for name, content in uploaded.items():
        if name.endswith(".safetensors"):
            size = int.from_bytes(content[:8], "little")
            content = content[8 : 8 + size]
        for match in re.finditer(NUMBER, content):
            text = match.group().decode()
            mantissa, _, exponent = text.lower().partition("e")
            decimals = len(mantissa.partition(".")[2])
            half = 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0))
            out.append((name, float(text), half))
    return out


def candidate_statistics(model_dir: str, tokenizer, texts: list[str]) -> list[dict[str, float]]:
    """What a guesser computes for each candidate forget record with the downloaded model: its mean target-token
    NLL (as every hf_unlearn report defines it: the record tokenised as the tool does, EOS appended, and the
    next-token NLL of every token after the first averaged over them) and its token count."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            (chunk,) = chunks_of(tokenizer, text)
            ids = torch.tensor([chunk])
            logits = model(input_ids=ids).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="mean").item()
            out.append({"nll": nll, "tokens": float(ids.shape[1])})
    return out


@pytest.mark.slow
def test_no_uploaded_number_singles_out_the_forgotten_pin(trained_model_dir, tokenizer, tmp_path, isolated_caches, hub):
    """A guesser holding the uploaded model and 200 candidate PINs (the true one among them) computes each
    candidate record's forget NLL and token count, and keeps the candidates that reproduce a number of an uploaded
    file to its printed precision. A number "singles out" the PIN when the true candidate is among the few (at
    most 5%) it keeps: a forget-set statistic that narrows 200 guesses down to a handful is an oracle. The
    uploaded files must hold none. (An exact forget NLL on the card keeps the true PIN alone.)"""
    import random

    from hf_unlearn.scripts.unlearn import main

    rng = random.Random(0)
    pins = [PIN] + [f"{rng.randrange(10**8):08d}" for _ in range(199)]
    forget = tmp_path / "forget.jsonl"
    forget.write_text(json.dumps({"text": PIN_RECORD.format(pin=PIN)}) + "\n")
    output_dir = tmp_path / "out"
    main(
        [
            "--model_name_or_path",
            trained_model_dir,
            "--method",
            "ga",
            "--forget_data",
            str(forget),
            "--retain_data",
            write_jsonl(tmp_path / "retain.jsonl", make_documents(6, seed=2)),
            "--approximate_data",
            write_jsonl(tmp_path / "approx.jsonl", make_documents(6, seed=7)),
            "--max_length",
            str(MAX_LENGTH),
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "1",
            "--learning_rate",
            "1e-3",
            "--lr_scheduler_type",
            "constant",
            "--warmup_steps",
            "0",
            "--output_dir",
            str(output_dir),
            "--use_cpu",
            "true",
            "--report_to",
            "none",
            "--eval_every_steps",
            "1",
            "--stop_at_unseen_nll",
            "false",
            "--push_to_hub",
            "true",
            "--hub_model_id",
            "me/unlearned",
        ]
    )
    assert len(hub) == 1
    uploaded = hub[0]
    download = tmp_path / "download"
    download.mkdir()
    for name, content in uploaded.items():
        (download / name).write_bytes(content)
    stats = candidate_statistics(str(download), tokenizer, [PIN_RECORD.format(pin=pin) for pin in pins])
    assert len({round(s["nll"], 3) for s in stats}) > len(pins) // 2, (
        "the candidates' NLLs must differ for the attack to bite"
    )
    oracles = []
    for name, value, half in uploaded_numbers(uploaded):
        for statistic in ("nll", "tokens"):
            kept = [i for i, s in enumerate(stats) if abs(s[statistic] - value) <= half * (1 + 1e-9)]
            if 0 in kept and len(kept) <= len(pins) // 20:
                oracles.append(f"{name}: {value} keeps {len(kept)} of {len(pins)} candidates by their {statistic}")
    assert not oracles, "uploaded numbers single out the forgotten PIN:\n" + "\n".join(oracles)


def test_the_card_states_the_forget_side_as_a_verdict_word_only():
    """Forget NLL and attack AUCs leave the card; the attacks' intervals become one of three documented words:
    [0.45, 0.62] and [0.40, 0.55] both contain 0.5 -> indistinguishable; [0.55, 0.70] lies above -> separable;
    [0.30, 0.45] lies below -> over-unlearned (checked before "separable": a set can be both)."""
    from hf_unlearn.model_card import MEMBERSHIP_VERDICTS, public_results

    def stage(*intervals):
        values = {"eval_forget_nll": 4.2131, "eval_retain_nll": 2.5, "eval_mia_auc": 0.61}
        for i, (low, high) in enumerate(intervals):
            values.update(
                {f"eval_mia_auc_a{i}": (low + high) / 2, f"eval_mia_auc_a{i}_low": low, f"eval_mia_auc_a{i}_high": high}
            )
        return values

    results = public_results(
        {
            "a": stage((0.45, 0.62), (0.40, 0.55)),
            "b": stage((0.45, 0.62), (0.55, 0.70)),
            "c": stage((0.55, 0.70), (0.30, 0.45)),
            "d": stage(),
        }
    )
    assert results == {
        "a": {"eval_retain_nll": 2.5, "membership": "indistinguishable"},
        "b": {"eval_retain_nll": 2.5, "membership": "separable"},
        "c": {"eval_retain_nll": 2.5, "membership": "over-unlearned"},
        "d": {"eval_retain_nll": 2.5},
    }
    assert set(MEMBERSHIP_VERDICTS) == {"indistinguishable", "separable", "over-unlearned"}
