"""Bad inputs to `hf-unlearn train` / `hf-unlearn eval` are one clear line and exit 2, before anything is loaded or
written: training schedules that cannot train or train nothing, a truncated model, DeepSpeed without a launcher or
with broken JSON, argparse errors, symlinked output folders, settings that `eval` would reject only after scoring,
a resume of another run's checkpoint, and a full disk while saving.

Each run is a tiny Llama on a few JSONL documents.
"""

from __future__ import annotations

import errno
import json
import os

import pytest

from tests._support import data_flags, short_run_flags
from tests.conftest import make_documents


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return str(path)


@pytest.fixture
def files(tmp_path):
    return {
        name: write_jsonl(tmp_path / f"{name}.jsonl", make_documents(4, seed=seed))
        for seed, name in enumerate(("forget", "retain", "approximate"), start=1)
    }


@pytest.fixture
def model_dir(tmp_path, tokenizer):
    from hf_unlearn.testing import build_llama

    path = tmp_path / "model"
    model = build_llama(len(tokenizer), hidden_size=16, layers=1, heads=2)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(autouse=True)
def no_progress_bars():
    """Errors found after tokenising (a progress bar on stderr per split) are checked for being the only line."""
    import datasets

    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def train_argv(model, files, output_dir, *extra):
    return [
        *short_run_flags(model, output_dir),
        *data_flags(files),
        "--learning_rate",
        "1e-3",
        "--warmup_steps",
        "0",
        "--lr_scheduler_type",
        "constant",
        "--mia_resamples",
        "20",
        "--stop_at_unseen_nll",
        "false",
        "--disable_tqdm",
        "true",
        *extra,
    ]


def eval_argv(model, files, output_dir, *extra):
    return [
        "--model_name_or_path",
        model,
        "--forget_data",
        files["forget"],
        "--approximate_data",
        files["approximate"],
        "--max_length",
        "32",
        "--verbatim_prefix_tokens",
        "0",
        "--output_dir",
        str(output_dir),
        *extra,
    ]


