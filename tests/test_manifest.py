"""The run manifest (`hf_unlearn.manifest`): written by every route, rerun bit for bit, data-free.

Each run is a tiny Llama on a few JSONL documents (seconds).
"""

from __future__ import annotations

import json
import os

import pytest

from tests._support import data_flags, read_json, recipe_argv, write_jsonl
from tests.conftest import make_documents, unlearning_args


@pytest.fixture
def data(tmp_path):
    return {
        "forget": write_jsonl(tmp_path / "forget.jsonl", make_documents(4, seed=1)),
        "retain": write_jsonl(tmp_path / "retain.jsonl", make_documents(4, seed=2)),
        "approximate": write_jsonl(tmp_path / "approx.jsonl", make_documents(4, seed=3)),
    }


# Settings away from every default, so that a rerun that did not take them from the manifest would differ.
NON_DEFAULT = [
    "--learning_rate",
    "3e-3",
    "--lr_scheduler_type",
    "constant",
    "--warmup_steps",
    "0",
    "--seed",
    "7",
    "--pairing_seed",
    "5",
    "--retain_weight",
    "0.5",
    "--stop_at_unseen_nll",
    "false",
]


def weights(folder):
    from safetensors.torch import load_file

    return load_file(os.path.join(folder, "model.safetensors"))


def test_a_rerun_from_the_manifest_reproduces_the_weights_bit_for_bit(trained_model_dir, data, tmp_path):
    """The recipe's manifest, read back by `--from_manifest` with the data given again, gives the same weights,
    every tensor equal (torch.equal: same float bits); a run with the defaults instead of the manifest's settings
    gives other weights, so the comparison can fail."""
    import torch

    from hf_unlearn.scripts.unlearn import main

    main(recipe_argv(trained_model_dir, data, tmp_path / "first", *NON_DEFAULT))
    manifest = str(tmp_path / "first" / "unlearning_manifest.json")
    main(
        [
            "--from_manifest",
            manifest,
            "--model_name_or_path",
            trained_model_dir,
            *data_flags(data),
            "--output_dir",
            str(tmp_path / "rerun"),
        ]
    )
    first, rerun = weights(tmp_path / "first"), weights(tmp_path / "rerun")
    assert first.keys() == rerun.keys()
    different = [name for name in first if not torch.equal(first[name], rerun[name])]
    assert not different, f"the rerun's weights differ: {different[:5]}"
    assert read_json(tmp_path / "rerun" / "unlearning_manifest.json")["config"] == read_json(manifest)["config"]
    main(recipe_argv(trained_model_dir, data, tmp_path / "defaults", "--stop_at_unseen_nll", "false"))
    defaults = weights(tmp_path / "defaults")
    assert any(not torch.equal(first[name], defaults[name]) for name in first)


def test_the_recipe_manifest_states_how_the_run_was_made(trained_model_dir, data, tmp_path):
    from hf_unlearn.scripts.unlearn import main

    main(recipe_argv(trained_model_dir, data, tmp_path / "out", *NON_DEFAULT, "--gradient_accumulation_steps", "2"))
    manifest = read_json(tmp_path / "out" / "unlearning_manifest.json")
    assert set(manifest["versions"]) == {
        "hf_unlearn",
        "transformers",
        "torch",
        "accelerate",
        "deepspeed",
        "trl",
        "peft",
    }
    import torch
    import transformers

    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["versions"]["transformers"] == transformers.__version__
    assert manifest["engine"]["name"] == "single"
    assert manifest["batch"] == {
        "world_size": 1,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 2,
        "effective_batch_size": 4,
    }
    assert manifest["seeds"]["seed"] == 7 and manifest["seeds"]["pairing_seed"] == 5 and manifest["seeds"]["ranks"]
    assert manifest["method"]["name"] == "ga_descent"
    assert (manifest["method"]["forget_loss"], manifest["method"]["retain_loss"]) == ("ga", "nll")
    assert manifest["method"]["hyperparameters"]["retain_weight"] == 0.5
    config = manifest["config"]
    assert config["learning_rate"] == 3e-3 and config["eval_every_steps"] == 1 and config["mia_resamples"] == 20
    assert manifest["model"] == {"id": "local", "revision": None, "reference": None}
    # Counts of examples (chunks), never tokens; forget chunks of 4 documents at 32 tokens.
    assert manifest["counts"]["forget"] >= 4 and manifest["counts"]["retain"] >= 4 and manifest["counts"]["unseen"] >= 4
    assert manifest["stop"] == {"kind": "end of schedule", "step": 2, "max_steps": 2}
    # Evaluations of the retain and unseen sets only.
    stages = manifest["evaluation"]
    assert set(stages) == {"before", "after"}
    assert all(set(values) == {"eval_retain_nll", "eval_approximate_nll"} for values in stages.values())
    git = manifest["git"]  # the tests run inside the project's repository
    assert git is None or (len(git["commit"]) == 40 and isinstance(git["dirty"], bool))
    # No path: not the data files, not the output folder, not the model folder.
    text = json.dumps(manifest)
    for path in (*data.values(), str(tmp_path), trained_model_dir, "forget.jsonl"):
        assert path not in text
    for name in ("forget_data", "retain_data", "approximate_data", "output_dir", "logging_dir", "hub_token"):
        assert name not in config


