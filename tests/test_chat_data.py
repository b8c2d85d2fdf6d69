"""Chat data as trl's trainers take it: a `messages` column, or conversational `prompt` + `completion`, tokenised
with the tokenizer's chat template, the assistant's turns being the only targets."""

import copy

import datasets
import pytest

from hf_unlearn import GradientAscentTrainer
from hf_unlearn.data import encode_conversation, tokenize_if_raw
from tests.conftest import unlearning_args

# A small template: each turn is "<|role|>content</s>"; the generation prompt is "<|assistant|>".
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SECRET = "old man reads long book"  # assistant content: must never appear in an error message


@pytest.fixture(scope="module")
def chat_tokenizer(tokenizer):
    chat = copy.deepcopy(tokenizer)
    chat.chat_template = TEMPLATE
    return chat


def turn(role, content):
    return {"role": role, "content": content}


def targets(tokenizer, example) -> str:
    """The text of the labelled tokens of an example (each run of labels decoded on its own, joined by '|')."""
    runs, current = [], []
    for token, label in zip(example["input_ids"], example["labels"]):
        if label == -100:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(current)
    return "|".join(tokenizer.decode(run) for run in runs)


def test_messages_label_only_the_assistant_turns(chat_tokenizer):
    """Two assistant turns: both (content + the template's end-of-turn </s>) are targets, the user turns and the
    role headers are not, and the tokens are those of the whole rendered conversation."""
    messages = [
        turn("user", "who sleeps"),
        turn("assistant", "the small cat"),
        turn("user", "and then"),
        turn("assistant", SECRET),
    ]
    example = encode_conversation(chat_tokenizer, messages)
    rendered = chat_tokenizer.apply_chat_template(messages, tokenize=False)
    assert example["input_ids"] == chat_tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert example["input_ids"][0] == chat_tokenizer.bos_token_id
    assert targets(chat_tokenizer, example) == f"the small cat</s>|{SECRET}</s>"


def test_conversational_prompt_completion_masks_the_prompt(chat_tokenizer):
    """Conversational prompt + completion: the same tokens as the `messages` form of the same conversation, and the
    completion (after the generation prompt) is the target."""
    prompt, completion = [turn("system", "be brief"), turn("user", "who sleeps")], [turn("assistant", SECRET)]
    data = datasets.Dataset.from_list([{"prompt": prompt, "completion": completion}])
    example = tokenize_if_raw(data, chat_tokenizer, max_length=4096)[0]
    as_messages = encode_conversation(chat_tokenizer, prompt + completion)
    assert example["input_ids"] == as_messages["input_ids"]
    assert targets(chat_tokenizer, example) == f"{SECRET}</s>"


def test_max_length_cuts_chat_examples(chat_tokenizer):
    data = datasets.Dataset.from_list([{"messages": [turn("user", "who sleeps"), turn("assistant", SECRET)]}])
    full = tokenize_if_raw(data, chat_tokenizer, max_length=4096)[0]
    cut = tokenize_if_raw(data, chat_tokenizer, max_length=len(full["input_ids"]) - 2)[0]
    assert cut["input_ids"] == full["input_ids"][:-2] and cut["labels"] == full["labels"][:-2]


def test_trainer_unlearns_and_evaluates_chat_data(tiny_model, chat_tokenizer, tmp_path):
    """A `messages` forget set and a conversational eval set go through training and evaluation."""
    forget = datasets.Dataset.from_list(
        [{"messages": [turn("user", f"question {i}"), turn("assistant", SECRET)]} for i in range(4)]
    )
    evaluation = datasets.Dataset.from_list(
        [{"prompt": [turn("user", "who sleeps")], "completion": [turn("assistant", "the small cat")]}] * 2
    )
    args = unlearning_args("ga", tmp_path, max_steps=1, eval_strategy="steps", eval_steps=1)
    trainer = GradientAscentTrainer(
        model=tiny_model, args=args, train_dataset=forget, eval_dataset=evaluation, processing_class=chat_tokenizer
    )
    trainer.train()
    assert any("eval_loss" in entry for entry in trainer.state.log_history)
    assert targets(chat_tokenizer, trainer.forget_dataset[0]) == f"{SECRET}</s>"


def test_conversation_without_assistant_turn_is_named_not_printed(chat_tokenizer):
    data = datasets.Dataset.from_list([{"messages": [turn("user", SECRET)]}])
    with pytest.raises(
        ValueError, match=r"row 0 of the forget set has no assistant turn \(roles \['user'\]\)"
    ) as error:
        tokenize_if_raw(data, chat_tokenizer)
    assert SECRET not in str(error.value)


def test_tokenizer_without_chat_template(tokenizer):
    data = datasets.Dataset.from_list([{"messages": [turn("user", "hi"), turn("assistant", SECRET)]}])
    assert tokenizer.chat_template is None
    with pytest.raises(
        ValueError, match=r"retain set is chat data.*chat_template=None.*set `tokenizer.chat_template`"
    ) as error:
        tokenize_if_raw(data, tokenizer, name="retain")
    assert SECRET not in str(error.value)


def test_mixed_prompt_completion_is_refused(chat_tokenizer):
    data = datasets.Dataset.from_list([{"prompt": [turn("user", "hi")], "completion": SECRET}])
    with pytest.raises(
        ValueError, match="row 0 of the forget set, 'prompt' and 'completion' are not both lists"
    ) as error:
        tokenize_if_raw(data, chat_tokenizer)
    assert SECRET not in str(error.value)
