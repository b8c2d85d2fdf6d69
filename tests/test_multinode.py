"""Launches over several machines: `hf-unlearn train`'s launcher options reach `accelerate launch`, launch mistakes
stop with one line (exit 2) before anything is started or loaded, and two "machines" of one process each on
127.0.0.1 take the same first step as one process with the same global batch.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from hf_unlearn import cli
from hf_unlearn.launch import (
    RANK_VARIABLES,
    RENDEZVOUS_VARIABLES,
    Machines,
    check_global_batch,
    check_launch_environment,
    check_machines,
    resolve_machines,
)
from tests._support import argv, no_model_loading, short_run_flags, write_jsonl
from tests.conftest import make_documents

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MACHINES = ["--num_machines", "2", "--main_process_ip", "10.0.0.1", "--main_process_port", "29500"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def launches(monkeypatch):
    """The commands `hf-unlearn train` would start (none is started)."""
    commands: list[list[str]] = []
    monkeypatch.setattr(cli.subprocess, "call", lambda command: commands.append(command) or 0)
    return commands


@pytest.fixture
def clean_launch_env(monkeypatch):
    """No launcher variables in this process's environment."""
    for pair in RANK_VARIABLES + (RENDEZVOUS_VARIABLES,):
        for name in pair:
            monkeypatch.delenv(name, raising=False)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- hf-unlearn train -> accelerate launch


def test_launcher_options_reach_accelerate_launch(launches):
    code = cli.main(
        ["train", "--accelerate_config", "ddp", "--num_processes", "16", "--machine_rank", "1", *MACHINES, "--x", "1"]
    )
    assert code == 0 and len(launches) == 1
    command = launches[0]
    launch = command[command.index("accelerate.commands.launch") + 1 : command.index("-m", 3)]
    assert launch == [
        "--config_file",
        cli.resolve_accelerate_config("ddp"),
        "--num_processes",
        "16",
        "--num_machines",
        "2",
        "--machine_rank",
        "1",
        "--main_process_ip",
        "10.0.0.1",
        "--main_process_port",
        "29500",
    ]
    assert command[-3:] == ["hf_unlearn.scripts.unlearn", "--x", "1"]  # the script's options pass unchanged


def test_help_lists_the_launcher_options(capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--num_machines", "--machine_rank", "--main_process_ip", "--main_process_port", "--num_processes"):
        assert option in out.split("Script options")[0], option


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["--machine_rank", "2", *MACHINES],
            r"machine_rank=2 is out of range for num_machines=2: use a rank in \[0, 1\]",
        ),
        (["--machine_rank", "-1", *MACHINES], "machine_rank=-1 is out of range"),
        (["--machine_rank", "1"], "machine_rank=1 is out of range for num_machines=1"),
        (["--num_machines", "2", "--machine_rank", "0"], "pass --main_process_ip and --main_process_port"),
        (["--num_machines", "2", "--main_process_ip", "10.0.0.1"], "pass --main_process_port"),
        (["--num_machines", "0"], "num_machines=0 must be at least 1"),
        (["--num_processes", "3", *MACHINES], "num_processes=3 does not divide evenly over num_machines=2"),
        ([*MACHINES[:4], "--main_process_port", "0"], "main_process_port=0 .* cannot work with num_machines=2"),
        ([*MACHINES[:4], "--main_process_port", "70000"], "main_process_port=70000 is not a port"),
    ],
)
def test_launch_mistakes_stop_before_launching(options, message, launches, capsys):
    assert cli.main(["train", "--accelerate_config", "ddp", *options, "--method", "ga"]) == 2
    assert launches == []
    assert re.search(message, one_line_error(capsys))


