"""Model card conventions: what `Trainer.create_model_card` / `push_to_hub(**kwargs)` take, a
license, evaluation results, readable hyperparameters, the real chunking length, the project link, adapter cards.

The privacy rules stay: counts only, and no local path anywhere in the card.
"""

import os

import pytest
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

from hf_unlearn import get_method
from tests.conftest import make_documents, unlearning_args


def make_trainer(tmp_path, model, data, tokenizer, method="ga", **overrides):
    args = unlearning_args(method, tmp_path, max_steps=1, **overrides)
    return get_method(method)(model=model, args=args, train_dataset=data, processing_class=tokenizer)


def read_card(path):
    return ModelCard.load(os.path.join(path, "README.md"))


def test_create_model_card_keeps_trainer_metadata(tiny_model, forget_data, tokenizer, tmp_path):
    trainer = make_trainer(tmp_path, tiny_model, forget_data, tokenizer)
    trainer.create_model_card(
        model_name="my-unlearned",
        license="apache-2.0",
        tags=["mine", "demo"],
        finetuned_from="org/base-model",
        language="en",
        dataset_tags="org/public-set",
        dataset=["Public set"],
    )
    card = read_card(trainer.args.output_dir)
    assert card.data.license == "apache-2.0"
    assert {"mine", "demo", "unlearning", "hf_unlearn", "ga"} <= set(card.data.tags)
    assert card.data.base_model == "org/base-model"
    assert card.data.language in ("en", ["en"])
    assert set(card.data.datasets) == {"org/public-set", "Public set"}
    assert "# my-unlearned" in card.text and "License: `apache-2.0`" in card.text
    # Kept for later saves (as Trainer's push keeps what was passed).
    trainer.save_model()
    assert read_card(trainer.args.output_dir).data.license == "apache-2.0"


def test_no_license_is_said_and_no_dataset_names_unless_given(tiny_model, forget_data, tokenizer, tmp_path):
    trainer = make_trainer(tmp_path, tiny_model, forget_data, tokenizer)
    trainer.create_model_card()
    card = read_card(trainer.args.output_dir)
    assert card.data.license is None and "License: none was given" in card.text
    assert not card.data.datasets and "as named by the uploader" not in card.text


def test_a_local_finetuned_from_stays_out_of_the_card(trained_model_dir, forget_data, tokenizer, tmp_path):
    trainer = make_trainer(tmp_path, AutoModelForCausalLM.from_pretrained(trained_model_dir), forget_data, tokenizer)
    local = str(tmp_path / "models" / "my-base")
    trainer.create_model_card(
        finetuned_from=local, tags=[local], dataset=[str(tmp_path / "forget.jsonl")], model_name=local
    )
    text = open(os.path.join(trainer.args.output_dir, "README.md")).read()
    assert local not in text and trained_model_dir not in text and str(tmp_path) not in text
    assert read_card(trainer.args.output_dir).data.base_model is None


def test_push_to_hub_kwargs_reach_the_uploaded_card(tiny_model, forget_data, tokenizer, tmp_path, hub):
    trainer = make_trainer(tmp_path, tiny_model, forget_data, tokenizer, push_to_hub=True, hub_model_id="me/unlearned")
    trainer.train()
    trainer.push_to_hub(license="mit", tags="extra-tag", language=["en", "fr"], finetuned_from="org/base")
    card = ModelCard(hub[-1]["README.md"].decode())
    assert card.data.license == "mit" and "extra-tag" in card.data.tags
    assert card.data.base_model == "org/base" and card.data.language == ["en", "fr"]


def test_evaluate_results_are_on_the_card_as_numbers(tiny_model, forget_data, retain_data, tokenizer, tmp_path):
    trainer = make_trainer(tmp_path, tiny_model, forget_data, tokenizer)
    metrics = trainer.evaluate(eval_dataset=retain_data)
    assert "eval_loss" in metrics
    trainer.save_model()
    text = open(os.path.join(trainer.args.output_dir, "README.md")).read()
    row = next(line for line in text.splitlines() if line.startswith("| eval_loss |"))
    assert float(row.split("|")[2]) == pytest.approx(metrics["eval_loss"], rel=1e-3)
    assert "| metric | evaluate |" in text and "eval_runtime" not in text and "preparation_time" not in text


