"""Data loading, configuration parsing, and every promised error on bad input."""

import json

import datasets
import pytest

from hf_unlearn import (
    GradientAscentDescentTrainer,
    GradientAscentTrainer,
    build_qa_dataset,
    chunk_documents,
    get_method,
)
from hf_unlearn.config import UnlearningConfig
from hf_unlearn.scripts.args import parse_args
from tests._support import SECRET_KEY
from tests.conftest import make_documents, unlearning_args

# ------------------------------------------------------------------ data


def test_chunking_cuts_each_document_and_drops_tiny_chunks(tokenizer):
    """A document of n tokens + EOS becomes ceil((n+1)/L) chunks; a last chunk under 2 tokens (no target) is dropped."""
    text = make_documents(1, seed=5, min_words=60, max_words=60)[0]
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1  # + EOS
    chunks = chunk_documents([text], tokenizer, max_length=16)
    full, rest = divmod(n, 16)
    assert len(chunks) == full + (1 if rest >= 2 else 0)
    assert all(len(ids) == 16 for ids in chunks["input_ids"][:full])
    assert chunks[0]["labels"] == chunks[0]["input_ids"]
    if rest >= 2:  # the kept short chunk is the document's end
        assert chunks["input_ids"][-1][-1] == tokenizer.eos_token_id and len(chunks["input_ids"][-1]) == rest


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "parquet", "dataset", "list"])
def test_documents_from_every_source(fmt, tokenizer, tmp_path):
    texts = make_documents(3, seed=9)
    if fmt == "txt":
        source = tmp_path / "doc.txt"
        source.write_text(texts[0])
        expected_docs = 1  # a .txt file is one document
    elif fmt == "jsonl":
        source = tmp_path / "docs.jsonl"
        source.write_text("\n".join(json.dumps({"text": t}) for t in texts))
        expected_docs = 3
    elif fmt == "parquet":
        source = tmp_path / "docs.parquet"
        datasets.Dataset.from_dict({"text": texts}).to_parquet(str(source))
        expected_docs = 3
    elif fmt == "dataset":
        source, expected_docs = datasets.Dataset.from_dict({"text": texts}), 3
    else:
        source, expected_docs = texts, 3
    chunks = chunk_documents(str(source) if fmt in ("txt", "jsonl", "parquet") else source, tokenizer, max_length=4096)
    assert len(chunks) == expected_docs


def test_qa_records_mask_the_prompt(tokenizer):
    records = [{"question": "who is the old man", "answer": "a quick fox"}]
    example = build_qa_dataset(records, tokenizer)[0]
    from hf_unlearn.data import encode_prompt

    # The prompt's trailing space belongs to the answer's first token (joint tokenisation, see encode_prompt_completion).
    prompt_len = len(encode_prompt(tokenizer, "Question: who is the old man\nAnswer: "))
    assert example["labels"][:prompt_len] == [-100] * prompt_len
    assert example["labels"][prompt_len:] == example["input_ids"][prompt_len:]
    assert tokenizer.decode(example["input_ids"][prompt_len:-1]).strip() == "a quick fox"


# ------------------------------------------------------------------ errors


def test_empty_data(tokenizer):
    with pytest.raises(ValueError, match="is empty"):
        chunk_documents([], tokenizer)


def test_missing_text_column(tokenizer):
    data = datasets.Dataset.from_dict({"body": ["some text here"]})
    with pytest.raises(
        ValueError, match=r"no 'text' field \(record 1 of Dataset has 1 other field.*text_column"
    ) as error:
        chunk_documents(data, tokenizer)
    assert "body" not in str(error.value)


def test_missing_data_file(tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        chunk_documents(str(tmp_path / "nope.jsonl"), tokenizer)


def test_tokenizer_without_pad_token(tokenizer):
    no_pad = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="</s>")
    assert no_pad.pad_token is None
    with pytest.raises(ValueError, match=r"no pad token.*tokenizer.pad_token = tokenizer.eos_token"):
        chunk_documents(["some text"], no_pad)


def test_method_needing_retain_data_without_it(tiny_model, forget_data, tmp_path):
    with pytest.raises(
        ValueError, match=r"'ga_descent' has a retain objective \(nll\) and needs retain data: pass `retain_dataset=`"
    ):
        GradientAscentDescentTrainer(
            model=tiny_model, args=unlearning_args("ga_descent", tmp_path), train_dataset=forget_data
        )


def test_empty_forget_set(tiny_model, tokenizer, tmp_path):
    empty = datasets.Dataset.from_dict({"input_ids": [], "attention_mask": [], "labels": []})
    with pytest.raises(ValueError, match="forget set .* is empty"):
        GradientAscentTrainer(
            model=tiny_model, args=unlearning_args("ga", tmp_path), train_dataset=empty, processing_class=tokenizer
        )


def test_empty_retain_set(tiny_model, forget_data, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="retain dataset is empty"):
        GradientAscentDescentTrainer(
            model=tiny_model,
            args=unlearning_args("ga_descent", tmp_path),
            train_dataset=forget_data,
            retain_dataset=[],
            processing_class=tokenizer,
        )


