"""The unlearning script (`hf_unlearn.scripts.unlearn`) fails safe: blow-ups, resumes, output folders, bad input.

Each run is a tiny Llama on a few JSONL documents (seconds).
"""

from __future__ import annotations

import json

import pytest

from tests._support import argv, no_model_loading


def run_expecting_exit(args, code):
    from hf_unlearn.scripts.unlearn import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == code
    return exit_info


# ------------------------------------------------------------------ item 6: blow-ups


def test_blow_up_stops_exits_3_and_saves_nothing(trained_model_dir, data, tmp_path, capfd, monkeypatch):
    """lr 1.0 wrecks the model: the default guard (retain NLL +50%) stops it, says why, saves and pushes nothing."""
    from hf_unlearn.hub import HubMixin

    pushed = []
    monkeypatch.setattr(HubMixin, "push_to_hub", lambda self, *a, **k: pushed.append(1))
    out = tmp_path / "out"
    run_expecting_exit(
        argv(
            trained_model_dir,
            data,
            out,
            "--learning_rate",
            "1.0",
            "--max_steps",
            "6",
            "--stop_at_unseen_nll",
            "false",
            method="ga",
        ),
        3,
    )
    err = capfd.readouterr().err
    assert "blow-up" in err and "NOT saved" in err
    assert not (out / "model.safetensors").exists() and not pushed


# ------------------------------------------------------------------ item 7: resume


def test_resume_continues_from_the_checkpoint_with_the_first_runs_target(trained_model_dir, data, tmp_path):
    from hf_unlearn.scripts.unlearn import START_RECORD, main

    out = tmp_path / "out"
    common = ("--save_strategy", "steps", "--save_steps", "1", "--stop_at_unseen_nll", "false")
    first = main(argv(trained_model_dir, data, out, *common))
    stored = json.loads((out / START_RECORD).read_text())
    assert stored["step"] == 0 and set(stored) == {"step", "nll", "mia_auc", "attacks", "target_nll"}  # numbers only
    assert all(set(v) == {"auc", "auc_low", "auc_high"} for v in stored["attacks"].values())
    assert stored["target_nll"] == pytest.approx(first["before"].nll["approximate"])
    resumed = main(
        argv(
            trained_model_dir,
            data,
            out,
            *common,
            "--max_steps",
            "3",
            "--resume_from_checkpoint",
            str(out / "checkpoint-1"),
        )
    )
    assert resumed["history"][0].step == 1  # trained from the checkpoint, not from step 0
    assert resumed["after"].step == 3 and (out / "checkpoint-3").is_dir()
    assert resumed["before"].nll == pytest.approx(first["before"].nll)  # "before" is the original model


def test_resume_without_the_first_runs_record_is_refused(trained_model_dir, data, tmp_path, capfd, monkeypatch):
    checkpoint = tmp_path / "out" / "checkpoint-1"
    checkpoint.mkdir(parents=True)
    no_model_loading(monkeypatch)
    run_expecting_exit(argv(trained_model_dir, data, tmp_path / "out", "--resume_from_checkpoint", str(checkpoint)), 2)
    assert "unlearning_start.json" in capfd.readouterr().err


# ------------------------------------------------------------------ attacks and the stopping rule


def recording_callback(monkeypatch):
    """Replace the script's UnlearningEvalCallback by a subclass that keeps every instance (to read its criteria)."""
    import hf_unlearn.callbacks as callbacks

    made = []

    class Recording(callbacks.UnlearningEvalCallback):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(callbacks, "UnlearningEvalCallback", Recording)
    return made


def test_worst_case_stopping_rule_reaches_the_stopping_criteria(trained_model_dir, data, tmp_path, monkeypatch):
    from hf_unlearn.scripts.unlearn import main

    made = recording_callback(monkeypatch)
    result = main(
        argv(
            trained_model_dir,
            data,
            tmp_path / "worst",
            "--stopping_rule",
            "worst_case",
            "--mia_attacks",
            "loss,min_k_20",
            "--mia_resamples",
            "50",
        )
    )
    monitor = made[-1]
    assert monitor.criteria.worst_case_attacks and not monitor.criteria.stop_at_target  # the attacks alone decide
    assert monitor.attacks == ("loss", "min_k_20") and monitor.n_resamples == 50
    assert set(result["before"].attacks) == {"loss", "min_k_20"}
    # The default: the paper's rule, every attack evaluated (and reported), none of them deciding.
    main(argv(trained_model_dir, data, tmp_path / "paper"))
    monitor = made[-1]
    assert not monitor.criteria.worst_case_attacks and monitor.criteria.stop_at_target
    from hf_unlearn.callbacks import available_attacks

    assert monitor.attacks == tuple(available_attacks()) and monitor.n_resamples == 1000


