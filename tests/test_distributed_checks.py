"""Bad launches fail early with a message that names the problem and the fix (hf_unlearn.distributed, hf_unlearn.scripts.args)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from types import SimpleNamespace

import pytest

from hf_unlearn import distributed
from hf_unlearn.distributed import check_launch, deepspeed_mismatches, relaunch_commands

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER_ENV = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def training_args(**overrides) -> SimpleNamespace:
    """The attributes of TrainingArguments that the checks read."""
    values = dict(
        deepspeed=None,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=32,
        max_grad_norm=1.0,
        bf16=True,
        fp16=False,
        learning_rate=2e-5,
        use_cpu=False,
        world_size=1,
    )
    values.update(overrides)
    return SimpleNamespace(**values)


@pytest.fixture
def no_launcher(monkeypatch):
    for name in distributed.LAUNCHER_VARIABLES + (
        "WORLD_SIZE",
        "ACCELERATE_USE_DEEPSPEED",
        "ACCELERATE_DEEPSPEED_CONFIG_FILE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def launcher(no_launcher, monkeypatch):
    for name, value in LAUNCHER_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def cleanup_deepspeed_config():
    yield
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


def write_json(tmp_path, config: dict) -> str:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config))
    return str(path)


# ----------------------------------------------------------------------------- config files and keys


def test_missing_config_file_is_named():
    from hf_unlearn.scripts.args import parse_args

    with pytest.raises(FileNotFoundError, match="missing.yaml.*does not exist.*--config"):
        parse_args(["--config", "missing.yaml"])


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    from hf_unlearn.scripts.args import parse_args

    config = tmp_path / "typo.yaml"
    config.write_text("method: ga\nlearning_rat: 1.0e-5\n")
    with pytest.raises(ValueError, match=r"'learning_rat' \(did you mean 'learning_rate'\?\)"):
        parse_args(["--config", str(config)])


def test_missing_deepspeed_json_is_named(tmp_path):
    from hf_unlearn.scripts.args import parse_args

    config = tmp_path / "c.yaml"
    config.write_text("method: ga\nuse_cpu: true\ndeepspeed: recipes/deepspeed/zero4.json\n")
    with pytest.raises(FileNotFoundError, match=r"zero4\.json.*does not exist.*recipes/deepspeed/zero3\.json"):
        parse_args(["--config", str(config)])


# ----------------------------------------------------------------------------- DeepSpeed config vs arguments


def test_auto_and_matching_values_pass():
    config = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": 32,
        "train_batch_size": 256,
        "gradient_clipping": 1.0,
        "bf16": {"enabled": True},
        "fp16": {"enabled": "auto"},
    }
    assert deepspeed_mismatches(config, training_args(), processes=8) == []


def test_contradicting_values_are_listed():
    config = {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 8,
        "train_batch_size": 64,
        "bf16": {"enabled": False},
        "optimizer": {"params": {"lr": 1e-4}},
    }
    problems = deepspeed_mismatches(config, training_args(), processes=2)
    assert problems == [
        "train_micro_batch_size_per_gpu=4 but per_device_train_batch_size=1",
        "gradient_accumulation_steps=8 but gradient_accumulation_steps=32",
        "bf16.enabled=False but bf16=True",  # train_batch_size 64 = 1 x 32 x 2 processes: consistent
        "optimizer.params.lr=0.0001 but learning_rate=2e-05",
    ]


def test_contradicting_train_batch_size(launcher, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    problems = deepspeed_mismatches({"train_batch_size": 64}, training_args(), processes=distributed.world_size())
    assert problems == [
        "train_batch_size=64 but per_device_train_batch_size x gradient_accumulation_steps x 8 processes=256"
    ]


def test_check_launch_raises_on_a_contradicting_json(launcher, tmp_path):
    path = write_json(tmp_path, {"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 2}})
    with pytest.raises(
        ValueError,
        match=r"ds\.json contradicts the arguments: train_micro_batch_size_per_gpu=4 but "
        r"per_device_train_batch_size=1.*\"auto\"",
    ):
        check_launch(training_args(deepspeed=path))


def test_check_launch_reads_accelerates_config_file(launcher, tmp_path, monkeypatch):
    path = write_json(tmp_path, {"gradient_accumulation_steps": 4})
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", path)
    with pytest.raises(ValueError, match="gradient_accumulation_steps=4 but gradient_accumulation_steps=32"):
        check_launch(training_args())


def test_shipped_deepspeed_configs_pass(launcher):
    for stage in ("zero2", "zero3", "zero3_offload"):
        check_launch(training_args(deepspeed=os.path.join(REPO, "recipes", "deepspeed", f"{stage}.json")))


def test_zero3_without_gathered_save_warns(launcher, tmp_path, caplog):
    path = write_json(tmp_path, {"zero_optimization": {"stage": 3}})
    with caplog.at_level(logging.WARNING, logger="hf_unlearn.distributed"):
        check_launch(training_args(deepspeed=path))
    assert "stage3_gather_16bit_weights_on_model_save" in caplog.text


def test_malformed_json_is_named(launcher, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json.*is not valid JSON"):
        check_launch(training_args(deepspeed=str(path)))


# ----------------------------------------------------------------------------- launchers


def test_deepspeed_without_launcher_names_the_commands(no_launcher, monkeypatch):
    monkeypatch.setattr(
        sys, "argv", ["recipes/unlearn.py", "--config", "c.yaml", "--deepspeed", "recipes/deepspeed/zero3.json"]
    )
    with pytest.raises(ValueError, match="plain `python`, without a launcher") as error:
        check_launch(training_args(deepspeed="recipes/deepspeed/zero3.json"))
    message = str(error.value)
    assert "\n" not in message
    assert (
        "`deepspeed --num_gpus N recipes/unlearn.py --config c.yaml --deepspeed recipes/deepspeed/zero3.json`"
        in message
    )
    # accelerate's YAML already holds the DeepSpeed set-up: the --deepspeed flag is dropped there.
    accelerate = "accelerate launch --config_file recipes/accelerate/zero3.yaml --num_processes N recipes/unlearn.py"
    assert f"`{accelerate} --config c.yaml`" in message


def test_relaunch_commands_keep_other_arguments():
    text = relaunch_commands(["recipes/unlearn.py", "--deepspeed=x.json", "--method", "ga kl"])
    assert "`deepspeed --num_gpus N recipes/unlearn.py --deepspeed=x.json --method 'ga kl'`" in text
    assert "--num_processes N recipes/unlearn.py --method 'ga kl'`" in text and "\n" not in text


def test_deepspeed_not_installed(launcher, monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)
    with pytest.raises(ImportError, match="pip install deepspeed"):
        check_launch(training_args(deepspeed="recipes/deepspeed/zero3.json"))


def test_cpu_deepspeed_needs_use_cpu(launcher, monkeypatch):
    import torch

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--use_cpu true"):
        check_launch(training_args(deepspeed={"zero_optimization": {"stage": 2}}, per_device_train_batch_size=1))
    check_launch(training_args(deepspeed={"zero_optimization": {"stage": 2}}, use_cpu=True))


def test_without_deepspeed_nothing_is_checked(no_launcher):
    check_launch(training_args())


def test_recipe_refuses_deepspeed_under_plain_python(no_launcher, monkeypatch, cleanup_deepspeed_config, capsys):
    """The real recipe, started like `python recipes/unlearn.py --config ...zero3_cpu.yaml`, stops before loading."""
    spec = importlib.util.spec_from_file_location("unlearn_recipe", os.path.join(REPO, "recipes", "unlearn.py"))
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(
        "hf_unlearn.scripts.demo.default_model_dir", lambda *a: pytest.fail("the model must not be loaded")
    )
    with pytest.raises(SystemExit) as exit_info:
        recipe.main(["--config", "recipes/configs/small/ga_kl_zero3_cpu.yaml"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "without a launcher" in err and "accelerate launch" in err and "deepspeed --num_gpus N" in err
