"""Turning forget / retain data into training examples.

- Documents (the paper's setting: arXiv papers, books, code) become fixed-length chunks of `max_length` tokens
  (4096 in the paper), starting with the tokenizer's own start token; the last chunk of a document is kept shorter
  (the collator pads it) down to `min_chunk_tokens` (default 2: short texts are what people unlearn; the paper's
  released data dropped chunks under 5). Labels equal the inputs.
- Question/answer records (TOFU style) become one example each, tokenised as one string, whose labels mask the
  question (-100), so that only the answer is learned or unlearned.
- Pairing forget examples with retain (and other) examples and padding them: `hf_unlearn.streams`.
"""

from __future__ import annotations

import logging
import os

from .loading import load_documents, load_records, missing_field, record_location
from .losses import IGNORE_INDEX
from .streams import UnlearningCollator, pad_sequences  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)


def check_tokenizer(tokenizer) -> None:
    """Fail early, with the fix, for a tokenizer that cannot pad."""
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"The tokenizer {type(tokenizer).__name__} has no pad token, which padding the last chunk of a document "
            "needs. Set one first, e.g. `tokenizer.pad_token = tokenizer.eos_token`."
        )


def chunk_documents(
    documents,
    tokenizer,
    max_length: int = 4096,
    text_column: str = "text",
    min_chunk_tokens: int = 2,
    add_eos: bool = True,
    num_proc: int | None = None,
    split: str = "train",
):
    """Tokenize documents and cut each into chunks of `max_length` tokens (labels = input_ids).

    Each document is cut on its own (chunks never span two documents); it starts with the tokenizer's own start
    token (BOS where the tokenizer adds one, see `start_tokens`) and, when `add_eos`, ends with EOS. Chunks shorter
    than `min_chunk_tokens` are dropped (default 2: the shortest chunk that has a next-token target; short texts such
    as a phone number are exactly what people unlearn, so they are kept). Whitespace-only documents are skipped.
    Both counts are logged. `split` picks the split of a Hub dataset id.
    """
    check_tokenizer(tokenizer)
    if min_chunk_tokens < 2:
        raise ValueError(f"min_chunk_tokens={min_chunk_tokens}: a chunk needs at least 2 tokens to have a target.")
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < min_chunk_tokens:
        raise ValueError(
            f"max_length={max_length!r} is too small: a chunk needs at least {min_chunk_tokens} tokens (min_chunk_tokens)"
            "; use a max_length such as 4096 (the paper's)."
        )
    documents = load_documents(documents, text_column=text_column, split=split)
    start = start_tokens(tokenizer)
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
    texts = documents[text_column]
    blank = sum(1 for text in texts if isinstance(text, str) and not text.strip())
    if blank:
        documents = documents.filter(lambda row: bool(row[text_column].strip()))
        logger.warning("Skipped %d whitespace-only document(s) of %d.", blank, len(texts))
        if len(documents) == 0:
            raise ValueError(
                f"All {len(texts)} documents are empty or whitespace; there is nothing to unlearn or keep."
            )

    def chunk(batch):
        ids = tokenizer(batch[text_column], add_special_tokens=False)["input_ids"]
        out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
        for doc in ids:
            doc = start + doc + eos
            for begin in range(0, len(doc), max_length):
                piece = doc[begin : begin + max_length]
                if len(piece) < min_chunk_tokens:
                    continue
                out["input_ids"].append(piece)
                out["attention_mask"].append([1] * len(piece))
                out["labels"].append(list(piece))
        return out

    chunks = documents.map(chunk, batched=True, remove_columns=documents.column_names, num_proc=num_proc)
    if len(chunks) == 0:
        raise ValueError(
            f"No chunk of at least {min_chunk_tokens} tokens was made from {len(documents)} documents; "
            "the documents are empty or too short."
        )
    logger.info("Made %d chunk(s) of at most %d tokens from %d document(s).", len(chunks), max_length, len(documents))
    return chunks


