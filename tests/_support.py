"""Helpers the test modules share (plain functions and constants; the fixtures are in tests/conftest.py).

The bigram model: its logits at position t depend only on token t, P(next | current = c) = softmax(W[c]) with

    W[0] = ln [1/2, 1/4, 1/4]
    W[1] = ln [1/4, 1/2, 1/4]
    W[2] = ln [1/3, 1/3, 1/3]

(tests/test_methods.py derives the golden values from it).
"""

from __future__ import annotations

import copy
import json
import math
import os
import socket

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig
from transformers.modeling_outputs import CausalLMOutput

from hf_unlearn import chunk_documents, get_method, run_plan
from tests.conftest import make_documents, unlearning_args

# ------------------------------------------------------------------ the bigram model and golden losses

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)
W = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [1 / 3, 1 / 3, 1 / 3]]))


class BigramLM(nn.Module):
    """logits[:, t] = W[input_ids[:, t]]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.config = PretrainedConfig(vocab_size=table.shape[0], pad_token_id=0)
        self.table = nn.Embedding.from_pretrained(table.clone(), freeze=False)

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        return CausalLMOutput(logits=self.table(input_ids))


def example(tokens):
    """A training example whose every token is a target."""
    return {"input_ids": tokens, "attention_mask": [1] * len(tokens), "labels": list(tokens)}


def golden_loss(method, tmp_path, policy_table=W, ref_table=None, **config):
    """`compute_loss` of `method` on forget chunk [0, 1, 2] (and retain chunk [1, 1, 0] where it reads retain
    data) with the bigram policy `policy_table` and, if given, the bigram reference `ref_table`; (loss, trainer)."""
    cls = get_method(method)
    kwargs = {}
    if run_plan(None, cls).uses_retain_data:
        kwargs["retain_dataset"] = [example([1, 1, 0])]
    if ref_table is not None:
        kwargs["ref_model"] = BigramLM(ref_table)
    model = BigramLM(policy_table)
    trainer = cls(
        model=model, args=unlearning_args(method, tmp_path, **config), train_dataset=[example([0, 1, 2])], **kwargs
    )
    batch = trainer.data_collator([trainer.train_dataset[0]])
    model.train()
    return trainer.compute_loss(model, batch).item(), trainer


# ------------------------------------------------------------------ one step on a tiny Llama (padding, accumulation)


def varied_examples(tokenizer, seed, n=4):
    """`n` chunks of clearly different lengths (3..32 tokens), so padding really happens."""
    data = chunk_documents(make_documents(12, seed=seed, min_words=2, max_words=30), tokenizer, max_length=32)
    order = sorted(range(len(data)), key=lambda i: len(data[i]["input_ids"]))
    picks = [order[0], order[len(order) // 3], order[2 * len(order) // 3], order[-1]][:n]
    return data.select(picks)


def first_step(method, model_dir, tokenizer, forget, retain, tmp_path, padding_side):
    """Loss and gradient of one `compute_loss` on the 4 examples as one batch, padded on `padding_side`."""
    side_tokenizer = copy.deepcopy(tokenizer)
    side_tokenizer.padding_side = padding_side
    cls = get_method(method)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    kwargs = {"retain_dataset": retain} if run_plan(None, cls).uses_retain_data else {}
    trainer = cls(
        model=model,
        args=unlearning_args(method, tmp_path / padding_side),
        train_dataset=forget,
        processing_class=side_tokenizer,
        **kwargs,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(forget))])
    assert bool((batch["forget"]["attention_mask"][:, 0 if padding_side == "left" else -1] == 0).any())
    model.train()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    magnitude = sum(abs(total / count) for total, count in trainer._term_stats.tolist() if count)
    return loss.item(), grads, magnitude


def build_trainer(method, model_dir, forget_data, retain_data, tmp_path, tokenizer, **config):
    """`method`'s trainer on the model saved at `model_dir` (retain data where the method reads it); (trainer, model)."""
    cls = get_method(method)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    kwargs = {"retain_dataset": retain_data} if run_plan(None, cls).uses_retain_data else {}
    trainer = cls(
        model=model,
        args=unlearning_args(method, tmp_path, **config),
        train_dataset=forget_data,
        processing_class=tokenizer,
        **kwargs,
    )
    return trainer, model


