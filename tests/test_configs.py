"""Every shipped config parses: recipes/configs/**/*.yaml, hf_unlearn/scripts/embedded_default.yaml,
recipes/accelerate/*.yaml, recipes/deepspeed/*.json.

Parsing only: nothing is downloaded and no model is built. A config's header states its batch arithmetic
("1 per device x 32 accumulation x 8 processes ..."); the numbers are checked against the config's own values.
"""

from __future__ import annotations

import glob
import json
import os
import re

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The embedded default job's config ships inside the package (hf_unlearn/scripts/), the others in recipes/configs.
RECIPE_CONFIGS = sorted(glob.glob(os.path.join(REPO, "recipes", "configs", "**", "*.yaml"), recursive=True)) + [
    os.path.join(REPO, "hf_unlearn", "scripts", "embedded_default.yaml")
]
ACCELERATE_CONFIGS = sorted(glob.glob(os.path.join(REPO, "recipes", "accelerate", "*.yaml")))
DEEPSPEED_CONFIGS = sorted(glob.glob(os.path.join(REPO, "recipes", "deepspeed", "*.json")))
# Splits of the paper's dataset, by its config name.
UNLEARN_DATASET = "llmunlearn/unlearn_dataset"
DOMAIN_SPLITS = {"forget", "retain", "approximate"}
UNLEARN_SPLITS = {"arxiv": DOMAIN_SPLITS, "github": DOMAIN_SPLITS, "general": {"retain", "evaluation"}}
BATCH = re.compile(r"(\d+) per device x (\d+) accumulation x (\d+) process")


def relative(path: str) -> str:
    return os.path.relpath(path, REPO)


def read_yaml(path: str) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


@pytest.fixture
def in_repo(monkeypatch):
    """Configs name other files relative to the repository root (the documented launch directory)."""
    monkeypatch.chdir(REPO)
    yield
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()  # a parsed `deepspeed:` key registers a global DeepSpeed config


def test_configs_are_found():
    assert (
        len(RECIPE_CONFIGS) >= 18
        and os.path.isfile(RECIPE_CONFIGS[-1])
        and len(ACCELERATE_CONFIGS) >= 5
        and len(DEEPSPEED_CONFIGS) >= 3
    )


@pytest.mark.parametrize("path", RECIPE_CONFIGS, ids=relative)
def test_recipe_config_parses(path, in_repo, monkeypatch):
    import torch

    from hf_unlearn.scripts import args as recipe_args
    from hf_unlearn.scripts.args import parse_args

    # The configs are parsed as under their launcher: the plain-python DeepSpeed refusal has its own test.
    monkeypatch.setattr(recipe_args, "check_launcher_for_deepspeed", lambda requested: None)

    values = read_yaml(path)
    argv = ["--config", path]
    if values.get("bf16") and not torch.cuda.is_available():
        argv += ["--use_cpu", "true"]  # GPU configs: TrainingArguments refuses bf16 on CPU unless use_cpu
    args, script, model_args = parse_args(argv)
    assert args.method == values["method"]
    assert model_args.model_name_or_path == values.get("model_name_or_path")  # trl's ModelConfig reads the model keys
    assert model_args.dtype == values.get("dtype", "auto")
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "learning_rate"):
        if key in values:
            assert getattr(args, key) == values[key]
    if values.get("deepspeed"):
        missing = f"{relative(path)} names a missing {values['deepspeed']}"
        assert os.path.isfile(os.path.join(REPO, values["deepspeed"])), missing
    for source, split in (
        (script.forget_data, script.forget_split),
        (script.retain_data, script.retain_split),
        (script.approximate_data, script.approximate_split),
    ):
        if source and source.startswith(UNLEARN_DATASET + ":"):
            name = source.split(":", 1)[1]
            assert split in UNLEARN_SPLITS[name], f"{relative(path)}: {source} has no split {split!r}"


@pytest.mark.parametrize("path", RECIPE_CONFIGS, ids=relative)
def test_recipe_config_header_documents_launch_and_batch(path):
    with open(path) as handle:
        header = "".join(line for line in handle if line.startswith("#"))
    values = read_yaml(path)
    assert "recipes/unlearn.py" in header, f"{relative(path)}: the header should give the launch command"
    match = BATCH.search(header)
    assert match, f"{relative(path)}: the header should give 'N per device x N accumulation x N processes'"
    per_device, accumulation, _ = map(int, match.groups())
    assert per_device == values["per_device_train_batch_size"]
    assert accumulation == values.get("gradient_accumulation_steps", 1)
    if "max_length" in values:
        assert f"{values['max_length']:,} tokens" in header or f"{values['max_length']} tokens" in header


