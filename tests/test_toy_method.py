"""A method defined in one file outside hf_unlearn: register an objective and a method, and it is listed
(`list_methods()`, `hf-unlearn methods`), golden-checked and trainable, with nothing else touched.

The toy forget objective is doubled gradient ascent, forget_loss = -2 NLL(f); the toy method pairs it with descent
on retain data. On the bigram model of tests/_support.py (f = [0, 1, 2], r = [1, 1, 0]):

    -2 NLL(f) + NLL(r) = -2 ln 4 + 1.5 ln 2 = -2.5 ln 2 = -1.732868
"""

from __future__ import annotations

import math

import pytest

from hf_unlearn import (
    LossTerm,
    Objective,
    UnlearningTrainer,
    get_method,
    list_methods,
    register_method,
    register_objective,
)
from hf_unlearn.losses import nll_sum
from hf_unlearn.objectives import FORGET_OBJECTIVES
from hf_unlearn.registry import _METHODS


def define_toy_method():
    """The whole method, as a user's file would write it."""

    @register_objective("toy_double_ga")
    class DoubleAscent(Objective):
        kind = stream = "forget"
        terms = ("forget_loss",)
        normalisers = ("forget_tokens",)

        def loss_terms(self, batch, outputs):
            total, count = nll_sum(outputs["logits"], batch["labels"], batch.get("attention_mask"), self.chunk_size)
            return {"forget_loss": LossTerm(-2 * total, count, "forget_tokens", self.args.forget_weight)}

    @register_method("toy")
    class ToyTrainer(UnlearningTrainer):
        paper_name = "Toy doubled ascent"
        forget_loss = "toy_double_ga"
        retain_loss = "nll"

    return ToyTrainer


@pytest.fixture
def toy():
    cls = define_toy_method()
    yield cls
    _METHODS.pop("toy")
    FORGET_OBJECTIVES.pop("toy_double_ga")


def test_toy_method_is_listed(toy, capsys):
    from hf_unlearn.cli import main

    assert "toy" in list_methods() and get_method("toy") is toy
    assert main(["methods"]) == 0
    line = [row for row in capsys.readouterr().out.splitlines() if row.startswith("toy ")]
    assert line and line[0].split()[:4] == ["toy", "toy_double_ga", "nll", "no"]


def test_toy_method_golden(toy, tmp_path):
    """-2.5 ln 2 (module docstring)."""
    from tests._support import golden_loss

    loss, _ = golden_loss("toy", tmp_path)
    assert math.isclose(loss, -2.5 * math.log(2), rel_tol=1e-6)


def test_toy_method_trains(toy, tiny_model, tokenizer, forget_data, retain_data, tmp_path):
    """Three steps at lr 1e-2 raise the forget NLL (it ascends twice as hard as it descends on retain data)."""
    from hf_unlearn.evaluation import mean_nll
    from tests.conftest import unlearning_args

    before = mean_nll(tiny_model, forget_data)
    trainer = toy(
        model=tiny_model,
        args=unlearning_args("toy", tmp_path, max_steps=3, learning_rate=1e-2, disable_tqdm=True),
        train_dataset=forget_data,
        retain_dataset=retain_data,
        processing_class=tokenizer,
    )
    trainer.train()
    assert {"forget_loss", "retain_loss"} <= set(trainer.state.log_history[0])
    assert mean_nll(tiny_model, forget_data) > before
