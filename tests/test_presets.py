"""A method's defaults (its config class, e.g. SimNPO's forget_weight 0.125, RMU's retain_weight 1200) hold whatever
arguments class the trainer is given, and the trainer keeps the user's arguments object.

The rule (`hf_unlearn.config.resolve_unlearning_field`): outside the method's own config class, an unlearning field
that the arguments lack, or that holds `UnlearningConfig`'s default, takes the method's default.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import pytest
from transformers import TrainingArguments

from hf_unlearn import UnlearningConfig, get_method, list_methods, run_plan
from hf_unlearn.config import unlearning_fields

BASE = {name: f.default for name, f in unlearning_fields().items()}


def presets() -> list[tuple[str, str, object]]:
    """(method, field, the method's default) for every field whose default a method's config class changes."""
    out = []
    for method in list_methods():
        for name, definition in unlearning_fields(get_method(method).config_class).items():
            if name != "method" and name in BASE and definition.default != BASE[name]:
                out.append((method, name, definition.default))
    return out


def arguments(kind: str, tmp_path, **values):
    common = dict(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    return (TrainingArguments if kind == "training_arguments" else UnlearningConfig)(**common, **values)


def build(method, args, tiny_model, forget_data, retain_data, tokenizer):
    reference = {"ref_model": copy.deepcopy(tiny_model)} if run_plan(args, get_method(method)).reference != "no" else {}
    return get_method(method)(
        model=tiny_model,
        args=args,
        train_dataset=forget_data,
        retain_dataset=retain_data,
        processing_class=tokenizer,
        **reference,
    )


def test_presets_exist():
    """SimNPO's forget weight and RMU's retain weight are presets (the cases below are not vacuous)."""
    assert ("simnpo", "forget_weight", 0.125) in presets() and ("rmu", "retain_weight", 1200.0) in presets()


@pytest.mark.parametrize("kind", ["training_arguments", "unlearning_config"])
@pytest.mark.parametrize("method,name,default", presets())
def test_every_preset_holds_for_plain_arguments(
    method, name, default, kind, tiny_model, forget_data, retain_data, tokenizer, tmp_path
):
    """TrainingArguments and the base UnlearningConfig both train with the method's default, as its own config does;
    the loss terms carry that weight."""
    if method == "rmu":  # RMU's defaults (layer 7, layers 5-7 train) need 8 decoder layers
        from hf_unlearn.testing import build_llama

        tiny_model = build_llama(len(tokenizer), hidden_size=16, layers=8, heads=2)
    trainer = build(method, arguments(kind, tmp_path), tiny_model, forget_data, retain_data, tokenizer)
    assert getattr(trainer.unlearning_args, name) == default
    if name.endswith("_weight"):
        batch = trainer.data_collator([trainer.train_dataset[0]])
        objective = trainer.forget_objective if name == "forget_weight" else trainer.retain_objective
        terms = objective.loss_terms(objective.select(batch), trainer.run_passes(trainer.model, objective, batch))
        assert terms[f"{name.split('_')[0]}_loss"].weight == default


def test_values_the_user_set_win(tiny_model, forget_data, retain_data, tokenizer, tmp_path):
    """A value other than the base default is the user's; the method's own config class is read as is."""
    trainer = build(
        "simnpo",
        arguments("unlearning_config", tmp_path, forget_weight=0.5),
        tiny_model,
        forget_data,
        retain_data,
        tokenizer,
    )
    assert trainer.unlearning_args.forget_weight == 0.5
    config = get_method("simnpo").config_class(
        output_dir=str(tmp_path / "o"), forget_weight=1.0, report_to="none", use_cpu=True
    )
    trainer = build("simnpo", config, tiny_model, forget_data, retain_data, tokenizer)
    assert trainer.unlearning_args.forget_weight == 1.0


@dataclass
class MyArguments(TrainingArguments):
    """A user's TrainingArguments subclass with a field of its own."""

    my_field: int = field(default=3)


def test_the_users_arguments_object_is_kept(tiny_model, forget_data, retain_data, tokenizer, tmp_path):
    """`trainer.args` is the object passed in (its own fields stay) and later edits to it take effect."""
    args = MyArguments(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        use_cpu=True,
        max_steps=5,
        per_device_train_batch_size=2,
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = build("ga", args, tiny_model, forget_data, None, tokenizer)
    assert trainer.args is args and trainer.args.my_field == 3
    args.max_steps = 1
    trainer.train()
    assert trainer.state.global_step == 1


def test_edits_to_unlearning_fields_take_effect(tiny_model, forget_data, retain_data, tokenizer, tmp_path):
    """An UnlearningConfig edited after construction: the next loss uses the new weight."""
    args = arguments("unlearning_config", tmp_path)
    trainer = build("ga", args, tiny_model, forget_data, None, tokenizer)
    args.forget_weight = 0.25
    batch = trainer.data_collator([trainer.train_dataset[0]])
    objective = trainer.forget_objective
    terms = objective.loss_terms(batch["forget"], trainer.run_passes(trainer.model, objective, batch))
    assert terms["forget_loss"].weight == 0.25
