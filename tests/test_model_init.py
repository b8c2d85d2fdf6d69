"""`model_init` (as `hyperparameter_search` uses it): every model `train()` builds is set up like the first one
(objectives' `configure_model`, e.g. RMU's trainable parameters; a `peft_config` adapter)."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM

from hf_unlearn import get_method, list_methods
from tests.conftest import unlearning_args

RMU = {"rmu_layer": 1, "rmu_trainable_params": r"layers\.[01]\.mlp\.down_proj\.weight", "retain_weight": 1.0}


def trainable(model) -> list[str]:
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def test_rmu_with_model_init_trains_only_the_chosen_parameters(
    trained_model_dir, tokenizer, forget_data, retain_data, tmp_path
):
    """The model that train() rebuilds from model_init has only RMU's 2 chosen tensors trainable, and only they
    change."""
    import torch

    built = []

    def model_init():
        built.append(AutoModelForCausalLM.from_pretrained(trained_model_dir))
        return built[-1]

    args = unlearning_args("rmu", tmp_path, max_steps=1, disable_tqdm=True, **RMU)
    trainer = get_method("rmu")(
        model_init=model_init,
        args=args,
        train_dataset=forget_data,
        retain_dataset=retain_data,
        processing_class=tokenizer,
    )
    original = {
        n: p.detach().clone() for n, p in AutoModelForCausalLM.from_pretrained(trained_model_dir).named_parameters()
    }
    trainer.train()
    assert len(built) == 2 and trainer.model is built[-1]
    expected = ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    assert trainable(trainer.model) == expected
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, original[n])]
    assert changed == expected


def test_model_init_with_peft_config_wraps_every_model(trained_model_dir, tokenizer, forget_data, tmp_path):
    """Construction works, and the model of each train() is a fresh PeftModel with only the adapter trainable."""
    from peft import LoraConfig, PeftModel

    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, task_type="CAUSAL_LM")
    args = unlearning_args("ga", tmp_path, max_steps=1, disable_tqdm=True)
    trainer = get_method("ga")(
        model_init=lambda: AutoModelForCausalLM.from_pretrained(trained_model_dir),
        args=args,
        train_dataset=forget_data,
        processing_class=tokenizer,
        peft_config=config,
    )
    first = trainer.model
    assert isinstance(first, PeftModel)
    trainer.train()
    assert isinstance(trainer.model, PeftModel) and trainer.model is not first
    names = trainable(trainer.model)
    assert names and all("lora_" in name for name in names)


@pytest.mark.slow
@pytest.mark.parametrize("method", list_methods())
def test_hyperparameter_search_with_model_init_trains_every_method(method, trained_model_dir, tokenizer, tmp_path):
    """Every registered method under `hyperparameter_search` with `model_init` (optuna, one trial): the trial's
    learning rate reaches the optimizer (constant schedule, so the logged rate is the trial's 3e-4, not the
    arguments' 1e-3) and the method's forget term is logged finite. QA records serve document and QA methods."""
    import math

    pytest.importorskip("optuna")
    from hf_unlearn import build_qa_dataset

    def qa(offset):
        records = [
            {"question": f"What is item {i}?", "answer": f"Item {i} is a small word."}
            for i in range(offset, offset + 4)
        ]
        return build_qa_dataset(records, tokenizer, max_length=32)

    settings = RMU if method == "rmu" else {}
    args = unlearning_args(
        method,
        tmp_path,
        max_steps=1,
        per_device_train_batch_size=2,
        disable_tqdm=True,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        **settings,
    )
    trainer = get_method(method)(
        model_init=lambda: AutoModelForCausalLM.from_pretrained(trained_model_dir),
        args=args,
        train_dataset=qa(0),
        retain_dataset=qa(10),
        eval_dataset=qa(0),
        processing_class=tokenizer,
    )
    trainer.hyperparameter_search(
        hp_space=lambda trial: {"learning_rate": trial.suggest_categorical("learning_rate", [3e-4])},
        backend="optuna",
        n_trials=1,
        direction="minimize",
    )
    logged = [entry for entry in trainer.state.log_history if "forget_loss" in entry][0]
    assert logged["learning_rate"] == pytest.approx(3e-4) and math.isfinite(logged["forget_loss"])
