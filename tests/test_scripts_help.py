"""`--help` of every script and CLI sub-command exits 0 and lists the options, and the scripts
run as modules (`python -m`, `accelerate launch -m`) from any folder."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys

import pytest

from hf_unlearn import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "command, options",
    [
        (
            ["train", "--help"],
            [
                "--forget_data",
                "--max_retain_nll_increase",
                "--show_forget_samples",
                "--learning_rate",
                "--forget_weight",
                "--accelerate_config",
            ],
        ),
        (["train", "--method", "adversarial", "--help"], ["--adversarial_batch_size", "--forget_data"]),
        (["eval", "--help"], ["--checkpoints", "--min_k", "--forget_data", "--accelerate_config"]),
        (["traces", "--help"], ["--output_dir", "--remove"]),
        (["methods", "--help"], ["--help"]),
        (["accelerate-configs", "--help"], ["--help"]),
        (["--help"], ["methods", "train", "eval", "traces"]),
    ],
)
def test_cli_help_exits_0_and_lists_the_options(command, options, capsys):
    try:
        code = cli.main(command)
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr().out
    assert code in (0, None), out
    for option in options:
        assert option in out, option


@pytest.mark.parametrize(
    "recipe, options",
    [
        ("unlearn.py", ["--forget_data", "--save_best", "--overwrite_output_dir", "--learning_rate"]),
        ("evaluate.py", ["--checkpoints", "--min_k", "--tofu_data"]),
    ],
)
def test_recipe_shims_help(recipe, options, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [os.path.join(REPO, "recipes", recipe), "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(os.path.join(REPO, "recipes", recipe), run_name="__main__")
    out = capsys.readouterr().out
    assert exit_.value.code in (0, None)
    for option in options:
        assert option in out, option


def test_scripts_run_as_modules_from_another_folder(tmp_path):
    """`python -m hf_unlearn.scripts.unlearn --help` and `accelerate launch -m ...` from an unrelated folder."""
    env = {**os.environ, "PYTHONPATH": REPO}
    commands = [
        [sys.executable, "-m", "hf_unlearn.scripts.unlearn", "--help"],
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            "1",
            "--cpu",
            "-m",
            "hf_unlearn.scripts.evaluate",
            "--help",
        ],
    ]
    for command in commands:
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "--forget_data" in result.stdout


def test_train_runs_the_packaged_script_not_a_recipes_file(monkeypatch):
    """`hf-unlearn train` imports hf_unlearn.scripts.unlearn (it works after `pip install`, without recipes/)."""
    import hf_unlearn.scripts.unlearn as script

    calls = []
    monkeypatch.setattr(script, "main", lambda argv: calls.append(argv))
    monkeypatch.setattr(cli, "RECIPES", "/nonexistent")
    assert cli.main(["train", "--config", "x.yaml"]) == 0
    assert calls == [["--config", "x.yaml"]]


@pytest.mark.slow
def test_wheel_ships_the_scripts_and_the_default_config(tmp_path):
    """A wheel built from the repository holds hf_unlearn.scripts and the default job's YAML; installed elsewhere, the
    scripts run from an unrelated folder without recipes/."""
    import shutil

    source = tmp_path / "source"  # a copy: building in the repository would leave build/ and *.egg-info there
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "outputs", "__pycache__", ".pytest_cache", "benchmarks", "docs"
        ),
    )
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(source),
            "-w",
            str(tmp_path / "wheel"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "wheel").glob("hf_unlearn-*.whl"))
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    check = (
        "import os, hf_unlearn; from hf_unlearn.scripts.args import DEFAULT_CONFIG, parse_args\n"
        f"assert hf_unlearn.__file__.startswith({str(site)!r}), hf_unlearn.__file__\n"
        "assert os.path.isfile(DEFAULT_CONFIG); args, script, _ = parse_args(['--config', DEFAULT_CONFIG])\n"
        "assert args.method == 'unseen_match' and script.show_forget_samples\n"
        "from hf_unlearn.scripts.demo import unseen_texts; assert len(unseen_texts()) == 72\n"
        "from hf_unlearn import cli; assert cli.main(['methods']) == 0; assert cli.main(['train', '--help']) == 0\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", check],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--forget_data" in result.stdout and "ga_kl" in result.stdout
