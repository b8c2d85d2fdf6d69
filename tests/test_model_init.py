"""`model_init` (as `hyperparameter_search` uses it): every model `train()` builds is set up like the first one
(objectives' `configure_model`, e.g. RMU's trainable parameters; a `peft_config` adapter)."""

from __future__ import annotations

from transformers import AutoModelForCausalLM

from hf_unlearn import get_method
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