def test_paper_configs_cover_the_seven_methods():
    """Yi-6B x {arXiv, GitHub} x the paper's 7 methods (ga_descent and ga_kl with in-distribution and general data)."""
    for domain in ("arxiv", "github"):
        folder = os.path.join(REPO, "recipes", "configs", "yi-6b", domain)
        configs = {
            os.path.basename(p)[: -len(".yaml")]: read_yaml(p) for p in glob.glob(os.path.join(folder, "*.yaml"))
        }
        methods = sorted((c["method"], c.get("retain_data", "").rsplit(":", 1)[-1]) for c in configs.values())
        assert methods == sorted(
            [
                ("adversarial", ""),
                ("ga", ""),
                ("ga_descent", "general"),
                ("ga_descent", domain),
                ("ga_kl", "general"),
                ("ga_kl", domain),
                ("random_label", ""),
            ]
        )
        for config in configs.values():
            assert config["model_name_or_path"] == "01-ai/Yi-6B"
            assert config["forget_data"] == f"{UNLEARN_DATASET}:{domain}"
            assert (config["learning_rate"], config["num_train_epochs"], config["max_length"]) == (2e-5, 1, 4096)
            assert config["bf16"] and config["lr_scheduler_type"] == "cosine" and config["warmup_steps"] == 0.03


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=relative)
def test_accelerate_config_parses(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(path)  # rejects unknown keys
    raw = read_yaml(path)
    deepspeed = raw.get("deepspeed_config") or {}
    if "deepspeed_config_file" in deepspeed:
        missing = f"{relative(path)} names a missing JSON"
        assert os.path.isfile(os.path.join(REPO, deepspeed["deepspeed_config_file"])), missing
    if str(config.distributed_type).endswith("DEEPSPEED") and "deepspeed_config_file" not in deepspeed:
        # Inline settings must agree with the JSON of the same name (the torchrun / deepspeed launcher route).
        json_path = os.path.join(REPO, "recipes", "deepspeed", os.path.basename(path)[: -len(".yaml")] + ".json")
        with open(json_path) as handle:
            zero = json.load(handle)["zero_optimization"]
        assert deepspeed["zero_stage"] == zero["stage"]
        assert deepspeed["offload_optimizer_device"] == zero.get("offload_optimizer", {}).get("device", "none")
        assert deepspeed["offload_param_device"] == zero.get("offload_param", {}).get("device", "none")
        if zero["stage"] == 3:
            assert deepspeed["zero3_save_16bit_model"] and deepspeed["zero3_init_flag"]


@pytest.mark.parametrize("path", DEEPSPEED_CONFIGS, ids=relative)
def test_deepspeed_config_is_valid(path):
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    with open(path) as handle:
        config = json.load(handle)
    # Batch sizes, clipping and precision come from TrainingArguments.
    for key in (
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "gradient_clipping",
    ):
        assert config[key] == "auto", f"{relative(path)}: {key} should be 'auto'"
    assert config["bf16"]["enabled"] == "auto"
    zero = config["zero_optimization"]
    DeepSpeedZeroConfig(**{k: v for k, v in zero.items() if v != "auto"})  # rejects misspelled keys
    if zero["stage"] == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True, "ZeRO-3 must save a loadable 16-bit model"


def test_config_splits_reach_the_hub_loader(monkeypatch, tokenizer):
    """`forget_data: id:config` + `forget_split` become load_dataset(id, config, split=...) (no download here)."""
    import datasets

    from hf_unlearn.data import build_examples
    from hf_unlearn.scripts.args import parse_args

    calls = []

    def fake_load_dataset(name, config=None, split=None, **kwargs):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"text": ["the quick brown fox jumps over the lazy dog"] * 2})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    path = os.path.join(REPO, "recipes", "configs", "yi-6b", "github", "ga_kl_general.yaml")
    _, script, _ = parse_args(["--config", path, "--use_cpu", "true"])
    for name in ("forget", "retain", "approximate"):
        build_examples(getattr(script, f"{name}_data"), tokenizer, max_length=8, split=getattr(script, f"{name}_split"))
    assert calls == [
        (UNLEARN_DATASET, "github", "forget"),
        (UNLEARN_DATASET, "general", "retain"),
        (UNLEARN_DATASET, "github", "approximate"),
    ]
