"""Regression tests for the core defects."""

from __future__ import annotations

import configparser
import math
import os
import threading

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_unlearn import chunk_documents, get_method
from tests._support import first_step, varied_examples
from tests.conftest import make_documents, unlearning_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ["ga", "random_label", "adversarial", "ga_descent", "ga_kl"]


@pytest.mark.parametrize("method", METHODS)
def test_left_and_right_padding_give_the_same_loss_and_gradient(method, trained_model_dir, tokenizer, tmp_path):
    """With left padding, the pad before each row's first token is never scored against that token.

    Same examples, same model, only the padding side differs. The target sets are identical by construction (a
    target counts only between two real tokens) and position ids follow the mask, so the only difference left is
    float32 summation order over padded (exactly-zero-weighted) keys: a relative error of a few float32 epsilons
    (1.2e-7) per reduction. Tolerance: 1e-6 of the summed magnitudes of the loss terms (GA + descent is a
    difference of two ~2.5-nat means, so a tolerance relative to the ~0.04 result would measure cancellation, not
    the loss), and 1e-5 relative to the gradient's largest entry. The old code was off by 0.036-0.50 in the loss
    and 0.08-0.50 in the gradient.
    """
    forget, retain = varied_examples(tokenizer, 21), varied_examples(tokenizer, 22)
    right_loss, right_grad, magnitude = first_step(
        method, trained_model_dir, tokenizer, forget, retain, tmp_path, "right"
    )
    left_loss, left_grad, _ = first_step(method, trained_model_dir, tokenizer, forget, retain, tmp_path, "left")
    assert abs(left_loss - right_loss) <= 1e-6 * magnitude
    scale = right_grad.abs().max().item()
    assert scale > 0
    assert (left_grad - right_grad).abs().max().item() <= 1e-5 * scale


def test_random_label_seed_changes_the_labels(trained_model_dir, forget_data, tokenizer, tmp_path):
    """Seeds 0, 1 and 7 draw different labels (a 32-bit seed that kept only the index would draw the same)."""
    draws = {}
    for seed in (0, 1, 7, 0):
        model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
        trainer = get_method("random_label")(
            model=model,
            args=unlearning_args("random_label", tmp_path / str(seed), random_label_seed=seed),
            train_dataset=forget_data,
            processing_class=tokenizer,
        )
        labels = trainer.forget_dataset["random_labels"]
        assert draws.setdefault(seed, labels) == labels  # the same seed draws the same labels
    assert draws[0] != draws[1] and draws[0] != draws[7] and draws[1] != draws[7]


def test_compute_loss_after_train_uses_its_own_batch(trained_model_dir, forget_data, tokenizer, tmp_path):
    """After train(), compute_loss divides by the micro-batch's own count, not the last training step's global one.

    GA's loss on one micro-batch outside the training loop is -(mean NLL of that batch's targets), computed here
    independently with the model's own shifted cross-entropy (right padding, labels -100 at padding).
    """
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    trainer = get_method("ga")(
        model=model,
        args=unlearning_args("ga", tmp_path, per_device_train_batch_size=8, gradient_accumulation_steps=2, max_steps=1),
        train_dataset=forget_data,
        processing_class=tokenizer,
    )
    trainer.train()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    model.eval()
    with torch.no_grad():
        expected = -model(**batch["forget"]).loss.item()
    model.train()
    with torch.no_grad():
        assert trainer.compute_loss(model, batch).item() == pytest.approx(expected, rel=1e-5)