def no_model_loading(monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(
        AutoModelForCausalLM,
        "from_pretrained",
        classmethod(lambda *a, **k: pytest.fail("the model was loaded before the error")),
    )


def exit_code(script, args) -> int:
    if script == "train":
        from hf_unlearn.scripts.unlearn import main
    else:
        from hf_unlearn.scripts.evaluate import main
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code


def one_error_line(capfd) -> str:
    err = capfd.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("hf-unlearn: error: "), err
    return lines[0]


# ------------------------------------------------------------------ schedules that cannot train, or train nothing


@pytest.mark.parametrize(
    "extra, expected",
    [
        (("--gradient_accumulation_steps", "0"), "gradient_accumulation_steps=0 must be at least 1"),
        (("--per_device_train_batch_size", "0"), "per_device_train_batch_size=0 must be at least 1"),
        (("--learning_rate", "-1e-3"), "learning_rate=-0.001 is negative"),
        (("--max_examples", "0"), "max_examples=0 keeps no example"),
        (("--max_steps", "0"), "max_steps=0 trains nothing"),
        (("--max_steps", "-1", "--num_train_epochs", "-1"), "num_train_epochs=-1.0 trains nothing"),
        (("--forget_weight", "0", "--retain_weight", "0"), "every loss term has weight 0"),
    ],
)
def test_bad_schedules_are_one_line_before_anything_is_written(
    extra, expected, model_dir, files, tmp_path, capfd, monkeypatch
):
    no_model_loading(monkeypatch)
    out = tmp_path / "out"
    assert exit_code("train", train_argv(model_dir, files, out, *extra)) == 2
    assert expected in one_error_line(capfd)
    assert not out.exists()  # no unlearning_start.json that would block the next run


def test_chunk_documents_names_a_max_length_too_small(tokenizer):
    from hf_unlearn import chunk_documents

    for bad in (1, 0):
        with pytest.raises(ValueError, match=rf"max_length={bad} is too small.*use a max_length such as 4096"):
            chunk_documents(make_documents(2, seed=4), tokenizer, max_length=bad)


# ------------------------------------------------------------------ the model files


@pytest.mark.parametrize("script", ["train", "eval"])
def test_truncated_weights_are_named_in_one_line(script, model_dir, files, tmp_path, capfd, monkeypatch):
    weights = os.path.join(model_dir, "model.safetensors")
    whole = open(weights, "rb").read()
    open(weights, "wb").write(whole[: len(whole) // 2])
    no_model_loading(monkeypatch)
    build = train_argv if script == "train" else eval_argv
    assert exit_code(script, build(model_dir, files, tmp_path / "out")) == 2
    line = one_error_line(capfd)
    assert repr(weights) in line and f"is incomplete ({len(whole) // 2} of {len(whole)} bytes)" in line
    assert "save or download the model again" in line and not (tmp_path / "out").exists()


def test_safetensors_problem_tells_complete_from_cut_or_corrupt(model_dir, tmp_path):
    from hf_unlearn.scripts.unlearn import safetensors_problem

    weights = os.path.join(model_dir, "model.safetensors")
    whole = open(weights, "rb").read()
    assert safetensors_problem(weights) is None
    cases = {
        "empty": b"",
        "header cut": whole[:20],
        "longer": whole + b"\0",
        "bad header": (40).to_bytes(8, "little") + b"x" * 40,
    }
    found = {}
    for name, content in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        found[name] = safetensors_problem(str(path))
    assert found["empty"].startswith("is incomplete (0 bytes")
    assert found["header cut"].startswith("is incomplete (20 bytes; its header alone needs")
    assert found["longer"] == f"does not match its header ({len(whole) + 1} bytes, the header describes {len(whole)})"
    assert found["bad header"] == "has a corrupt header"


# ------------------------------------------------------------------ DeepSpeed


@pytest.fixture
def plain_python(monkeypatch):
    from hf_unlearn import distributed

    for name in distributed.LAUNCHER_VARIABLES + ("WORLD_SIZE", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(name, raising=False)


def test_deepspeed_under_plain_python_is_one_line_naming_the_launchers(
    plain_python, model_dir, files, tmp_path, capfd, monkeypatch
):
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"train_batch_size": "auto"}))  # no zero_optimization: transformers would object
    no_model_loading(monkeypatch)
    assert exit_code("train", train_argv(model_dir, files, tmp_path / "out", "--deepspeed", str(config))) == 2
    line = one_error_line(capfd)
    assert (
        "without a launcher" in line and "`accelerate launch --config_file" in line and "`deepspeed --num_gpus" in line
    )
    assert not (tmp_path / "out").exists()


def test_broken_deepspeed_json_names_the_file_and_the_error(model_dir, files, tmp_path, capfd, monkeypatch):
    config = tmp_path / "ds.json"
    config.write_text('{"train_batch_size": "auto",\n')
    no_model_loading(monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", "0")  # as under a launcher: the file is what is wrong
    assert exit_code("train", train_argv(model_dir, files, tmp_path / "out", "--deepspeed", str(config))) == 2
    line = one_error_line(capfd)
    assert repr(str(config)) in line and "is not valid JSON (Expecting property name" in line and "at line 2" in line
    assert "fix the file" in line


# ------------------------------------------------------------------ argparse


@pytest.mark.parametrize("script", ["train", "eval"])
def test_argparse_errors_are_one_line_and_a_hint(script, model_dir, files, tmp_path, capfd, monkeypatch):
    no_model_loading(monkeypatch)
    build = train_argv if script == "train" else eval_argv
    flag = "--max_steps" if script == "train" else "--batch_size"
    assert exit_code(script, build(model_dir, files, tmp_path / "out", flag, "abc")) == 2
    err = capfd.readouterr().err
    assert err.strip().splitlines() == [
        f"hf-unlearn: error: argument {flag}/{flag.replace('_', '-')}: invalid int value: 'abc'",
        "hf-unlearn: `--help` lists every option.",
    ]


def test_unknown_options_are_named_and_stray_values_counted_not_shown(model_dir, files, tmp_path, capfd, monkeypatch):
    """A value without an option can be pasted text (`--forget_data my secret words`): counted, never echoed."""
    no_model_loading(monkeypatch)
    args = train_argv(model_dir, files, tmp_path / "out", "--no_such_option", "vault", "48213077")
    assert exit_code("train", args) == 2
    line = one_error_line(capfd)
    assert "unknown option(s) --no_such_option and 2 value(s) without an option (not shown" in line
    assert "vault" not in line and "48213077" not in line and "--help" in line


# ------------------------------------------------------------------ output folders


@pytest.mark.parametrize("link", ["to a folder of an earlier run", "dangling"])
def test_a_symlinked_output_dir_is_resolved(link, model_dir, files, tmp_path):
    """`--overwrite_output_dir true` through a link empties the folder it names (shutil.rmtree refuses a link),
    and a dangling link gets its target created."""
    from hf_unlearn.scripts.unlearn import main

    target = tmp_path / "real"
    if link != "dangling":
        target.mkdir()
        (target / "stale.txt").write_text("from an earlier run")
    os.symlink(target, tmp_path / "link")
    main(train_argv(model_dir, files, tmp_path / "link", "--overwrite_output_dir", "true", "--max_steps", "1"))
    assert (target / "model.safetensors").is_file() and not (target / "stale.txt").exists()
    assert os.path.islink(tmp_path / "link")


# ------------------------------------------------------------------ eval: checked before scoring


def test_eval_refuses_chunks_longer_than_the_models_positions_before_loading(
    tokenizer, files, tmp_path, capfd, monkeypatch
):
    from hf_unlearn.testing import build_llama

    short = tmp_path / "short"
    model = build_llama(len(tokenizer), hidden_size=16, layers=1, heads=2)
    model.config.max_position_embeddings = 16
    model.save_pretrained(short)
    tokenizer.save_pretrained(short)
    capfd.readouterr()
    no_model_loading(monkeypatch)
    assert exit_code("eval", eval_argv(str(short), files, tmp_path / "eval")) == 2
    line = one_error_line(capfd)
    assert "has 16 positions (max_position_embeddings); set max_length to 16 or less" in line
    assert not (tmp_path / "eval").exists()


def test_eval_refuses_an_unknown_plot_attack_before_loading(model_dir, files, tmp_path, capfd, monkeypatch):
    no_model_loading(monkeypatch)
    assert exit_code("eval", eval_argv(model_dir, files, tmp_path / "eval", "--plot_attacks", "loss", "min_k_15")) == 2
    line = one_error_line(capfd)
    assert "--plot_attacks min_k_15: unknown attack(s)" in line and "min_k_20" in line
    assert not (tmp_path / "eval").exists()


def test_every_plot_attack_name_offered_is_one_the_evaluation_scores(model_dir, files, tmp_path):
    from hf_unlearn.scripts.evaluate import EvaluateArguments, main, plot_attack_names

    names = plot_attack_names(EvaluateArguments(min_k=[0.2, 0.5]))
    assert names == ["loss", "zlib", "min_k_20", "min_k_50", "min_k_plus_plus_20", "min_k_plus_plus_50"]
    main(eval_argv(model_dir, files, tmp_path / "eval", "--min_k", "0.2", "0.5", "--plot_attacks", *names))
    assert all((tmp_path / "eval" / f"roc_{name}.png").is_file() for name in names)


# ------------------------------------------------------------------ resume


@pytest.fixture
def checkpointed_run(model_dir, files, tmp_path):
    """A 2-step run that saved `checkpoint-1`, and its stored run record."""
    from hf_unlearn.scripts.unlearn import RUN_RECORD, main

    out = tmp_path / "out"
    main(train_argv(model_dir, files, out, "--save_strategy", "steps", "--save_steps", "1"))
    return out, json.loads((out / "checkpoint-1" / RUN_RECORD).read_text())


@pytest.mark.parametrize("change", ["learning_rate", "max_examples", "another forget file"])
def test_resume_with_another_forget_set_or_learning_rate_is_refused(
    change, checkpointed_run, model_dir, files, tmp_path, capfd, monkeypatch
):
    out, stored = checkpointed_run
    assert sorted(stored) == ["forget_examples", "forget_tokens", "learning_rate", "method"]  # counts only
    assert stored["method"] == "ga_descent" and stored["learning_rate"] == 1e-3 and stored["forget_examples"] > 2
    extra = ()
    if change == "learning_rate":
        extra, expected = ("--learning_rate", "2e-3"), "learning_rate 0.001 there, 0.002 now"
    elif change == "max_examples":
        extra, expected = ("--max_examples", "2"), f"forget_examples {stored['forget_examples']} there, 2 now"
    else:
        other = make_documents(6, seed=9)
        files = dict(files, forget=write_jsonl(tmp_path / "other_forget.jsonl", other))
        expected = "its run differs (forget_"
    capfd.readouterr()
    no_model_loading(monkeypatch)
    resume = ("--resume_from_checkpoint", str(out / "checkpoint-1"), "--max_steps", "3")
    assert exit_code("train", train_argv(model_dir, files, out, *resume, *extra)) == 2
    line = one_error_line(capfd)
    assert f"Cannot resume from {str(out / 'checkpoint-1')!r}" in line and expected in line
    assert str(stored["forget_tokens"]) not in line  # the token count is compared, never shown


def test_resume_names_a_different_forget_token_count_without_its_values(tmp_path):
    """A forget set with as many examples but other tokens: refused, the count not shown."""
    from hf_unlearn.scripts.unlearn import RUN_RECORD, check_resume_matches

    stored = {"method": "ga", "learning_rate": 1e-3, "forget_examples": 3, "forget_tokens": 9137}
    (tmp_path / RUN_RECORD).write_text(json.dumps(stored))
    check_resume_matches(str(tmp_path), dict(stored))  # the same run resumes
    with pytest.raises(ValueError, match=r"its run differs \(forget_tokens differ\)") as error:
        check_resume_matches(str(tmp_path), dict(stored, forget_tokens=9138))
    assert "9137" not in str(error.value) and "9138" not in str(error.value)


# ------------------------------------------------------------------ a full disk while saving


def disk_fills_up_in(monkeypatch, where: str):
    """`save_pretrained` writes half a weights file into a folder whose name contains `where`, then the disk is
    full (ENOSPC), as a real full disk does."""
    from transformers import PreTrainedModel

    original = PreTrainedModel.save_pretrained

    def save_pretrained(self, save_directory, *args, **kwargs):
        if where not in os.path.basename(os.path.normpath(save_directory)):
            return original(self, save_directory, *args, **kwargs)
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, "model.safetensors"), "wb") as handle:
            handle.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_pretrained)