def start_tokens(tokenizer) -> list[int]:
    """The tokens the tokenizer itself puts at the start of a text (`[bos]` for Llama-style tokenizers, nothing for
    GPT-2 / SmolLM2-style ones), so documents and prompts start the way the model saw them in pre-training."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [bos] if ids and ids[0] == bos else []


def prompt_boundary(prompt: str) -> int:
    """Where the answer starts in `prompt + answer`: trailing whitespace of the prompt belongs to the answer's first
    token (byte-level BPE and SentencePiece both merge a space into the next word), so it is not part of the prompt."""
    return len(prompt.rstrip())


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt for generation: the same tokens `encode_prompt_completion` masks as the prompt."""
    return start_tokens(tokenizer) + tokenizer(prompt[: prompt_boundary(prompt)], add_special_tokens=False)["input_ids"]


def encode_prompt_completion(
    tokenizer, prompt: str, completion: str, max_length: int | None = None, add_eos: bool = True
) -> dict[str, list[int]]:
    """Tokenise `prompt + completion` as ONE string and mask the prompt by character offsets.

    Tokenising the two parts separately changes the tokens at the seam (SmolLM2: `['Answer', ':', 'Ġ', 'The']`
    instead of `['Answer', ':', 'ĠThe']`), which costs about one nat per answer token. A token is a label when it
    ends after `prompt_boundary(prompt)`; the prompt gets -100. The tokenizer's start token (BOS) comes first when
    the tokenizer adds one; EOS ends the completion when `add_eos`. Needs a fast tokenizer (offsets).
    """
    text = prompt + completion
    boundary = prompt_boundary(prompt)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is a slow tokenizer without character offsets, which prompt masking needs; "
            "load the fast one (AutoTokenizer.from_pretrained(..., use_fast=True))."
        )
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    start = start_tokens(tokenizer)
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
    input_ids = start + list(encoded["input_ids"]) + eos
    is_label = [False] * len(start) + [end > boundary for _, end in encoded["offset_mapping"]] + [True] * len(eos)
    labels = [token if keep else IGNORE_INDEX for token, keep in zip(input_ids, is_label)]
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def build_qa_dataset(
    records,
    tokenizer,
    question_column: str = "question",
    answer_column: str = "answer",
    max_length: int = 512,
    prompt_template: str = "Question: {question}\nAnswer: ",
    split: str = "train",
):
    """Question/answer records (TOFU style) as examples whose labels cover only the answer.

    The prompt and the answer are tokenised together (`encode_prompt_completion`); the prompt tokens get label
    -100, so NLL, gradient ascent and every metric act on the answer alone.
    """
    import datasets

    check_tokenizer(tokenizer)
    source = records
    if isinstance(records, (list, tuple)):
        records = datasets.Dataset.from_list(list(records))
    elif isinstance(records, (str, os.PathLike)):
        records = load_records(str(records), split)
    if len(records) == 0:
        raise ValueError("The question/answer data is empty.")
    for column in (question_column, answer_column):
        if column not in records.column_names:
            raise ValueError(missing_field(source, records, column, "set `question_column` / `answer_column`"))
        for row, value in enumerate(records[column]):
            if not isinstance(value, str):
                raise ValueError(
                    f"The {column!r} value of {record_location(source, row)} is {type(value).__name__}, not text; "
                    f"make every {column!r} a string."
                )

    def encode(record):
        prompt = prompt_template.format(question=record[question_column])
        return encode_prompt_completion(tokenizer, prompt, record[answer_column], max_length)

    return records.map(encode, remove_columns=records.column_names)


def is_conversation(value) -> bool:
    """Whether `value` is a conversation as trl's trainers take one: a list of `{"role", "content"}` messages."""
    return isinstance(value, (list, tuple)) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def _common_prefix(text: str, other: str) -> int:
    """Number of leading characters `text` and `other` share."""
    return len(os.path.commonprefix([text, other]))