def test_a_bad_option_value_is_one_line(launches, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--machine_rank", "one"])
    assert exit_info.value.code == 2 and launches == []
    assert "--machine_rank: invalid int value: 'one'" in one_line_error(capsys)


def test_the_accelerate_config_file_counts(tmp_path, launches, capsys):
    """Options the command line does not give come from the accelerate config, as accelerate takes them."""
    config = tmp_path / "two.yaml"
    config.write_text("distributed_type: MULTI_GPU\nnum_machines: 2\nnum_processes: 4\nmachine_rank: 0\n")
    assert cli.main(["train", "--accelerate_config", str(config)]) == 2
    assert "num_machines=2 needs the rendezvous address" in one_line_error(capsys)
    config.write_text(config.read_text() + "main_process_ip: 10.0.0.1\nmain_process_port: 29500\n")
    assert cli.main(["train", "--accelerate_config", str(config)]) == 0 and len(launches) == 1
    assert resolve_machines({"machine_rank": 1}, str(config)) == Machines(4, 2, 1, "10.0.0.1", 29500)


def test_a_bad_accelerate_config_value_is_one_line(tmp_path, launches, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("num_machines: two\n")
    assert cli.main(["train", "--accelerate_config", str(config)]) == 2 and launches == []
    assert "num_machines: 'two' in accelerate config" in one_line_error(capsys)


def test_one_machine_needs_no_address():
    check_machines(Machines(num_processes=8))
    check_machines(Machines(num_processes=2, main_process_port=0))  # accelerate picks a free port on one machine


# ----------------------------------------------------------------------------- the script, from the launcher's environment


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"},
            r"RANK=2 is out of range for WORLD_SIZE=2",
        ),
        ({"WORLD_SIZE": "4", "RANK": "0", "GROUP_RANK": "2", "GROUP_WORLD_SIZE": "2"}, "GROUP_RANK=2 is out of range"),
        ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_PORT": "29500"}, "WORLD_SIZE=2 but MASTER_ADDR is not set"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, "WORLD_SIZE=2 but MASTER_ADDR and MASTER_PORT are not set"),
        ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "0"}, "MASTER_PORT=0 is not a port"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0 must be at least 1"),
    ],
)
def test_launch_environment_mistakes(env, message):
    with pytest.raises(ValueError, match=message) as error:
        check_launch_environment(env)
    assert "\n" not in str(error.value)