def test_reference_needed_but_not_identifiable(tiny_model, forget_data, retain_data, tokenizer, tmp_path):
    cls = get_method("ga_kl")
    with pytest.raises(ValueError, match=r"needs the original model.*Pass `ref_model=`"):
        cls(
            model=tiny_model,
            args=unlearning_args("ga_kl", tmp_path),
            train_dataset=forget_data,
            retain_dataset=retain_data,
            processing_class=tokenizer,
        )


def test_unknown_method_name():
    with pytest.raises(ValueError, match=r"Unknown unlearning method 'gradient_ascent'; choose one of .*ga_kl"):
        get_method("gradient_ascent")


def test_negative_weight():
    with pytest.raises(ValueError, match=r"retain_weight=-1.0 is not a finite number >= 0"):
        UnlearningConfig(output_dir="x", retain_weight=-1.0)


# ------------------------------------------------------------------ configuration


def write_yaml(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_config_defaults_follow_the_paper():
    config = UnlearningConfig(output_dir="x")
    assert config.learning_rate == 2e-5 and config.lr_scheduler_type == "cosine"
    assert config.warmup_steps == 0.03 and config.weight_decay == 0.0 and config.max_length == 4096


def test_yaml_with_command_line_overrides(tmp_path):
    path = write_yaml(
        tmp_path, "method: random_label\nlearning_rate: 1.0e-4\nrandom_label_seed: 7\nforget_data: f.jsonl\n"
    )
    args, script, _ = parse_args(["--config", path, "--learning_rate", "3e-4", "--output_dir", str(tmp_path)])
    assert type(args).__name__ == "RandomLabelConfig"
    assert args.learning_rate == 3e-4 and args.random_label_seed == 7 and args.method == "random_label"
    assert script.forget_data == "f.jsonl"


def test_method_override_on_command_line_picks_its_config(tmp_path):
    path = write_yaml(tmp_path, "method: ga\n")
    args, _, _ = parse_args(["--config", path, "--method", "adversarial", "--adversarial_batch_size", "2"])
    assert args.method == "adversarial" and args.adversarial_batch_size == 2


def test_unknown_config_key_is_named(tmp_path):
    path = write_yaml(tmp_path, "method: ga\nlearning_rte: 1.0e-4\n")
    with pytest.raises(ValueError, match=r"Unknown key\(s\) in .*'learning_rte' \(did you mean 'learning_rate'\?\)"):
        parse_args(["--config", path])


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Config file .*missing.yaml' does not exist"):
        parse_args(["--config", str(tmp_path / "missing.yaml")])


def test_unknown_method_in_config(tmp_path):
    path = write_yaml(tmp_path, "method: npoo\n")
    with pytest.raises(ValueError, match="Unknown unlearning method 'npoo'"):
        parse_args(["--config", path])


def test_compute_loss_func_is_refused(tiny_model, forget_data, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="compute_loss_func"):
        GradientAscentTrainer(
            model=tiny_model,
            args=unlearning_args("ga", tmp_path),
            train_dataset=forget_data,
            processing_class=tokenizer,
            compute_loss_func=lambda *a, **k: 0,
        )


# ------------------------------------------------------------------ values where one is expected


def test_yaml_list_where_one_value_is_expected(tmp_path):
    path = write_yaml(tmp_path, "method: ga\nforget_data:\n  - a.jsonl\n  - b.jsonl\n")
    with pytest.raises(ValueError, match=r"forget_data in .* is a list, but it takes a single value"):
        parse_args(["--config", path])
    path = write_yaml(tmp_path, "method: ga\nlearning_rate: [1.0e-4, 2.0e-4]\n")
    with pytest.raises(ValueError, match=r"learning_rate in .* is a list"):
        parse_args(["--config", path])


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_number_in_yaml(tmp_path, value):
    path = write_yaml(tmp_path, f"method: ga\nforget_weight: {value}\n")
    with pytest.raises(ValueError, match=r"forget_weight=.* is not a finite number"):
        parse_args(["--config", path])


def test_non_finite_number_on_the_command_line(tmp_path):
    with pytest.raises(ValueError, match=r"max_retain_nll_increase=nan is not a finite number"):
        parse_args(["--output_dir", str(tmp_path), "--max_retain_nll_increase", "nan"])
    with pytest.raises(ValueError, match=r"retain_weight=inf is not a finite number"):
        parse_args(["--output_dir", str(tmp_path), "--retain_weight", "inf"])


def test_every_default_is_a_valid_single_value():
    """The check covers every single-valued field of every method's config, and no default trips it."""
    from hf_unlearn import list_methods
    from hf_unlearn.scripts.args import ScriptArguments, check_single_values, scalar_fields

    for name in list_methods():
        config = get_method(name).config_class(output_dir="x")
        assert {"forget_weight", "learning_rate", "max_length", "method"} <= set(scalar_fields(type(config)))
        check_single_values(config)
    assert {"forget_data", "max_retain_nll_increase"} <= set(scalar_fields(ScriptArguments))


# ------------------------------------------------------------------ data files


def test_empty_jsonl(tokenizer, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(ValueError, match=r"empty\.jsonl' is empty"):
        chunk_documents(str(path), tokenizer)


def test_non_utf8_file_is_named(tokenizer, tmp_path):
    for name, content in (("latin.jsonl", b'{"text": "caf\xe9"}\n'), ("latin.txt", b"caf\xe9")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=rf"{name}' is not UTF-8 text .*re-encode it as UTF-8"):
            chunk_documents(str(path), tokenizer)


def test_non_string_text_names_column_and_row_not_the_value(tokenizer, tmp_path):
    path = tmp_path / "numbers.jsonl"
    path.write_text('{"text": "fine"}\n{"text": 4821977}\n')
    with pytest.raises(ValueError, match=r"Field 'text' of line 2 of .*numbers.jsonl' is int") as error:
        chunk_documents(str(path), tokenizer)
    assert "4821977" not in str(error.value)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"text": 4821977}\n{"text": "Jane Roe"}\n')
    with pytest.raises(ValueError, match=r"Field 'text' of line 2") as error:
        chunk_documents(str(mixed), tokenizer)
    assert "Jane" not in str(error.value) and "4821977" not in str(error.value)
    with pytest.raises(ValueError, match=r"Row 2 of column 'text' in the list of documents is NoneType"):
        chunk_documents(["a b", "c d", None], tokenizer)


def test_bad_json_line_is_named_without_its_content(tokenizer, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "Jane Roe 482-19\n')
    with pytest.raises(ValueError, match=r"Line 2 of .*broken.jsonl' is not valid JSON") as error:
        chunk_documents(str(path), tokenizer)
    assert "Jane" not in str(error.value)


# ------------------------------------------------------------------ errors about forget data quote none of it


def full_error(error: BaseException) -> str:
    """The error as a traceback prints it (chained causes and contexts included), as `--debug` shows it."""
    import traceback

    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


@pytest.mark.parametrize(
    "content, expected",
    [
        (json.dumps({SECRET_KEY: 1}) + "\n", r"no 'text' field \(line 2 of '.*forget.jsonl' has 1 other field"),
        (
            json.dumps({"text": "d", SECRET_KEY: 1}) + "\n" + json.dumps({"text": "e", SECRET_KEY: "x"}) + "\n",
            r"Field 2 of line 3 of '.*forget.jsonl' is str but the same field of line 2 .* is int",
        ),
    ],
)
def test_a_field_name_that_is_the_text_is_never_quoted(content, expected, tokenizer, tmp_path):
    """A JSON line whose key is the text: the error names the file and line (blank line 1 counted), not the key."""
    path = tmp_path / "forget.jsonl"
    path.write_text("\n" + content)
    with pytest.raises(ValueError, match=expected) as error:
        chunk_documents(str(path), tokenizer)
    assert "48213077" not in full_error(error.value) and "vault" not in full_error(error.value)


def test_a_qa_record_whose_key_is_the_text_is_never_quoted(tokenizer, tmp_path):
    path = tmp_path / "forget.jsonl"
    path.write_text(json.dumps({"question": "q", SECRET_KEY: "a"}) + "\n")
    with pytest.raises(ValueError, match=r"no 'answer' field \(line 1 of '.*forget.jsonl' has 2 other field") as error:
        build_qa_dataset(str(path), tokenizer)
    assert "48213077" not in full_error(error.value)


def test_raw_records_with_unexpected_columns_are_not_listed(tokenizer, tiny_model, tmp_path):
    raw = datasets.Dataset.from_dict({SECRET_KEY: [1]})
    with pytest.raises(ValueError, match=r"1 column\(s\) \(not listed") as error:
        get_method("ga")(
            model=tiny_model, args=unlearning_args("ga", tmp_path), train_dataset=raw, processing_class=tokenizer
        )
    assert "48213077" not in full_error(error.value)


def test_pasted_text_instead_of_a_path_is_not_echoed(tokenizer):
    with pytest.raises(FileNotFoundError, match=r"\(33 characters, not shown\) is neither an existing file") as error:
        chunk_documents(SECRET_KEY, tokenizer)
    assert "48213077" not in full_error(error.value) and "vault" not in full_error(error.value)


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"question": "Who is Jane?", "answer": 48213077}, r"'answer' value of line 1 of .* is int, not text"),
        ({"question": None, "answer": "a fox"}, r"'question' value of line 1 of .* is NoneType, not text"),
    ],
)
def test_a_qa_value_that_is_not_text_is_refused(record, expected, tokenizer, tmp_path):
    """Not trained as "Question: None" or a stringified number: named by line, its value not shown."""
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=expected) as error:
        build_qa_dataset(str(path), tokenizer)
    assert "48213077" not in str(error.value)
