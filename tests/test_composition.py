"""Any forget objective composes with any retain objective, through the recipe and through the API, because one
pure function (`hf_unlearn.plan.run_plan`) decides what a run trains on and the trainer resolves it again when
`train()` starts (hyperparameter-search trials set their arguments then)."""

from __future__ import annotations

import logging
import math

import pytest

from hf_unlearn import UnlearningConfig, get_method, run_plan
from tests._support import argv
from tests.conftest import unlearning_args


def test_run_plan_follows_the_arguments_not_the_class():
    """The arguments' forget_loss / retain_loss / retain_weight decide; the class gives the defaults."""
    ga, npo, ga_kl = get_method("ga"), get_method("npo"), get_method("ga_kl")
    assert run_plan(None, ga).uses_retain_data is False
    plan = run_plan(UnlearningConfig(output_dir="x", retain_loss="nll"), ga)
    assert (plan.forget_loss, plan.retain_loss, plan.uses_retain_data, plan.needs_retain_data) == (
        "ga",
        "nll",
        True,
        True,
    )
    plan = run_plan(UnlearningConfig(output_dir="x", retain_loss="none"), npo)
    assert (plan.forget_loss, plan.retain_loss, plan.uses_retain_data, plan.precomputes_reference) == (
        "npo",
        "none",
        False,
        True,
    )
    plan = run_plan(UnlearningConfig(output_dir="x", forget_loss="npo"), ga)
    assert plan.forget_loss == "npo" and plan.reference == "once"
    # ga_kl at retain_weight 0: the retain objective stays (it pairs data) but needs neither data nor reference.
    plan = run_plan(UnlearningConfig(output_dir="x", retain_weight=0.0), ga_kl)
    assert plan.uses_retain_data and not plan.needs_retain_data and not plan.needs_reference
    with pytest.raises(ValueError, match="Unknown retain_loss 'nope'"):
        run_plan(UnlearningConfig(output_dir="x", retain_loss="nope"), ga)


def test_recipe_ga_with_a_retain_objective_trains_on_the_retain_data(trained_model_dir, data, tmp_path):  # noqa: F811
    """`--method ga --retain_loss nll --retain_data r.jsonl` is GA + descent: the retain data is trained on (and
    listed on the model card), not dropped."""
    from hf_unlearn.scripts.unlearn import main

    out = tmp_path / "out"
    main(argv(trained_model_dir, data, out, "--retain_loss", "nll", method="ga"))
    card = (out / "README.md").read_text()
    assert "| retain |" in card


def test_recipe_npo_without_a_retain_objective_needs_no_retain_data(trained_model_dir, data, tmp_path):  # noqa: F811
    """`--method npo --retain_loss none` without retain data runs (plain NPO)."""
    from hf_unlearn.scripts.unlearn import main

    out = tmp_path / "out"
    main(argv(trained_model_dir, data, out, "--retain_loss", "none", method="npo", retain=False))
    assert (out / "README.md").exists()


def test_hyperparameter_search_trial_trains_the_trials_objective(trained_model_dir, tokenizer, forget_data, tmp_path):
    """A trial with forget_loss=npo on the ga method trains NPO: at the first step the policy is the reference,
    so every sequence's NPO term is -(2/beta) ln sigmoid(0) = (2/beta) ln 2 = 20 ln 2 = 13.8629 (beta 0.1), and
    the logged forget_loss (its sequence-weighted mean) is that value; GA would log -NLL < 0. The policy's and
    the precomputed reference's log-probabilities come from the same float32 forward pass on the same weights
    (the reference precomputation and the first step differ only in summation order), hence rel_tol 1e-4."""
    pytest.importorskip("optuna")
    from transformers import AutoModelForCausalLM

    cls = get_method("ga")
    args = unlearning_args("ga", tmp_path, max_steps=1, per_device_train_batch_size=2, disable_tqdm=True)
    trainer = cls(
        model_init=lambda: AutoModelForCausalLM.from_pretrained(trained_model_dir),
        args=args,
        train_dataset=forget_data,
        eval_dataset=forget_data,
        processing_class=tokenizer,
    )

    def space(trial):
        return {"forget_loss": trial.suggest_categorical("forget_loss", ["npo"])}

    trainer.hyperparameter_search(hp_space=space, backend="optuna", n_trials=1, direction="minimize")
    logged = [entry for entry in trainer.state.log_history if "forget_loss" in entry][0]
    assert math.isclose(logged["forget_loss"], 20 * math.log(2), rel_tol=1e-4)
    assert trainer.plan.forget_loss == "npo" and type(trainer.forget_objective).name == "npo"


def test_loss_route_is_logged_once_when_training_starts(
    trained_model_dir, tokenizer, forget_data, retain_data, tmp_path, caplog
):
    """One INFO line names the route: chunked or full logits, gradient in the forward pass or recomputed, one
    backward per objective or per micro-batch."""
    from transformers import AutoModelForCausalLM

    cls = get_method("ga_descent")
    for chunk, expected in (
        (512, "chunked logits (512 positions per chunk), gradient in the forward pass, one backward per objective"),
        (0, "full logits, logits kept for backward, one backward per objective"),
    ):
        args = unlearning_args(
            "ga_descent", tmp_path / str(chunk), max_steps=1, loss_chunk_size=chunk, disable_tqdm=True
        )
        trainer = cls(
            model=AutoModelForCausalLM.from_pretrained(trained_model_dir),
            args=args,
            train_dataset=forget_data,
            retain_dataset=retain_data,
            processing_class=tokenizer,
        )
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="hf_unlearn.trainer"):
            trainer.train()
        lines = [
            r.getMessage() for r in caplog.records if r.name == "hf_unlearn.trainer" and "backward" in r.getMessage()
        ]
        assert lines == [f"ga_descent (ga + nll): {expected}"]
