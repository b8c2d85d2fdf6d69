"""`UnlearningTrainer` as a drop-in for `transformers.Trainer`: what a Trainer script does works with the class
swapped."""

import datasets
import pytest

from hf_unlearn import GradientAscentTrainer, chunk_documents
from tests.conftest import make_documents, unlearning_args


def test_raw_eval_sets_are_tokenised_like_the_forget_set(tiny_model, tokenizer, tmp_path):
    """Evaluation during training on raw data (a `text` set, and a dict holding a `prompt`/`completion` set) runs, and
    each eval loss (and `predict`'s test loss) is the one of the same data tokenised by hand (chunk_documents / encode_prompt_completion): the
    same examples in the same order, so the same mean NLL up to float32 summation order (1e-5 relative)."""
    from hf_unlearn.data import encode_prompt_completion

    texts = make_documents(4, seed=3)
    pairs = [{"prompt": "Question: who sleeps\nAnswer: ", "completion": "the small cat"}] * 2
    raw = {"text": datasets.Dataset.from_dict({"text": texts}), "qa": datasets.Dataset.from_list(pairs)}
    args = unlearning_args("ga", tmp_path, max_steps=2, eval_strategy="steps", eval_steps=1, max_length=32)
    forget = datasets.Dataset.from_dict({"text": make_documents(8, seed=1)})
    trainer = GradientAscentTrainer(
        model=tiny_model, args=args, train_dataset=forget, eval_dataset=raw, processing_class=tokenizer
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "eval_text_loss" in entry]
    assert [entry["step"] for entry in logged] == [1, 2]
    by_hand = {
        "text": chunk_documents(texts, tokenizer, max_length=32),
        "qa": datasets.Dataset.from_list(
            [encode_prompt_completion(tokenizer, p["prompt"], p["completion"], 32) for p in pairs]
        ),
    }
    for name, dataset in by_hand.items():
        expected = trainer.evaluate(eval_dataset=dataset)["eval_loss"]
        assert trainer.evaluate(eval_dataset=raw[name])["eval_loss"] == pytest.approx(expected, rel=1e-5)
        assert trainer.evaluate()[f"eval_{name}_loss"] == pytest.approx(expected, rel=1e-5)
        assert trainer.predict(raw[name]).metrics["test_loss"] == pytest.approx(expected, rel=1e-5)


def test_group_by_length_groups_by_the_forget_examples_lengths(
    tiny_model, tokenizer, forget_data, retain_data, tmp_path
):
    """`train_sampling_strategy="group_by_length"` samples the paired examples by their forget example's length:
    Trainer's LengthGroupedSampler over the forget lengths, which puts the longest example in the first batch."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from hf_unlearn import GradientAscentDescentTrainer

    args = unlearning_args("ga_descent", tmp_path, train_sampling_strategy="group_by_length")
    trainer = GradientAscentDescentTrainer(
        model=tiny_model, args=args, train_dataset=forget_data, retain_dataset=retain_data, processing_class=tokenizer
    )
    sampler = trainer._get_train_sampler()
    lengths = [len(ids) for ids in forget_data["input_ids"]]
    assert isinstance(sampler, LengthGroupedSampler) and sampler.lengths == lengths
    first = next(iter(trainer.get_train_dataloader()))
    assert first["forget"]["input_ids"].shape[1] == max(lengths)
    trainer.train()


def test_num_input_tokens_seen_counts_forget_and_retain_tokens(tiny_model, tokenizer, tmp_path):
    """`include_num_input_tokens_seen="non_padding"` counts every real input token the training forward passes read:
    two steps of 4 over 8 forget and 8 retain documents (each one chunk, under max_length) use every forget and every
    retain example once (one epoch; the retain pairing is a permutation), so the count is the tokens of both sets."""
    from hf_unlearn import GradientAscentDescentTrainer

    forget = chunk_documents(make_documents(8, seed=1), tokenizer, max_length=256)
    retain = chunk_documents(make_documents(8, seed=2), tokenizer, max_length=256)
    assert len(forget) == len(retain) == 8
    expected = sum(map(len, forget["input_ids"])) + sum(map(len, retain["input_ids"]))
    args = unlearning_args("ga_descent", tmp_path, max_steps=2, include_num_input_tokens_seen="non_padding")
    trainer = GradientAscentDescentTrainer(
        model=tiny_model, args=args, train_dataset=forget, retain_dataset=retain, processing_class=tokenizer
    )
    trainer.train()
    assert trainer.state.num_input_tokens_seen == expected


@pytest.mark.parametrize(
    "method, forget_loss, retain_loss, expected",
    [
        ("npo", None, None, "**Negative Preference Optimization (Zhang et al. 2024)** (`method: npo`)"),
        ("npo", None, "kl", "**forget_loss `npo` + retain_loss `kl`** (`method: npo`)"),
        (
            "ga",
            "npo",
            "nll",
            "**Negative Preference Optimization (Zhang et al. 2024) (forget_loss `npo` + "
            "retain_loss `nll`)** (`method: ga`)",
        ),
        ("ga_descent", None, "none", "**Gradient ascent (forget_loss `ga`, no retain loss)** (`method: ga_descent`)"),
    ],
)
def test_model_card_names_the_objectives_that_ran(
    method, forget_loss, retain_loss, expected, tokenizer, forget_data, retain_data, tmp_path
):
    """A config that composes objectives (forget_loss / retain_loss) on a method gets a card describing those
    objectives, not the method's paper name."""
    from hf_unlearn import get_method
    from hf_unlearn.testing import build_llama

    def model():
        return build_llama(len(tokenizer), hidden_size=32, layers=2, heads=2)

    args = unlearning_args(method, tmp_path, forget_loss=forget_loss, retain_loss=retain_loss)
    trainer = get_method(method)(
        model=model(),
        args=args,
        train_dataset=forget_data,
        retain_dataset=retain_data,
        processing_class=tokenizer,
        ref_model=model(),
    )
    trainer.write_model_card(str(tmp_path / "card"))
    assert expected in (tmp_path / "card" / "README.md").read_text()