def check_chat_template(tokenizer, name: str = "forget") -> None:
    """Fail with the fix when chat data meets a tokenizer without a chat template."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"The {name} set is chat data (lists of role/content messages) but the tokenizer "
            f"{type(tokenizer).__name__} has no chat template (chat_template=None): use the chat model's own tokenizer "
            "or set `tokenizer.chat_template`, or pass the data as plain text / prompt-completion strings."
        )


def encode_conversation(
    tokenizer, messages, prompt_length: int | None = None, max_length: int | None = None, where: str = "an example"
) -> dict[str, list[int]]:
    """Tokenise a conversation with the tokenizer's chat template; the labels are its assistant turns.

    `prompt_length=None` (a `messages` conversation): every assistant message is a target, everything else is -100.
    `prompt_length=n` (conversational prompt + completion, as trl's trainers take them): the first n messages are the
    prompt and the rest is the target, from the end of the prompt rendered with the generation prompt on.
    A target starts where the conversation up to it, rendered with the generation prompt, stops matching the whole
    conversation and ends where the conversation up to and including it stops matching (templates that render a
    prefix differently, e.g. an empty thought block, are handled as trl does, by the common prefix). The rendered
    text is tokenised once (special tokens come from the template) and a token is a label when its characters
    overlap a target; needs a fast tokenizer (offsets). `where` names the example in errors (never its content).
    """
    messages = list(messages)

    def render(turns, generation: bool) -> str:
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation)

    text = render(messages, False)
    if prompt_length is None:
        turns = [i for i, message in enumerate(messages) if message.get("role") == "assistant"]
        if not turns:
            roles = [message.get("role") for message in messages]
            raise ValueError(
                f"The conversation of {where} has no assistant turn (roles {roles}), so it has no target to unlearn or "
                "keep: add the assistant's answer, or drop the example."
            )
        spans = [
            (_common_prefix(text, render(messages[:i], True)), _common_prefix(text, render(messages[: i + 1], False)))
            for i in turns
        ]
    else:
        spans = [(_common_prefix(text, render(messages[:prompt_length], True)), len(text))]
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is a slow tokenizer without character offsets, which masking the prompt of "
            "chat data needs; load the fast one (AutoTokenizer.from_pretrained(..., use_fast=True))."
        )
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])
    labels = [
        token if any(start < stop and end > begin for begin, stop in spans) else IGNORE_INDEX
        for token, (start, end) in zip(input_ids, encoded["offset_mapping"])
    ]
    if all(label == IGNORE_INDEX for label in labels):
        raise ValueError(
            f"The assistant turns of {where} render to no token with the chat template: check the template "
            "(`tokenizer.chat_template`) and that the answer is not empty."
        )
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def encode_chat_dataset(records, tokenizer, max_length: int | None = None, name: str = "forget"):
    """Chat records as trl's trainers take them, tokenised with the chat template (`encode_conversation`): a
    `messages` column (the assistant turns are the targets) or conversational `prompt` + `completion` (the
    completion is the target)."""
    check_chat_template(tokenizer, name)
    columns = _column_names(records)

    def encode(row, index):
        where = f"row {index} of the {name} set"
        if "messages" in columns:
            return encode_conversation(tokenizer, row["messages"], None, max_length, where)
        if not (is_conversation(row["prompt"]) and is_conversation(row["completion"])):
            raise ValueError(
                f"In {where}, 'prompt' and 'completion' are not both lists of role/content messages: pass "
                "conversational prompt-completion (both lists) or plain strings (both strings), not a mix."
            )
        prompt = list(row["prompt"])
        return encode_conversation(tokenizer, prompt + list(row["completion"]), len(prompt), max_length, where)

    return records.map(encode, with_indices=True, remove_columns=records.column_names)


def as_hf_dataset(dataset):
    """A `datasets.Dataset` view of `dataset` (a datasets.Dataset, a list of dicts or a map-style torch Dataset)."""
    import datasets

    if isinstance(dataset, datasets.Dataset):
        return dataset
    return datasets.Dataset.from_list([dict(dataset[i]) for i in range(len(dataset))])


def build_examples(
    source,
    tokenizer,
    data_format: str = "documents",
    max_length: int = 4096,
    text_column: str = "text",
    question_column: str = "question",
    answer_column: str = "answer",
    max_examples: int | None = None,
    split: str = "train",
):
    """Examples from documents (chunked) or question/answer records (prompt-masked), optionally capped.

    `split` picks the split of a Hub dataset id (local files have one).
    """
    if data_format == "documents":
        examples = chunk_documents(source, tokenizer, max_length=max_length, text_column=text_column, split=split)
    elif data_format == "qa":
        examples = build_qa_dataset(
            source, tokenizer, question_column, answer_column, max_length=max_length, split=split
        )
    else:
        raise ValueError(f"data_format={data_format!r} is unknown; use 'documents' or 'qa'.")
    if max_examples is not None:
        examples = examples.select(range(min(max_examples, len(examples))))
    return examples


def _column_names(dataset) -> list[str]:
    if hasattr(dataset, "column_names") and dataset.column_names is not None:
        return list(dataset.column_names)
    return list(dataset[0].keys()) if len(dataset) else []


def tokenize_if_raw(dataset, tokenizer, max_length: int = 4096, name: str = "forget"):
    """`dataset` as training examples: returned as is when tokenised (`input_ids`), else tokenised as trl's trainers
    do: chat data (`messages`, or conversational `prompt` + `completion`) with the chat template and the assistant's
    turns as targets (`encode_chat_dataset`), a `text` column is chunked (`chunk_documents`), `prompt` + `completion`
    records are encoded with the prompt masked (`encode_prompt_completion`), `question` + `answer` records as
    `build_qa_dataset` builds them."""
    columns = _column_names(dataset)
    if "input_ids" in columns:
        return dataset
    if tokenizer is None or not callable(tokenizer):
        raise ValueError(
            f"The {name} set has {len(columns)} column(s) but no `input_ids`: pass `processing_class=tokenizer` so the "
            "trainer tokenises it, or tokenise it first (hf_unlearn.chunk_documents / build_qa_dataset)."
        )
    records = as_hf_dataset(dataset)
    if "messages" in columns or ("prompt" in columns and len(records) and is_conversation(records[0]["prompt"])):
        return encode_chat_dataset(records, tokenizer, max_length, name)
    if "text" in columns:
        return chunk_documents(records, tokenizer, max_length=max_length)
    if "prompt" in columns and "completion" in columns:
        first = records[0]
        if not isinstance(first["prompt"], str) or not isinstance(first["completion"], str):
            raise ValueError(
                f"The {name} set's 'prompt'/'completion' values are neither strings nor lists of role/content "
                "messages: pass both as strings, or both as conversations (trl's conversational prompt-completion)."
            )
        return records.map(
            lambda row: encode_prompt_completion(tokenizer, row["prompt"], row["completion"], max_length),
            remove_columns=records.column_names,
        )
    if "question" in columns and "answer" in columns:  # as `data_format: qa` builds them (its prompt template)
        return build_qa_dataset(records, tokenizer, max_length=max_length)
    raise ValueError(
        f"The {name} set has {len(columns)} column(s) (not listed: a column name can be the text itself) but none "
        "of the expected ones: tokenised examples (`input_ids`), raw documents (`text`), chat `messages` or records "
        "with `prompt` + `completion` (or `question` + `answer`)."
    )


def _largest_id_and_length(dataset) -> tuple[int, int]:
    """Largest token id and longest example of a dataset with `input_ids` (Arrow compute when it can: 7B-scale
    forget sets hold millions of tokens)."""
    try:
        import pyarrow.compute as pc

        column = dataset.data.column("input_ids")  # the underlying table (a superset after select: same tokens)
        largest, longest = pc.max(pc.list_flatten(column)).as_py(), pc.max(pc.list_value_length(column)).as_py()
        return (-1 if largest is None else int(largest)), (0 if longest is None else int(longest))
    except Exception:  # a list, a torch dataset, or a column Arrow cannot flatten
        rows = dataset["input_ids"] if hasattr(dataset, "column_names") else [row["input_ids"] for row in dataset]
        return max((max(ids) for ids in rows if len(ids)), default=-1), max((len(ids) for ids in rows), default=0)


def check_examples_fit_model(datasets, config, pad_token_id: int | None, model_name: str | None = None) -> None:
    """Token ids within the model's embedding matrix and examples within its positions (`max_position_embeddings`),
    checked from the model's config, so a mismatch fails with the fix instead of an IndexError or silent training."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text_config, "vocab_size", None)
    positions = getattr(text_config, "max_position_embeddings", None)
    stats = [_largest_id_and_length(data) for data in datasets]
    largest = max([s[0] for s in stats] + [pad_token_id if pad_token_id is not None else -1])
    name = f"model {model_name!r}" if model_name else "the model"
    if vocab is not None and largest >= vocab:
        raise ValueError(
            f"The data has token id {largest} but {name} has only {vocab} embeddings (vocab_size); use the model's "
            "own tokenizer or resize its embeddings first (model.resize_token_embeddings(len(tokenizer)))."
        )
    longest = max((s[1] for s in stats), default=0)
    if positions is not None and longest > positions:
        raise ValueError(
            f"The longest example has {longest} tokens but {name} has {positions} positions "
            f"(max_position_embeddings); set max_length to {positions} or less."
        )