class RecordingModel(torch.nn.Module):
    """Wraps a causal LM and records the keyword arguments of every forward call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config, self.calls = inner, inner.config, []

    def forward(self, **kwargs):
        self.calls.append(set(kwargs) | ({"use_cache=False"} if kwargs.get("use_cache") is False else set()))
        return self.inner(**kwargs)


def test_reference_and_policy_forward_build_no_kv_cache(
    trained_model_dir, forget_data, retain_data, tokenizer, tmp_path
):
    """No forward pass builds a KV cache: every forward pass of a ga_kl step, policy and reference, passes
    use_cache=False."""
    policy = RecordingModel(AutoModelForCausalLM.from_pretrained(trained_model_dir))
    reference = RecordingModel(AutoModelForCausalLM.from_pretrained(trained_model_dir))
    trainer = get_method("ga_kl")(
        model=policy,
        args=unlearning_args("ga_kl", tmp_path, max_steps=1),
        train_dataset=forget_data,
        retain_dataset=retain_data,
        processing_class=tokenizer,
        ref_model=reference,
    )
    trainer.train()
    assert policy.calls and reference.calls
    assert all("use_cache=False" in call for call in policy.calls + reference.calls)


def test_transformers_version_floor():
    """Transformers below 5.19 divide the loss by the accumulation steps again (loss_is_scaled_for_ga): refused."""
    from hf_unlearn.trainer import MIN_TRANSFORMERS, check_transformers_version

    with pytest.raises(ImportError, match="transformers>=5.19"):
        check_transformers_version("5.18.2")
    check_transformers_version("5.19.0")
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    requires = config["options"]["install_requires"]
    assert f"transformers>={MIN_TRANSFORMERS}" in requires
    assert "scikit-learn" in requires  # the core evaluation callback needs it


def test_label_smoothing_is_refused(tmp_path):
    """label_smoothing_factor, which the unlearning loss does not apply, is an error rather than ignored."""
    with pytest.raises(ValueError, match="label_smoothing_factor=0.1"):
        unlearning_args("ga", tmp_path, label_smoothing_factor=0.1)


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -1.0])
def test_non_finite_or_negative_weights_are_refused(weight, tmp_path):
    with pytest.raises(ValueError, match="forget_weight"):
        unlearning_args("ga", tmp_path, forget_weight=weight)


def test_ga_kl_without_retain_weight_loads_no_reference(
    trained_model_dir, forget_data, retain_data, tokenizer, tmp_path, monkeypatch
):
    """ga_kl with retain_weight=0 loads no reference model."""

    def refuse(*args, **kwargs):
        raise AssertionError("reference loaded although the KL term is off")

    monkeypatch.setattr("hf_unlearn.reference.load_reference_model", refuse)
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    trainer = get_method("ga_kl")(
        model=model,
        args=unlearning_args("ga_kl", tmp_path, retain_weight=0.0, max_steps=1),
        train_dataset=forget_data,
        retain_dataset=retain_data,
        processing_class=tokenizer,
    )
    trainer.train()
    assert trainer.ref_model is None and "retain_loss" not in trainer.state.log_history[0]


def test_make_test_fast_deselects_gpu_tests():
    """`make test-fast` keeps addopts' `-m 'not gpu'` (its own -m must exclude the gpu-marked tests too)."""
    with open(os.path.join(ROOT, "Makefile")) as handle:
        line = next(row for row in handle if "pytest" in row and "not slow" in row)
    assert "not gpu" in line


# ---------------------------------------------------------------- the precompute cache


def adversarial_trainer(model, forget, tokenizer, out, cache):
    return get_method("adversarial")(
        model=model,
        args=unlearning_args("adversarial", out, cache_dir=str(cache)),
        train_dataset=forget,
        processing_class=tokenizer,
        ref_model=model,
    )


def cache_files(cache):
    return sorted(str(p) for p in cache.rglob("*.safetensors"))


def test_cache_is_keyed_by_weights_not_by_path(trained_model_dir, forget_data, tokenizer, tmp_path):
    """A model changed in memory, or a different model saved under the same folder, gets new targets."""
    cache = tmp_path / "cache"
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    first = adversarial_trainer(model, forget_data, tokenizer, tmp_path / "a", cache).forget_dataset[
        "adversarial_labels"
    ]
    assert len(cache_files(cache)) == 1
    again = adversarial_trainer(model, forget_data, tokenizer, tmp_path / "b", cache).forget_dataset[
        "adversarial_labels"
    ]
    assert again == first and len(cache_files(cache)) == 1  # a hit
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)  # a different model under the same name_or_path
    changed = adversarial_trainer(model, forget_data, tokenizer, tmp_path / "c", cache).forget_dataset[
        "adversarial_labels"
    ]
    assert changed != first and len(cache_files(cache)) == 2


def test_corrupt_cache_entry_is_recomputed(trained_model_dir, forget_data, tokenizer, tmp_path, caplog):
    cache = tmp_path / "cache"
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    first = adversarial_trainer(model, forget_data, tokenizer, tmp_path / "a", cache).forget_dataset[
        "adversarial_labels"
    ]
    (path,) = cache_files(cache)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    again = adversarial_trainer(model, forget_data, tokenizer, tmp_path / "b", cache).forget_dataset[
        "adversarial_labels"
    ]
    assert again == first
    assert "unreadable precomputed cache file" in caplog.text
    from safetensors import safe_open  # the rewritten entry is a valid safetensors file (never a pickle)

    with safe_open(path, framework="pt") as handle:
        assert set(handle.keys()) == {"values", "lengths"}