@pytest.mark.parametrize(
    "extra, expected",
    [
        (("--stopping_rule", "strongest"), "stopping_rule='strongest' is unknown"),
        (("--mia_attacks", "loss,min_k_15"), "unknown ['min_k_15']"),
        (("--stopping_rule", "worst_case", "--mia_resamples", "0"), "needs AUC intervals"),
        (("--eval_every_steps", "2", "--stop_at_step", "3"), "stop_at_step=3 must be a positive multiple"),
    ],
)
def test_bad_attack_or_rule_arguments_exit_2_before_loading(
    extra, expected, trained_model_dir, data, tmp_path, capfd, monkeypatch
):
    no_model_loading(monkeypatch)
    run_expecting_exit(argv(trained_model_dir, data, tmp_path / "out", *extra), 2)
    assert expected in capfd.readouterr().err


def test_worst_case_rule_without_unseen_data_is_refused(trained_model_dir, data, tmp_path, capfd, monkeypatch):
    no_model_loading(monkeypatch)
    run_expecting_exit(
        argv(trained_model_dir, data, tmp_path / "out", "--stopping_rule", "worst_case", approximate=False), 2
    )
    assert "stopping_rule=worst_case needs approximate_data" in capfd.readouterr().err


# ------------------------------------------------------------------ item 8: output folders


def test_non_empty_output_dir_is_refused_then_overwritten_when_told(
    trained_model_dir, data, tmp_path, capfd, monkeypatch
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint-9").mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    with monkeypatch.context() as patch:
        no_model_loading(patch)
        run_expecting_exit(argv(trained_model_dir, data, out), 2)
    err = capfd.readouterr().err
    assert "is not empty" in err and "--resume_from_checkpoint" in err and "--overwrite_output_dir true" in err
    assert "Traceback" not in err and (out / "stale.txt").exists()
    from hf_unlearn.scripts.unlearn import main

    main(argv(trained_model_dir, data, out, "--overwrite_output_dir", "true"))
    assert not (out / "stale.txt").exists() and not (out / "checkpoint-9").exists()
    assert (out / "model.safetensors").exists()


# ------------------------------------------------------------------ user errors


def test_missing_model_folder_is_one_line_exit_2_and_debug_shows_the_traceback(data, tmp_path, capfd):
    missing = str(tmp_path / "no" / "such" / "model")
    run_expecting_exit(argv(missing, data, tmp_path / "out"), 2)
    err = capfd.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert missing in err and "does not exist" in err
    run_expecting_exit(argv(missing, data, tmp_path / "out") + ["--debug"], 2)
    err = capfd.readouterr().err
    assert "Traceback" in err and "FileNotFoundError" in err and err.strip().splitlines()[-1].endswith("(org/name).")


def test_method_needing_retain_names_the_config_key_before_loading(
    trained_model_dir, data, tmp_path, capfd, monkeypatch
):
    no_model_loading(monkeypatch)
    run_expecting_exit(argv(trained_model_dir, data, tmp_path / "out", method="ga_kl", retain=False), 2)
    err = capfd.readouterr().err
    assert "needs retain data: set retain_data" in err and "retain_dataset=" not in err


def test_retain_data_for_a_method_that_ignores_it_is_not_used_nor_on_the_card(trained_model_dir, data, tmp_path):
    from hf_unlearn.scripts.unlearn import main

    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="'ga' does not train on retain data"):
        main(argv(trained_model_dir, data, out, method="ga"))
    card = (out / "README.md").read_text()
    assert "| forget |" in card and "| retain |" not in card


def save_tiny_model(path, tokenizer, vocab_size=None, positions=None):
    from hf_unlearn.testing import build_llama

    model = build_llama(vocab_size or len(tokenizer), hidden_size=16, layers=1, heads=2)
    if positions is not None:
        model.config.max_position_embeddings = positions
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_model_with_fewer_positions_than_the_chunks(tokenizer, data, tmp_path, capfd, monkeypatch):
    model = save_tiny_model(tmp_path / "short", tokenizer, positions=16)
    no_model_loading(monkeypatch)
    run_expecting_exit(argv(model, data, tmp_path / "out"), 2)
    err = capfd.readouterr().err
    assert "16 positions (max_position_embeddings)" in err and "max_length to 16 or less" in err