def test_a_full_disk_at_the_final_save_is_disk_full_and_leaves_no_partial_model(
    model_dir, files, tmp_path, capfd, monkeypatch
):
    out = tmp_path / "out"
    disk_fills_up_in(monkeypatch, "out")
    assert exit_code("train", train_argv(model_dir, files, out)) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        f"hf-unlearn: error: disk full while saving to {str(out)!r}: the partial save was removed; free space on that "
        "disk (or choose another --output_dir) and run again."
    )
    assert sorted(os.listdir(out)) == ["unlearning_start.json"]  # the run's start record; no half-written model


def test_a_full_disk_at_a_checkpoint_removes_the_partial_checkpoint(model_dir, files, tmp_path, capfd, monkeypatch):
    out = tmp_path / "out"
    disk_fills_up_in(monkeypatch, "checkpoint-2")
    args = train_argv(model_dir, files, out, "--save_strategy", "steps", "--save_steps", "1")
    assert exit_code("train", args) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"hf-unlearn: error: disk full while saving to {str(out / 'checkpoint-2')!r}")
    )
    assert (out / "checkpoint-1" / "trainer_state.json").is_file() and not (out / "checkpoint-2").exists()


def test_removed_if_disk_full_keeps_other_errors_and_what_was_there(tmp_path):
    from hf_unlearn.hub import DiskFullError, removed_if_disk_full

    (tmp_path / "kept.json").write_text("{}")
    (tmp_path / "checkpoint-1").mkdir()
    with pytest.raises(DiskFullError, match="disk full while saving to"):
        with removed_if_disk_full(str(tmp_path)):
            (tmp_path / "model.safetensors").write_bytes(b"\0" * 10)
            raise RuntimeError(f"PytorchStreamWriter failed: {os.strerror(errno.ENOSPC)}")
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-1", "kept.json"]
    with pytest.raises(KeyError):  # not a full disk: raised as it is, nothing removed
        with removed_if_disk_full(str(tmp_path)):
            (tmp_path / "other.txt").write_text("x")
            raise KeyError("x")
    assert (tmp_path / "other.txt").is_file()


def test_resume_true_after_a_crash_mid_checkpoint_resumes_the_last_complete_one(
    checkpointed_run, model_dir, files, capfd
):
    """kill -9 while `checkpoint-2` was written: it lacks `trainer_state.json`; `--resume_from_checkpoint true`
    warns, skips it and continues from `checkpoint-1` (not a raw "[Errno 2] ...")."""
    from hf_unlearn.scripts.unlearn import main

    out, _ = checkpointed_run
    os.remove(out / "checkpoint-2" / "trainer_state.json")
    capfd.readouterr()
    with pytest.warns(UserWarning, match="checkpoint-2.*trainer_state.json"):
        result = main(train_argv(model_dir, files, out, "--resume_from_checkpoint", "true", "--max_steps", "3"))
    assert [record.step for record in result["history"]][-1] == 3 and (out / "model.safetensors").is_file()
    assert "Traceback" not in capfd.readouterr().err