def test_the_manifest_outside_a_git_repository_has_no_commit(tmp_path, monkeypatch):
    from hf_unlearn.manifest import git_commit

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert git_commit(str(tmp_path)) is None
    assert git_commit(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) is not None


def test_a_library_that_is_not_installed_is_absent(monkeypatch):
    from importlib import metadata

    from hf_unlearn.manifest import library_versions

    real = metadata.version

    def version(name):
        if name == "deepspeed":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    versions = library_versions()
    assert versions["deepspeed"] == "absent" and versions["torch"] != "absent"


def test_the_cli_writes_the_manifest(trained_model_dir, data, tmp_path):
    from hf_unlearn.cli import main

    assert main(["train", *recipe_argv(trained_model_dir, data, tmp_path / "out")]) == 0
    manifest = read_json(tmp_path / "out" / "unlearning_manifest.json")
    assert manifest["method"]["name"] == "ga_descent" and manifest["counts"]["forget"] >= 4


def test_trainer_train_and_save_model_write_the_manifest(tiny_model, tokenizer, forget_data, retain_data, tmp_path):
    """The public API: `train()` + `save_model()` write the manifest (and the ledger) next to the model, counts
    from the datasets, the stop of the schedule, no evaluation without one."""
    from hf_unlearn import get_method

    args = unlearning_args("ga_descent", tmp_path, max_steps=2, seed=11, gradient_accumulation_steps=2)
    trainer = get_method("ga_descent")(
        model=tiny_model, args=args, train_dataset=forget_data, retain_dataset=retain_data, processing_class=tokenizer
    )
    trainer.train()
    trainer.save_model()
    out = tmp_path / "out"
    manifest = read_json(out / "unlearning_manifest.json")
    assert manifest["method"]["trainer"] == "GradientAscentDescentTrainer"
    assert manifest["counts"] == {"forget": len(forget_data), "retain": len(retain_data), "unseen": None}
    assert manifest["batch"]["effective_batch_size"] == 4 * 2
    assert manifest["seeds"]["seed"] == 11
    assert manifest["stop"] == {"kind": "end of schedule", "step": 2, "max_steps": 2}
    assert manifest["model"]["id"] is None  # built from a config: loaded from nowhere
    assert manifest["request"] == 1 and manifest["previous_manifest_sha256"] is None
    assert (out / "unlearning_ledger.json").is_file()
    assert "unlearning_manifest.json" in (out / "README.md").read_text()


def test_stop_reasons_are_kinds_without_their_numbers():
    from hf_unlearn.manifest import stop_kind

    assert stop_kind("target reached: forget NLL 3.3913 >= target 3.3659") == "forget NLL reached the target"
    assert stop_kind("blow-up: forget NLL 12.3456 > max_forget_nll 10") == "blow-up"
    assert stop_kind("target reached (every attack): all 21 AUC intervals contain 0.5") == (
        "every attack's AUC interval contains 0.5"
    )
    assert stop_kind(None, 2, 2) == "end of schedule"
    assert stop_kind(None, 1, 4) == "stopped early by a callback"


def test_from_manifest_mistakes_are_one_line(trained_model_dir, data, tmp_path):
    from hf_unlearn.scripts.args import parse_args
    from hf_unlearn.scripts.unlearn import main

    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_args(["--from_manifest", str(tmp_path / "missing.json"), *data_flags(data)])
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_args(["--from_manifest", str(bad)])
    main(recipe_argv(trained_model_dir, data, tmp_path / "out", "--stop_at_unseen_nll", "false"))
    manifest = str(tmp_path / "out" / "unlearning_manifest.json")
    with pytest.raises(ValueError, match="local folder .* pass --model_name_or_path"):
        parse_args(["--from_manifest", manifest, *data_flags(data)])
    with pytest.raises(ValueError, match="pass one of them"):
        parse_args(["--from_manifest", manifest, "--config", manifest])
    # Command-line flags override the manifest.
    args, _, _ = parse_args(
        ["--from_manifest", manifest, "--model_name_or_path", trained_model_dir, *data_flags(data), "--max_steps", "9"]
    )
    assert args.max_steps == 9 and args.method == "ga_descent"