# RMU on the 2-layer test model: steer layer 1, train both MLP down projections (per-position normaliser).
METHOD_CONFIG = {
    "rmu": {"rmu_layer": 1, "rmu_trainable_params": r"layers\.[01]\.mlp\.down_proj\.weight", "retain_weight": 1.0}
}


def one_step_params(method, model_dir, forget, retain, tmp_path, tokenizer, batch, accumulation):
    """The parameters and first log entry after one SGD step (lr 1, no clipping) at `batch` x `accumulation`."""
    trainer, model = build_trainer(
        method,
        model_dir,
        forget,
        retain,
        tmp_path / f"{batch}x{accumulation}",
        tokenizer,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        max_grad_norm=0.0,
        **METHOD_CONFIG.get(method, {}),
    )
    trainer.train()
    return {n: p.detach().clone() for n, p in model.named_parameters()}, trainer.state.log_history[0]


# ------------------------------------------------------------------ recipes and scripts


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a launcher's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_jsonl(path, texts):
    """Write `texts` as JSONL `{"text": ...}` records at `path`; its path as a string."""
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return str(path)


def short_run_flags(model, output_dir, method="ga_descent"):
    """The unlearning script's arguments of every 2-step CPU test run: model, method, sizes, output, no reports."""
    return [
        "--model_name_or_path",
        model,
        "--method",
        method,
        "--max_length",
        "32",
        "--per_device_train_batch_size",
        "2",
        "--max_steps",
        "2",
        "--output_dir",
        str(output_dir),
        "--use_cpu",
        "true",
        "--report_to",
        "none",
        "--eval_every_steps",
        "1",
    ]


def argv(model, data, output_dir, *extra, method="ga_descent", retain=True, approximate=True):
    """The unlearning script's arguments for a 2-step CPU run on the `data` fixture's files at a constant learning
    rate of 1e-3, then `extra`."""
    out = [
        *short_run_flags(model, output_dir, method),
        "--forget_data",
        data["forget"],
        "--learning_rate",
        "1e-3",
        "--warmup_steps",
        "0",
        "--lr_scheduler_type",
        "constant",
        "--logging_steps",
        "1",
    ]
    if retain:
        out += ["--retain_data", data["retain"]]
    if approximate:
        out += ["--approximate_data", data["approximate"]]
    return out + list(extra)


def no_model_loading(monkeypatch):
    """Fail the test if a model is loaded (an input error must come before loading)."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(
        AutoModelForCausalLM,
        "from_pretrained",
        classmethod(lambda *a, **k: pytest.fail("the model was loaded before the error")),
    )


# ------------------------------------------------------------------ privacy and the Hub

# A forget record that an error about its field must never quote.
SECRET_KEY = "Jane Roe's vault code is 48213077"

# The only files an upload may hold: the model, its tokenizer, config(s), generation config, the card, the run
# manifest and the request ledger.
RUN_RECORDS = ("unlearning_manifest.json", "unlearning_ledger.json")
UPLOADABLE = (
    "README.md",
    *RUN_RECORDS,
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    "adapter_config.json",
    "adapter_model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
)


def read_tree(root) -> dict[str, bytes]:
    """Every file under `root`: path -> bytes."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                files[path] = handle.read()
    return files


def lora_config():
    """A rank-4 LoRA on the attention's q and v projections."""
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, task_type="CAUSAL_LM")


# ------------------------------------------------------------------ run manifest and ledger


def data_flags(data):
    return ["--forget_data", data["forget"], "--retain_data", data["retain"], "--approximate_data", data["approximate"]]


def recipe_argv(model, data, output_dir, *extra):
    """A 2-step CPU run on the forget, retain and approximate files of `data` at the script's default learning rate
    and schedule, then `extra`."""
    return [*short_run_flags(model, output_dir), *data_flags(data), "--mia_resamples", "20", *extra]


def read_json(path):
    with open(path) as handle:
        return json.load(handle)
