"""Training behaviour of every method: it unlearns, it is invariant to accumulation, it is a drop-in Trainer."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_unlearn import get_method, list_methods, run_plan
from hf_unlearn.evaluation import mean_nll
from tests._support import build_trainer, one_step_params
from tests.conftest import unlearning_args

BUILTIN = ["ga", "random_label", "adversarial", "ga_descent", "ga_kl"]


@pytest.mark.parametrize("method", BUILTIN)
def test_method_unlearns_and_changes_parameters(
    method, trained_model_dir, forget_data, retain_data, tokenizer, tmp_path
):
    """A few steps raise the forget-set NLL and change the parameters; the loss terms are logged separately."""
    trainer, model = build_trainer(
        method, trained_model_dir, forget_data, retain_data, tmp_path, tokenizer, max_steps=6, learning_rate=3e-3
    )
    before_params = {n: p.detach().clone() for n, p in model.named_parameters()}
    before = mean_nll(model, forget_data)
    trainer.train()
    after = mean_nll(model, forget_data)
    assert after > before + 0.1, f"{method}: forget NLL {before:.3f} -> {after:.3f}"
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before_params[n])]
    assert len(changed) == len(before_params), f"{method}: unchanged {set(before_params) - set(changed)}"
    logged = trainer.state.log_history[0]
    assert {"loss", "forget_loss", "forget_nll"} <= set(logged)
    if run_plan(None, get_method(method)).uses_retain_data:
        assert "retain_loss" in logged
    # The logged forget NLL at step 1 is the NLL of the model before any update on that batch.
    assert math.isfinite(logged["forget_nll"]) and logged["forget_nll"] > 0


def test_all_builtin_methods_are_covered():
    assert set(BUILTIN) <= set(list_methods())


@pytest.mark.parametrize("method", ["ga", "ga_descent", "ga_kl", "npo", "rmu"])
def test_gradient_accumulation_invariance(method, trained_model_dir, tokenizer, tmp_path):
    """One SGD step (lr 1) on 4 examples: batch 4 x accumulation 1 == batch 2 x accumulation 2.

    The examples have different lengths (5..32 tokens), so a per-micro-batch mean would weight tokens
    differently in the two set-ups; the token-weighted global mean must not. Tolerance: 1e-5 absolute on every
    parameter after the step (float32 sums in a different order). No clipping (max_grad_norm 0): clipping would
    rescale both runs alike and hide a wrong normalisation.
    """
    from hf_unlearn import chunk_documents
    from tests.conftest import make_documents

    forget = chunk_documents(make_documents(4, seed=7, min_words=3, max_words=30), tokenizer, max_length=32).select(
        range(4)
    )
    retain = chunk_documents(make_documents(4, seed=8, min_words=3, max_words=30), tokenizer, max_length=32).select(
        range(4)
    )
    lengths = {len(x) for x in forget["input_ids"]}
    assert len(lengths) > 1, "the test needs examples of different lengths"
    full, log_full = one_step_params(method, trained_model_dir, forget, retain, tmp_path, tokenizer, 4, 1)
    accumulated, log_acc = one_step_params(method, trained_model_dir, forget, retain, tmp_path, tokenizer, 2, 2)
    worst = max((full[n] - accumulated[n]).abs().max().item() for n in full)
    assert worst < 1e-5, f"{method}: parameters differ by {worst}"
    assert math.isclose(log_full["loss"], log_acc["loss"], rel_tol=1e-5, abs_tol=1e-6)
    assert math.isclose(log_full["forget_loss"], log_acc["forget_loss"], rel_tol=1e-5)


def test_drop_in_replacement_for_trainer(trained_model_dir, tokenizer, tmp_path):
    """A training script written for transformers.Trainer, unchanged except for the class name."""
    import datasets
    from transformers import DataCollatorForLanguageModeling, TrainingArguments

    from hf_unlearn import GradientAscentTrainer as Trainer  # was: from transformers import Trainer
    from tests.conftest import make_documents

    # --- the user's script, as written for transformers.Trainer ---
    texts = datasets.Dataset.from_dict({"text": make_documents(8, seed=1)})
    tokenized = texts.map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=32), batched=True, remove_columns=["text"]
    )
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=3e-3,
        report_to="none",
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tokenized,
        eval_dataset=tokenized,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    # --- end of the user's script ---
    assert after > before, (before, after)
    assert trainer.args.learning_rate == 3e-3 and trainer.args.lr_scheduler_type == "linear"  # user's args kept
    assert "forget_loss" in trainer.state.log_history[0]


def test_save_and_from_pretrained_round_trip(trained_model_dir, forget_data, retain_data, tokenizer, tmp_path):
    trainer, model = build_trainer(
        "ga_descent", trained_model_dir, forget_data, retain_data, tmp_path, tokenizer, max_steps=2
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "saved"))
    for (name, p), (_, q) in zip(model.named_parameters(), reloaded.named_parameters()):
        assert torch.equal(p, q), name
    assert mean_nll(reloaded, forget_data) == pytest.approx(mean_nll(model, forget_data), rel=1e-6)


def test_evaluation_uses_plain_language_modelling_loss(
    trained_model_dir, forget_data, retain_data, tokenizer, tmp_path
):
    """evaluate() reports the ordinary LM loss (mean NLL), not the unlearning objective."""
    trainer, model = build_trainer(
        "ga", trained_model_dir, forget_data, retain_data, tmp_path, tokenizer, per_device_eval_batch_size=64
    )
    loss = trainer.evaluate(eval_dataset=forget_data)["eval_loss"]
    assert loss > 0
    assert loss == pytest.approx(mean_nll(model, forget_data, batch_size=64), rel=1e-4)


def test_retain_pairing_advances_every_epoch_and_covers_retain(trained_model_dir, tokenizer, tmp_path):
    """With 10 forget and 100 retain examples, 10 epochs of one step each use all 100 retain examples exactly
    once (a pairing fixed across epochs would reuse the same 10). Same seed, same pairs."""
    import datasets

    from hf_unlearn import StreamDataset

    def rows(n, offset):
        return datasets.Dataset.from_list(
            [
                {
                    "input_ids": [5 + (offset + i) % 250, 7, 9],
                    "attention_mask": [1, 1, 1],
                    "labels": [5 + (offset + i) % 250, 7, 9],
                }
                for i in range(n)
            ]
        )

    forget, retain = rows(10, 0), rows(100, 0)
    seen = []
    cls = get_method("ga_descent")

    class Recording(cls):
        def unlearning_terms(self, model, inputs):
            seen.extend(inputs["retain"]["input_ids"][:, 0].tolist())
            return super().unlearning_terms(model, inputs)

    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    trainer = Recording(
        model=model,
        args=unlearning_args("ga_descent", tmp_path, per_device_train_batch_size=10, num_train_epochs=10, max_steps=-1),
        train_dataset=forget,
        retain_dataset=retain,
        processing_class=tokenizer,
    )
    trainer.train()
    assert sorted(seen) == sorted(retain["input_ids"][i][0] for i in range(100))
    assert isinstance(trainer.train_dataset, StreamDataset) and trainer.train_dataset.epoch == 9
    again = StreamDataset({"forget": forget, "retain": retain}, seed=0)
    other = StreamDataset({"forget": forget, "retain": retain}, seed=1)
    assert [again[i]["retain"] for i in range(10)] == [
        StreamDataset({"forget": forget, "retain": retain}, seed=0)[i]["retain"] for i in range(10)
    ]
    assert [again[i]["retain"] for i in range(10)] != [other[i]["retain"] for i in range(10)]


def test_methods_without_reference_do_not_load_it(
    trained_model_dir, forget_data, retain_data, tokenizer, tmp_path, monkeypatch
):
    def refuse(*args, **kwargs):
        raise AssertionError("reference loaded by a method that does not need it")

    monkeypatch.setattr("hf_unlearn.reference.load_reference_model", refuse)
    for method in ("ga", "random_label", "ga_descent"):
        trainer, _ = build_trainer(method, trained_model_dir, forget_data, retain_data, tmp_path, tokenizer)
        assert trainer.ref_model is None


def test_resume_from_checkpoint_continues_the_same_trajectory(
    trained_model_dir, forget_data, retain_data, tokenizer, tmp_path
):
    """4 steps straight == 2 steps, checkpoint, then resume to 4 (same losses and final weights, rel 1e-5)."""
    straight, model_a = build_trainer(
        "ga_descent",
        trained_model_dir,
        forget_data,
        retain_data,
        tmp_path / "a",
        tokenizer,
        max_steps=4,
        per_device_train_batch_size=2,
        learning_rate=3e-3,
    )
    straight.train()
    first, _ = build_trainer(
        "ga_descent",
        trained_model_dir,
        forget_data,
        retain_data,
        tmp_path / "b",
        tokenizer,
        max_steps=4,
        per_device_train_batch_size=2,
        learning_rate=3e-3,
        save_strategy="steps",
        save_steps=2,
    )
    first.train()
    resumed, model_b = build_trainer(
        "ga_descent",
        trained_model_dir,
        forget_data,
        retain_data,
        tmp_path / "b",
        tokenizer,
        max_steps=4,
        per_device_train_batch_size=2,
        learning_rate=3e-3,
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "b" / "out" / "checkpoint-2"))
    losses_a = [h["loss"] for h in straight.state.log_history if "loss" in h]
    losses_b = [h["loss"] for h in resumed.state.log_history if "loss" in h]
    assert losses_b[-2:] == pytest.approx(losses_a[-2:], rel=1e-5)
    for (name, p), (_, q) in zip(model_a.named_parameters(), model_b.named_parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