def test_a_good_launch_environment_passes():
    check_launch_environment({})
    check_launch_environment({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"})  # no rendezvous for one process
    env = {"WORLD_SIZE": "16", "RANK": "9", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "8", "GROUP_RANK": "1"}
    check_launch_environment({**env, "GROUP_WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"})


@pytest.mark.parametrize(
    "world, per_device, accumulation, message",
    [
        (3, 2, 1, r"global_batch_size=32 is not divisible by the world size 3"),
        (
            8,
            2,
            1,
            r"per_device_train_batch_size 2 x gradient_accumulation_steps 1 x world size 8 = 16: at world "
            r"size 8 pass --gradient_accumulation_steps 2\.",
        ),
        (4, 3, 1, r"= 12: at world size 4 pass --per_device_train_batch_size 2 --gradient_accumulation_steps 4\."),
    ],
)
def test_global_batch_mismatch_names_the_fix(world, per_device, accumulation, message):
    with pytest.raises(ValueError, match=message):
        check_global_batch(32, world, per_device, accumulation)


def test_global_batch_that_the_launch_gives_passes():
    check_global_batch(None, 3, 2, 1)
    check_global_batch(32, 8, 2, 2)
    check_global_batch(32, 2, 4, 4)


def test_recipe_stops_on_a_rank_out_of_range_before_loading(data, tmp_path, monkeypatch, capsys, clean_launch_env):
    """The real script with the environment of a launch whose machine rank is out of range: one line, exit 2, before
    the process group (which would wait for the missing ranks) or a model."""
    from hf_unlearn.scripts.unlearn import main

    no_model_loading(monkeypatch)
    for name, value in {"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        main(argv(str(tmp_path / "model"), data, tmp_path / "out"))  # checked before the model path
    assert exit_info.value.code == 2 and "RANK=2 is out of range for WORLD_SIZE=2" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_evaluation_stops_on_a_missing_rendezvous_address(monkeypatch, capsys, clean_launch_env):
    from hf_unlearn.scripts.evaluate import main

    no_model_loading(monkeypatch)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as exit_info:
        main(["--model_name_or_path", "unused", "--forget_data", "unused.jsonl"])
    assert exit_info.value.code == 2 and "MASTER_ADDR and MASTER_PORT are not set" in one_line_error(capsys)


def test_recipe_stops_on_a_global_batch_the_launch_does_not_give(data, tmp_path, monkeypatch, capsys, clean_launch_env):
    from hf_unlearn.scripts.unlearn import main

    no_model_loading(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        main(argv(str(tmp_path / "model"), data, tmp_path / "out", "--global_batch_size", "8"))
    err = one_line_error(capsys)
    assert (
        exit_info.value.code == 2 and "x world size 1 = 2: at world size 1 pass --gradient_accumulation_steps 4" in err
    )
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- two machines on 127.0.0.1


def log_of_first_step(output_dir) -> dict:
    with open(os.path.join(output_dir, "checkpoint-1", "trainer_state.json")) as handle:
        return next(entry for entry in json.load(handle)["log_history"] if "loss" in entry)  # not the evaluations


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_machines_take_the_first_step_of_one_process(trained_model_dir, tmp_path):
    """`hf-unlearn train --num_machines 2 --machine_rank 0|1` on 127.0.0.1 (two launchers, one gloo process each,
    per-device batch 2) against one process with batch 4, for ga_descent: the same global batch of 4 chunks.

    The first step's loss and terms are token-weighted means of float32 sums over at most 4 x 32 = 128 target
    tokens, reduced in another order (2 partial sums and an all-reduce): at most ~128 x 1.2e-7 = 1.5e-5 relative in
    the worst case, so the tolerance is 2e-5. The gradient is read from one plain SGD step with lr 1 (weights minus
    gradient, no clipping), with the same bound as a share of the largest gradient entry; its logged norm (a root
    of a float32 sum of the same entries) with the same relative bound.
    """
    from safetensors.torch import load_file

    forget = write_jsonl(tmp_path / "forget.jsonl", make_documents(16, seed=11, min_words=3, max_words=30))
    retain = write_jsonl(tmp_path / "retain.jsonl", make_documents(16, seed=12, min_words=3, max_words=30))

    def flags(output_dir, per_device):
        return [
            *short_run_flags(trained_model_dir, output_dir),
            *("--forget_data", forget, "--retain_data", retain, "--per_device_train_batch_size", str(per_device)),
            *("--global_batch_size", "4", "--max_steps", "1", "--optim", "sgd", "--learning_rate", "1"),
            *("--max_grad_norm", "0", "--warmup_steps", "0", "--lr_scheduler_type", "constant", "--logging_steps", "1"),
            *("--save_strategy", "steps", "--save_steps", "1", "--dataloader_drop_last", "true", "--seed", "0"),
            *("--max_retain_nll_increase", "1e9"),  # lr 1 raises the retain NLL: no blow-up stop here
        ]

    # DDP on CPU through accelerate: the bundled DDP config with use_cpu (gloo; `--cpu` would start one process).
    config = tmp_path / "ddp_cpu.yaml"
    config.write_text(
        open(cli.resolve_accelerate_config("ddp"))
        .read()
        .replace("use_cpu: false", "use_cpu: true")
        .replace("mixed_precision: bf16", "mixed_precision: 'no'")
    )
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, "HF_HUB_OFFLINE": "1"}
    machines = [
        subprocess.Popen(
            [sys.executable, "-m", "hf_unlearn.cli", "train", "--accelerate_config", str(config)]
            + ["--num_processes", "2", "--num_machines", "2", "--machine_rank", str(rank)]
            + ["--main_process_ip", "127.0.0.1", "--main_process_port", port]
            + flags(tmp_path / "two", 2),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [machine.communicate(timeout=600)[0] for machine in machines]
    for machine, output in zip(machines, outputs):
        assert machine.returncode == 0, output[-6000:]
    done = subprocess.run(
        [sys.executable, "-m", "hf_unlearn.cli", "train", *flags(tmp_path / "one", 4)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-6000:]

    single, double = log_of_first_step(tmp_path / "one"), log_of_first_step(tmp_path / "two")
    keys = [key for key in ("loss", "forget_loss", "retain_loss", "forget_nll", "grad_norm") if key in single]
    assert {"loss", "forget_loss", "retain_loss"} <= set(keys), single
    for key in keys:
        assert double[key] == pytest.approx(single[key], rel=2e-5), (key, single[key], double[key])
    manifest = json.loads((tmp_path / "two" / "unlearning_manifest.json").read_text())
    assert manifest["batch"]["world_size"] == 2 and manifest["batch"]["effective_batch_size"] == 4, manifest["batch"]

    initial = load_file(os.path.join(trained_model_dir, "model.safetensors"))
    after_one = load_file(str(tmp_path / "one" / "model.safetensors"))
    after_two = load_file(str(tmp_path / "two" / "model.safetensors"))
    scale = max((initial[n] - after_one[n]).abs().max().item() for n in after_one)
    worst = max((after_one[n] - after_two[n]).abs().max().item() for n in after_one)
    assert scale > 0 and worst <= 2e-5 * scale, (worst, scale)