def test_cache_entry_that_does_not_match_the_data_is_recomputed(tmp_path, caplog):
    from hf_unlearn.precompute import load_values, save_values

    path = str(tmp_path / "entry.safetensors")
    save_values(path, [torch.tensor([1, 2, 3]), torch.tensor([4])], key="k")
    assert [v.tolist() for v in load_values(path, "k", [3, 1])] == [[1, 2, 3], [4]]
    assert load_values(path, "other-key", [3, 1]) is None
    assert load_values(path, "k", [2, 2]) is None
    assert "do not match" in caplog.text


def test_concurrent_writers_do_not_collide(tmp_path):
    """A fixed `.tmp` name made two runs writing the same entry crash; each writer now has its own temp file."""
    from hf_unlearn.precompute import load_values, save_values

    path = str(tmp_path / "entry.safetensors")
    errors = []

    def write(value):
        try:
            for _ in range(20):
                save_values(path, [torch.full((50,), value)], key="k")
        except Exception as error:  # noqa: BLE001 - any failure is the bug
            errors.append(error)

    threads = [threading.Thread(target=write, args=(v,)) for v in (1, 2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert load_values(path, "k", [50]) is not None
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]


def test_no_cache_folder_writes_nothing(trained_model_dir, forget_data, tokenizer, tmp_path, monkeypatch):
    """Without cache_dir the targets live in memory only (privacy: they are derived from the forget text)."""
    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    trainer = get_method("adversarial")(
        model=model,
        args=unlearning_args("adversarial", tmp_path / "out"),
        train_dataset=forget_data,
        processing_class=tokenizer,
        ref_model=model,
    )
    assert len(trainer.forget_dataset["adversarial_labels"]) == len(forget_data)
    assert not (tmp_path / "env-cache").exists() and not (tmp_path / "home").exists()


# ---------------------------------------------------------------- QA tokenisation and BOS


def qa_tokenizer(with_bos: bool):
    from tokenizers import processors

    from hf_unlearn.testing import build_tokenizer

    texts = ["Question: Who wrote the book?\nAnswer: The author wrote it."] * 50 + make_documents(50, seed=3)
    tokenizer = build_tokenizer(texts, vocab_size=600)
    if with_bos:
        tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)]
        )
    return tokenizer


@pytest.mark.parametrize("with_bos", [False, True])
def test_qa_is_tokenised_jointly_with_the_prompt_masked(with_bos):
    """Question and answer are tokenised together ('ĠThe', not 'Ġ' + 'The' from separate calls), with the BOS.

    The example must be exactly the tokenizer's own encoding of prompt + answer (with its BOS if it adds one) plus
    EOS, and the labels must be -100 on the prompt tokens and the token ids on the answer tokens.
    """
    from hf_unlearn import build_qa_dataset

    tokenizer = qa_tokenizer(with_bos)
    prompt, answer = "Question: Who wrote the book?\nAnswer: ", "The author wrote it."
    example = build_qa_dataset([{"question": "Who wrote the book?", "answer": answer}], tokenizer)[0]
    joint = tokenizer(prompt + answer)["input_ids"] + [tokenizer.eos_token_id]
    assert example["input_ids"] == joint
    assert "ĠThe" in tokenizer.convert_ids_to_tokens(example["input_ids"])
    answer_ids = [t for t, label in zip(example["input_ids"], example["labels"]) if label != -100]
    assert tokenizer.decode(answer_ids, skip_special_tokens=True).strip() == answer
    assert example["labels"][0] == -100 and (example["input_ids"][0] == tokenizer.bos_token_id) == with_bos
    # Generation prompts are the masked prefix exactly.
    from hf_unlearn.evaluation.generation import answer_prompts

    (prompt_ids,) = answer_prompts(tokenizer, ["Who wrote the book?"], "Question: {question}\nAnswer: ")
    masked = [t for t, label in zip(example["input_ids"], example["labels"]) if label == -100]
    assert prompt_ids == masked