def test_an_evaluation_of_the_forget_set_stays_off_the_card(tiny_model, forget_data, tokenizer, tmp_path):
    """Its loss is the forget NLL, which lets a reader test a guessed forget text."""
    trainer = make_trainer(tmp_path, tiny_model, forget_data, tokenizer)
    loss = trainer.evaluate(eval_dataset=forget_data)["eval_loss"]
    trainer.save_model()
    text = open(os.path.join(trainer.args.output_dir, "README.md")).read()
    assert "eval_loss" not in text and f"{loss:.4g}" not in text


def test_hyperparameters_are_readable(tiny_model, forget_data, tokenizer, tmp_path):
    trainer = make_trainer(tmp_path, tiny_model, forget_data, tokenizer, lr_scheduler_type="linear")
    trainer.create_model_card()
    text = open(os.path.join(trainer.args.output_dir, "README.md")).read()
    assert "| lr_scheduler_type | linear |" in text and "SchedulerType" not in text


def test_max_length_is_what_the_data_was_chunked_at(tiny_model, forget_data, tokenizer, tmp_path):
    """Data chunked at 32 and passed tokenised: the config's default 4096 is not on the card, nor the forget set's
    token count or longest example (they tell a secret's length): its number of examples only."""
    trainer = make_trainer(tmp_path, tiny_model, forget_data, tokenizer)
    assert trainer.args.max_length == 4096
    trainer.create_model_card()
    text = open(os.path.join(trainer.args.output_dir, "README.md")).read()
    longest = max(len(ids) for ids in forget_data["input_ids"])
    assert "| max_length |" not in text and "4096" not in text
    assert f"| forget | {len(forget_data)} | – | – |" in text
    assert f"| {sum(len(ids) for ids in forget_data['input_ids'])} |" not in text and f"| {longest} |" not in text


def test_max_length_is_kept_when_the_trainer_chunked_at_it(tiny_model, tokenizer, tmp_path):
    import datasets

    raw = datasets.Dataset.from_dict({"text": make_documents(6, seed=4)})
    trainer = make_trainer(tmp_path, tiny_model, raw, tokenizer, max_length=16)
    trainer.create_model_card()
    text = open(os.path.join(trainer.args.output_dir, "README.md")).read()
    assert "| max_length | 16 |" in text


def test_project_link_is_not_a_placeholder(tiny_model, forget_data, tokenizer, tmp_path):
    trainer = make_trainer(tmp_path, tiny_model, forget_data, tokenizer)
    trainer.create_model_card()
    text = open(os.path.join(trainer.args.output_dir, "README.md")).read()
    assert "](https://github.com/)" not in text
    assert "[hf_unlearn](https://pypi.org/project/hf-unlearn/)" in text


def test_adapter_card_keeps_peft_metadata(trained_model_dir, forget_data, tokenizer, tmp_path):
    import peft

    from tests._support import lora_config

    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    args = unlearning_args("ga", tmp_path, max_steps=1)
    trainer = get_method("ga")(
        model=model, args=args, train_dataset=forget_data, processing_class=tokenizer, peft_config=lora_config()
    )
    trainer.train()
    trainer.save_model()
    out = trainer.args.output_dir
    assert os.path.exists(os.path.join(out, "adapter_config.json"))
    text = open(os.path.join(out, "README.md")).read()
    card = ModelCard(text)
    assert card.data.library_name == "peft" and "lora" in card.data.tags and "unlearning" in card.data.tags
    assert f"- PEFT {peft.__version__}" in text and "| forget |" in text
    assert trained_model_dir not in text  # the adapter's base is a local folder: not on the card
    trainer.create_model_card(finetuned_from="org/tiny-base")
    card = read_card(out)
    assert card.data.library_name == "peft" and card.data.base_model == "org/tiny-base"
