"""Model cards, the push path (as far as the offline network allows), and LoRA unlearning through peft."""

import os

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_unlearn import get_method, run_plan
from hf_unlearn.forward import forward
from tests._support import UPLOADABLE, lora_config
from tests.conftest import unlearning_args

SECRET = "zebra quantum marmalade"  # a phrase that must never leave the forget set


@pytest.fixture
def secret_forget(tokenizer):
    from hf_unlearn import chunk_documents

    return chunk_documents([f"the old man said {SECRET} near the river"] * 4, tokenizer, max_length=32)


def test_model_card_records_the_unlearning_without_the_text(
    trained_model_dir, secret_forget, retain_data, tokenizer, tmp_path
):
    cls = get_method("ga_descent")
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    args = unlearning_args("ga_descent", tmp_path, max_steps=2, report_to="tensorboard")
    trainer = cls(
        model=model, args=args, train_dataset=secret_forget, retain_dataset=retain_data, processing_class=tokenizer
    )
    trainer.evaluation_results = {
        "before": {"forget_nll": 1.25, "retain_nll": 2.25},
        "after": {"forget_nll": 3.5, "retain_nll": 2.75},
    }
    trainer.train()
    trainer.save_model()
    card = open(os.path.join(args.output_dir, "README.md")).read()
    tokens = sum(len(ids) for ids in secret_forget["input_ids"])
    for expected in (
        "unlearning",
        "ga_descent",
        "GA + descent",
        "yao2024machine",
        "learning_rate",
        f"| forget | {len(secret_forget)} | – | – |",
        "| retain | ",
        "retain_nll | 2.25 | 2.75",
        "0.1.0",
    ):
        assert expected in card, expected
    # The forget side stays local: its NLL and token count would let a reader test a guessed text.
    assert "forget_nll" not in card and "3.5" not in card and f"| {tokens} |" not in card
    # Counts only: no digest of the data, which would let a reader confirm a guessed secret.
    import re

    assert not re.search(r"[0-9a-f]{32,}", card), "a hex digest is on the card"
    assert trained_model_dir not in card  # a local path is not a base model
    # No forget text in the card, the logs (tensorboard event files included) or any saved config.
    events = [f for _, _, files in os.walk(tmp_path / "out" / "runs") for f in files if f.startswith("events.out")]
    assert events, "tensorboard wrote nothing"
    for root, _, files in os.walk(tmp_path):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                content = handle.read()
            for word in SECRET.split():
                assert word.encode() not in content, f"{word!r} leaked into {os.path.join(root, name)}"


def test_push_without_token_is_a_clear_error(tiny_model, forget_data, tokenizer, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no stored token
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ValueError, match=r"push_to_hub needs a Hugging Face token.*hf auth login"):
        get_method("ga")(
            model=tiny_model,
            args=unlearning_args("ga", tmp_path, push_to_hub=True),
            train_dataset=forget_data,
            processing_class=tokenizer,
        )