def test_model_vocabulary_smaller_than_the_tokenizers(tokenizer, data, tmp_path, capfd, monkeypatch):
    model = save_tiny_model(tmp_path / "small_vocab", tokenizer, vocab_size=50)
    no_model_loading(monkeypatch)
    run_expecting_exit(argv(model, data, tmp_path / "out"), 2)
    err = capfd.readouterr().err
    assert "only 50 embeddings (vocab_size)" in err and "resize_token_embeddings" in err


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "is empty"),
        (b'{"text": "caf\xe9 au lait"}\n', "is not UTF-8"),
        (b'{"text": 12345}\n', "Row 0 of column 'text'"),
    ],
)
def test_bad_forget_files_are_named_in_one_line(content, expected, trained_model_dir, data, tmp_path, capfd):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    run_expecting_exit(argv(trained_model_dir, {**data, "forget": str(bad)}, tmp_path / "out"), 2)
    err = capfd.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "12345" not in err and "caf" not in err  # never quote the data


def test_yaml_list_for_forget_data_is_refused(trained_model_dir, data, tmp_path, capfd):
    config = tmp_path / "config.yaml"
    config.write_text(
        f"method: ga\nmodel_name_or_path: {trained_model_dir}\nforget_data:\n  - {data['forget']}\n  - {data['retain']}\n"
        f"output_dir: {tmp_path / 'out'}\nuse_cpu: true\nreport_to: none\nmax_steps: 1\nmax_length: 32\n"
    )
    run_expecting_exit(["--config", str(config)], 2)
    err = capfd.readouterr().err
    assert "forget_data in" in err and "is a list" in err and "single value" in err
    assert not (tmp_path / "out").exists()


def test_evaluate_script_missing_model_folder_is_one_line_exit_2(data, tmp_path, capfd):
    from hf_unlearn.scripts.evaluate import main

    missing = str(tmp_path / "no" / "such" / "model")
    with pytest.raises(SystemExit) as exit_info:
        main(["--model_name_or_path", missing, "--forget_data", data["forget"], "--output_dir", str(tmp_path / "eval")])
    err = capfd.readouterr().err
    assert exit_info.value.code == 2 and "does not exist" in err and "Traceback" not in err


# ------------------------------------------------------------------ trl's ModelConfig


def test_script_arguments_combine_with_trl_model_config():
    """ScriptArguments has no model fields of its own: with trl's ModelConfig in one TrlParser there is no
    "conflicting option strings: --model_name_or_path", and the model keys land in ModelConfig."""
    from trl import ModelConfig, TrlParser

    from hf_unlearn.scripts.args import ScriptArguments

    script, model_args = TrlParser((ScriptArguments, ModelConfig)).parse_args_and_config(
        ["--model_name_or_path", "m", "--dtype", "bfloat16", "--forget_data", "f.jsonl", "--use_peft", "--lora_r", "4"]
    )
    assert (model_args.model_name_or_path, model_args.dtype, model_args.use_peft, model_args.lora_r) == (
        "m",
        "bfloat16",
        True,
        4,
    )
    assert script.forget_data == "f.jsonl" and not hasattr(script, "dtype")


def test_model_config_defaults_and_checks(tmp_path):
    """The scripts' parser loads the checkpoint's own dtype by default (trl's ModelConfig says float32), and the
    forget set is still required once a model is named."""
    from hf_unlearn.scripts.args import parse_args

    _, _, model_args = parse_args(["--output_dir", str(tmp_path)])
    assert model_args.dtype == "auto" and model_args.model_name_or_path is None
    _, _, model_args = parse_args(
        [
            "--output_dir",
            str(tmp_path),
            "--model_name_or_path",
            "m",
            "--forget_data",
            "f",
            "--dtype",
            "float32",
            "--attn_implementation",
            "eager",
        ]
    )
    assert (model_args.dtype, model_args.attn_implementation) == ("float32", "eager")
    with pytest.raises(ValueError, match="forget_data is required when model_name_or_path is set"):
        parse_args(["--output_dir", str(tmp_path), "--model_name_or_path", "m"])


def test_use_peft_trains_and_saves_a_lora_adapter(trained_model_dir, data, tmp_path):
    """`use_peft` (trl's ModelConfig) reaches the trainer: a LoRA adapter on the named modules is trained and
    saved, not the full model."""
    import os

    from safetensors.torch import load_file

    from hf_unlearn.scripts.unlearn import main

    out = tmp_path / "lora"
    main(
        argv(
            trained_model_dir,
            data,
            out,
            "--use_peft",
            "--lora_r",
            "4",
            "--lora_alpha",
            "8",
            "--lora_target_modules",
            "q_proj",
            "v_proj",
            "--max_retain_nll_increase",
            "None",
        )
    )
    assert os.path.isfile(out / "adapter_config.json") and not os.path.isfile(out / "model.safetensors")
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert adapter and all("lora_" in name for name in adapter)
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in adapter} == {"q_proj", "v_proj"}
    # LoRA's B starts at 0: after 2 steps at lr 1e-3 it has moved, so the adapter is trained, not just created.
    assert any(name.endswith("lora_B.weight") and tensor.abs().max() > 0 for name, tensor in adapter.items())