# ------------------------------------------------------------------ a Trainer script with the class swapped

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def trainer_script(trainer_class, model, tokenizer, output_dir, args_class=None, callbacks=()):
    """What a user's `transformers.Trainer` script does, the trainer class aside: raw text to train on, raw text and
    chat data to evaluate on during training, `TrainingArguments` (or the user's subclass of them), callbacks."""
    from transformers import TrainingArguments

    args = (args_class or TrainingArguments)(
        output_dir=output_dir,
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="steps",
        eval_steps=1,
        seed=0,
    )
    train = datasets.Dataset.from_dict({"text": make_documents(8, seed=1)})
    chat = datasets.Dataset.from_list(
        [{"messages": [{"role": "user", "content": "who sleeps"}, {"role": "assistant", "content": "the small cat"}]}]
        * 2
    )
    evaluation = {"text": datasets.Dataset.from_dict({"text": make_documents(4, seed=3)}), "chat": chat}
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    trainer.train()
    return trainer, args


@pytest.fixture
def chat_tokenizer(tokenizer):
    import copy

    chat = copy.deepcopy(tokenizer)
    chat.chat_template = CHAT_TEMPLATE
    return chat


def test_trainer_script_runs_with_the_class_swapped(tiny_model, chat_tokenizer, tmp_path):
    """Plain TrainingArguments, raw text training data, raw text + chat evaluation sets: both evaluated at each step."""
    trainer, _ = trainer_script(GradientAscentTrainer, tiny_model, chat_tokenizer, str(tmp_path / "out"))
    steps = {
        name: [e["step"] for e in trainer.state.log_history if f"eval_{name}_loss" in e] for name in ("text", "chat")
    }
    assert steps == {"text": [1, 2], "chat": [1, 2]}


def test_training_arguments_subclass_reaches_callbacks(tiny_model, chat_tokenizer, tmp_path):
    """The user's TrainingArguments subclass, with a field of its own, is the `args` every callback receives."""
    from dataclasses import dataclass, field

    from transformers import TrainerCallback, TrainingArguments

    @dataclass
    class ScriptArguments(TrainingArguments):
        report_name: str = field(default="mine", metadata={"help": "A field of the user's own."})

    class ReadsTheField(TrainerCallback):
        def __init__(self):
            self.seen = []

        def on_step_end(self, args, state, control, **kwargs):
            self.seen.append(args.report_name)

    callback = ReadsTheField()
    trainer, args = trainer_script(
        GradientAscentTrainer, tiny_model, chat_tokenizer, str(tmp_path / "out"), ScriptArguments, [callback]
    )
    assert callback.seen == ["mine", "mine"]
    assert trainer.args.report_name == "mine"


def test_batch_rebalance_samples_the_forget_lengths(tiny_model, tokenizer, forget_data, retain_data, tmp_path):
    """`train_sampling_strategy="batch_rebalance"` (the other length-based strategy) reads the forget lengths too."""
    from transformers.trainer_pt_utils import BatchRebalanceSampler

    from hf_unlearn import GradientAscentDescentTrainer

    args = unlearning_args("ga_descent", tmp_path, max_steps=1, train_sampling_strategy="batch_rebalance")
    trainer = GradientAscentDescentTrainer(
        model=tiny_model, args=args, train_dataset=forget_data, retain_dataset=retain_data, processing_class=tokenizer
    )
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, BatchRebalanceSampler)
    assert sorted(index for batch in sampler for index in batch) == list(range(len(forget_data)))
    trainer.train()
