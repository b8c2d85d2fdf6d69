"""RMU reads the output of decoder layer l, for every l including the last one.

The formulas (hf_unlearn.objectives.rmu), with h_l the output of `model.layers[l]`, d the hidden size and the sums
over the stream's labelled real positions t:

    forget term sum = sum_t ||h_l(f)_t - c u||^2 / d        retain term sum = sum_t ||h_l(r)_t - h_l^ref(r)_t||^2 / d

The layer outputs are computed here independently of hf_unlearn's forward pass: a copy of the model whose final
norm is the identity returns, as its last `output_hidden_states` entry, the last decoder layer's output (in
transformers 5 that entry is otherwise after the final norm, which is not a layer's output). The copies run the
same float32 operations on the same weights, so the sums agree up to summation order: a relative tolerance of
1e-5 (about 100 positions x 16 dimensions of float32 terms, each rounding at 6e-8 relative) is ample, while the
normed output differs by far more (checked, so the tests can tell the two apart).
"""

import copy
import math

import pytest
import torch
from torch import nn

from hf_unlearn import RMUConfig, RMUTrainer

LAYERS = 3


def layer_outputs(model, batch):
    """Every decoder layer's output [layer][batch, seq, d], from a copy of `model` whose final norm is the identity,
    and the copy (for gradients)."""
    plain = copy.deepcopy(model)
    plain.model.norm = nn.Identity()
    mask = batch["attention_mask"]
    output = plain(
        input_ids=batch["input_ids"],
        attention_mask=mask,
        position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0),
        output_hidden_states=True,
        use_cache=False,
    )
    return output.hidden_states[1:], plain


def positions(batch):
    return (batch["labels"] != -100) & batch["attention_mask"].bool()


def mse_sum(hidden, target, where):
    per_position = (hidden - target).pow(2).mean(-1)
    return per_position[where].sum()


def rmu_trainer(tokenizer, forget_data, retain_data, tmp_path, layer, ref_model):
    from hf_unlearn.testing import build_llama

    model = build_llama(len(tokenizer), hidden_size=16, layers=LAYERS, heads=2)
    args = RMUConfig(
        output_dir=str(tmp_path),
        rmu_layer=layer,
        rmu_trainable_params=rf"layers\.{layer}\.mlp\.down_proj\.weight",
        retain_weight=1.0,
        report_to="none",
        use_cpu=True,
    )
    trainer = RMUTrainer(
        model=model,
        args=args,
        train_dataset=forget_data,
        retain_dataset=retain_data,
        processing_class=tokenizer,
        ref_model=ref_model(model),
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    return trainer, model, batch


@pytest.mark.parametrize("layer", [LAYERS - 1, 1])
def test_rmu_forget_term_and_gradient_follow_the_formula(layer, tokenizer, forget_data, retain_data, tmp_path):
    """The forget term's sum and its gradient on the trainable layer equal the formula on h_l, for the last layer
    (l = 2 of 3) and a middle one."""
    trainer, model, batch = rmu_trainer(tokenizer, forget_data, retain_data, tmp_path, layer, copy.deepcopy)
    forget = batch["forget"]
    model.train()
    objective = trainer.forget_objective
    term = objective.loss_terms(forget, trainer.run_passes(model, objective, batch))["forget_loss"]
    control = trainer.forget_objective.control
    hidden, plain = layer_outputs(model, forget)
    where = positions(forget)
    expected = mse_sum(hidden[layer], control, where)
    assert int(term.count) == int(where.sum())
    assert math.isclose(term.value.item(), expected.item(), rel_tol=1e-5)
    if layer == LAYERS - 1:  # the final norm's output gives another value: the test can tell them apart
        normed = model(
            **{k: forget[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True
        ).hidden_states[-1]
        assert not math.isclose(mse_sum(normed, control, where).item(), expected.item(), rel_tol=1e-2)
    name = f"model.layers.{layer}.mlp.down_proj.weight"
    (term.value / term.count).backward()
    (expected / where.sum()).backward()
    actual, wanted = dict(model.named_parameters())[name].grad, dict(plain.named_parameters())[name].grad
    assert torch.allclose(actual, wanted, rtol=1e-4, atol=1e-5 * wanted.abs().max().item())


def test_rmu_retain_term_on_the_last_layer_follows_the_formula(tokenizer, forget_data, retain_data, tmp_path):
    """The retain term compares the policy's and the reference's last-layer outputs (a reference whose last layer
    differs, so the term is not 0)."""

    def perturbed(model):
        reference = copy.deepcopy(model)
        with torch.no_grad():
            reference.model.layers[LAYERS - 1].mlp.down_proj.weight.mul_(1.5)
        return reference

    trainer, model, batch = rmu_trainer(tokenizer, forget_data, retain_data, tmp_path, LAYERS - 1, perturbed)
    retain = batch["retain"]
    model.train()
    objective = trainer.retain_objective
    term = objective.loss_terms(retain, trainer.run_passes(model, objective, batch))["retain_loss"]
    hidden, _ = layer_outputs(model, retain)
    target, _ = layer_outputs(trainer.ref_model, retain)
    expected = mse_sum(hidden[-1], target[-1], positions(retain))
    assert expected.item() > 0
    assert math.isclose(term.value.item(), expected.item(), rel_tol=1e-5)
