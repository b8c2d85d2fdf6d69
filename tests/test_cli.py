"""The hf-unlearn command line."""

import json
import os

import pytest

from hf_unlearn import cli
from tests.conftest import make_documents


def test_methods_lists_every_method_in_paper_order(capsys):
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert names[:5] == ["ga", "random_label", "adversarial", "ga_descent", "ga_kl"]
    assert "GA + KL" in out


def test_unknown_accelerate_config_names_the_choices():
    with pytest.raises(SystemExit, match=r"unknown accelerate config 'zero9'"):
        cli.resolve_accelerate_config("zero9")


def test_bundled_accelerate_configs_resolve():
    configs = cli.accelerate_configs()
    for name in ("ddp", "zero2", "zero3"):
        assert name in configs and os.path.isfile(cli.resolve_accelerate_config(name))


def test_train_runs_the_recipe(trained_model_dir, tmp_path):
    """`hf-unlearn train` with a local model and JSONL data: trains, saves the model and its card."""
    for split, seed in (("forget", 1), ("retain", 2), ("approx", 3)):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in make_documents(4, seed=seed)))
    out = tmp_path / "run"
    cli.main([
        "train", "--method", "ga_descent", "--model_name_or_path", trained_model_dir,
        "--forget_data", str(tmp_path / "forget.jsonl"), "--retain_data", str(tmp_path / "retain.jsonl"),
        "--approximate_data", str(tmp_path / "approx.jsonl"), "--max_length", "32", "--max_steps", "2",
        "--output_dir", str(out), "--use_cpu", "true", "--report_to", "none",
    ])
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()