def test_documents_start_with_the_tokenizers_bos():
    tokenizer = qa_tokenizer(with_bos=True)
    chunks = chunk_documents(["the quick brown fox " * 20], tokenizer, max_length=16)
    assert chunks[0]["input_ids"][0] == tokenizer.bos_token_id
    assert all(chunk[0] != tokenizer.bos_token_id for chunk in chunks["input_ids"][1:])  # only at the start


def test_short_documents_are_kept(tokenizer):
    """documents shorter than 5 tokens were dropped silently; short PII is what people unlearn."""
    chunks = chunk_documents(["fox", "the cat", "   "], tokenizer, max_length=32)
    assert len(chunks) == 2 and all(len(ids) >= 2 for ids in chunks["input_ids"])


# ---------------------------------------------------------------- golden values through train()


def test_golden_value_through_train(tmp_path):
    """The GA + descent golden value of tests/test_methods.py (-0.5 ln 2), logged by train() at step 1 (lr 0)."""
    from tests._support import BigramLM, W, example

    model = BigramLM(W)
    trainer = get_method("ga_descent")(
        model=model,
        args=unlearning_args("ga_descent", tmp_path, max_steps=1, learning_rate=0.0, optim="sgd", max_grad_norm=0.0),
        train_dataset=[example([0, 1, 2])],
        retain_dataset=[example([1, 1, 0])],
    )
    trainer.train()
    logged = trainer.state.log_history[0]
    assert math.isclose(logged["loss"], -0.5 * math.log(2), rel_tol=1e-6)
    assert math.isclose(logged["forget_nll"], math.log(4), rel_tol=1e-6)
    assert math.isclose(logged["retain_loss"], 1.5 * math.log(2), rel_tol=1e-6)


def test_raw_text_and_prompt_completion_datasets_train(trained_model_dir, tokenizer, tmp_path):
    """raw `text` and trl's prompt/completion datasets are tokenised by the trainer."""
    import datasets

    text = datasets.Dataset.from_dict({"text": make_documents(6, seed=4)})
    pairs = datasets.Dataset.from_list([{"prompt": "the cat ", "completion": "sleeps near warm fire."}] * 4)
    for forget in (text, pairs):
        model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
        trainer = get_method("ga_descent")(
            model=model,
            args=unlearning_args("ga_descent", tmp_path, max_steps=1),
            train_dataset=forget,
            retain_dataset=text,
            processing_class=tokenizer,
        )
        trainer.train()
        assert trainer.state.log_history[0]["forget_nll"] > 0
    assert -100 in trainer.forget_dataset[0]["labels"]  # the prompt is masked


def test_evaluation_only_use_needs_no_forget_set(trained_model_dir, forget_data, tokenizer, tmp_path):
    """`trainer.evaluate()` without a forget set works; `train()` then asks for one."""
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    trainer = get_method("ga")(
        model=model, args=unlearning_args("ga", tmp_path), processing_class=tokenizer, eval_dataset=forget_data
    )
    assert trainer.evaluate()["eval_loss"] > 0
    with pytest.raises(ValueError, match="needs the forget set"):
        trainer.train()


def test_examples_longer_than_the_models_positions_are_refused(tokenizer, forget_data, tmp_path):
    """Through the public API too: a Llama with 16 positions and 32-token chunks trained silently."""
    from hf_unlearn.testing import build_llama

    model = build_llama(len(tokenizer), hidden_size=16, layers=1, heads=2, max_position_embeddings=16)
    with pytest.raises(ValueError, match=r"has 16 positions \(max_position_embeddings\); set max_length to 16"):
        get_method("ga")(
            model=model, args=unlearning_args("ga", tmp_path), train_dataset=forget_data, processing_class=tokenizer
        )


def test_raw_question_answer_records_are_built_like_data_format_qa(trained_model_dir, tokenizer, tmp_path):
    """Raw `question`/`answer` records given to the trainer become exactly `build_qa_dataset`'s examples (its prompt
    template), as the recipe's `data_format: qa` builds them."""
    import datasets

    from hf_unlearn import build_qa_dataset

    records = [{"question": "who sleeps near the fire", "answer": "the small cat."}] * 3
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    trainer = get_method("ga")(
        model=model,
        args=unlearning_args("ga", tmp_path),
        processing_class=tokenizer,
        train_dataset=datasets.Dataset.from_list(records),
    )
    expected = build_qa_dataset(records, tokenizer, max_length=trainer.args.max_length)
    assert trainer.forget_dataset["input_ids"] == expected["input_ids"]
    assert trainer.forget_dataset["labels"] == expected["labels"]