def test_push_with_unreachable_hub_is_a_clear_error(tiny_model, forget_data, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_test")
    with pytest.raises(RuntimeError, match=r"Could not reach the Hugging Face Hub.*push_to_hub=False.*hf upload"):
        get_method("ga")(
            model=tiny_model,
            args=unlearning_args("ga", tmp_path, push_to_hub=True, hub_model_id="me/unlearned"),
            train_dataset=forget_data,
            processing_class=tokenizer,
        )


@pytest.mark.parametrize("method", ["ga", "random_label", "adversarial", "ga_descent", "ga_kl"])
def test_every_method_trains_a_lora_adapter(
    method, trained_model_dir, forget_data, retain_data, tokenizer, tmp_path, monkeypatch
):
    """Only adapter weights change, with gradient checkpointing on; the reference is the adapter-free base."""
    monkeypatch.setattr(
        "hf_unlearn.reference.load_reference_model",
        lambda *a, **k: (_ for _ in ()).throw(AssertionError("a second model was loaded")),
    )
    cls = get_method(method)
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    kwargs = {"retain_dataset": retain_data} if run_plan(None, cls).uses_retain_data else {}
    args = unlearning_args(method, tmp_path, max_steps=3, learning_rate=1e-2, gradient_checkpointing=True)
    trainer = cls(
        model=model,
        args=args,
        train_dataset=forget_data,
        processing_class=tokenizer,
        peft_config=lora_config(),
        **kwargs,
    )
    peft_model = trainer.model
    lora_before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_B" in n}
    trainer.train()
    assert trainer.ref_model is None
    lora_after = {n: p.detach() for n, p in peft_model.named_parameters() if "lora_B" in n}
    assert lora_before and all(not torch.equal(lora_before[n], lora_after[n]) for n in lora_before), (
        "LoRA did not train"
    )
    frozen = {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p
        for n, p in peft_model.named_parameters()
        if "lora_" not in n
    }
    assert all(torch.equal(base[n], frozen[n]) for n in base if n in frozen), "base weights changed"


def test_lora_reference_equals_the_original_model(trained_model_dir, forget_data, retain_data, tokenizer, tmp_path):
    """After training the adapter, the adapter-disabled logits still equal the original model's."""
    original = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    cls = get_method("ga_kl")
    trainer = cls(
        model=AutoModelForCausalLM.from_pretrained(trained_model_dir),
        args=unlearning_args("ga_kl", tmp_path, max_steps=2, learning_rate=1e-2),
        train_dataset=forget_data,
        retain_dataset=retain_data,
        processing_class=tokenizer,
        peft_config=lora_config(),
    )
    trainer.train()
    batch = trainer.data_collator([forget_data[i] for i in range(2)])
    with torch.no_grad():
        expected = original(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(trainer.original.forward(batch).logits, expected, atol=1e-5)
    assert not torch.allclose(forward(trainer.model, batch).logits, expected, atol=1e-3)  # the policy moved


def test_merge_and_save(trained_model_dir, forget_data, tokenizer, tmp_path):
    from hf_unlearn.adapters import merge_and_save

    trainer = get_method("ga")(
        model=AutoModelForCausalLM.from_pretrained(trained_model_dir),
        args=unlearning_args("ga", tmp_path, max_steps=2, learning_rate=1e-2),
        train_dataset=forget_data,
        processing_class=tokenizer,
        peft_config=lora_config(),
    )
    trainer.train()
    batch = trainer.data_collator([forget_data[i] for i in range(2)])
    expected = forward(trainer.model.eval(), batch).logits.detach()
    path = str(tmp_path / "merged")
    merge_and_save(trainer, path)
    merged = AutoModelForCausalLM.from_pretrained(path)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert torch.allclose(
        merged(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, expected, atol=1e-4
    )
    assert os.path.exists(os.path.join(path, "README.md"))


def test_push_uploads_the_final_model_once_and_nothing_else(tiny_model, forget_data, tokenizer, tmp_path, hub):
    """Checkpoints are never pushed (whatever hub_strategy), saving best/ does not push, save_model() pushes once,
    and the upload holds the model, tokenizer, configs and card only."""
    import fnmatch

    args = unlearning_args(
        "ga",
        tmp_path,
        max_steps=2,
        push_to_hub=True,
        hub_model_id="me/unlearned",
        hub_strategy="all_checkpoints",
        save_strategy="steps",
        save_steps=1,
        report_to="tensorboard",
    )
    trainer = get_method("ga")(model=tiny_model, args=args, train_dataset=forget_data, processing_class=tokenizer)
    trainer.train()
    (tmp_path / "out" / "stale_from_an_earlier_run.txt").write_text("old")
    trainer.save_model(os.path.join(args.output_dir, "best"))
    assert hub == [], "a checkpoint or best/ was pushed"
    trainer.save_model()
    assert len(hub) == 1
    uploaded = sorted(hub[0])
    assert all(any(fnmatch.fnmatch(name, pattern) for pattern in UPLOADABLE) for name in uploaded), uploaded
    assert {"README.md", "model.safetensors", "config.json", "tokenizer.json"} <= set(uploaded)
    assert not [name for name in os.listdir(args.output_dir) if name.startswith("_push-staging")]  # staging removed
    trainer.push_to_hub()
    assert len(hub) == 2 and sorted(hub[1]) == uploaded
