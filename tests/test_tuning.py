"""Hyperparameter tuning (`hf_unlearn.tuning`, `hf-unlearn tune`): the criterion, the choice, pruning, the budget,
bad input, and the chosen YAML run as is by `hf-unlearn train`.

The searches run a tiny Llama fitted to forget + retain data (`trained_model_dir`), with two attacks and 100
bootstrap resamples per evaluation (seconds per trial).
"""

from __future__ import annotations

import json
import math
import os

import pytest

from hf_unlearn.callbacks import EvalRecord
from tests.conftest import make_documents

optuna = pytest.importorskip("optuna")

from hf_unlearn.tuning import (  # noqa: E402
    MET,
    NON_FINITE,
    NOT_FORGOTTEN,
    OVER_UNLEARNED,
    PRUNED,
    RETAIN_OVER,
    SearchSpace,
    TrialOutcome,
    TuningCriterion,
    TuningResult,
    check_budget,
    cost_bound_pruner,
)

ATTACKS = ["loss", "min_k_20"]


def record(step, intervals, retain=1.0, forget=2.0):
    attacks = {
        f"a{i}": {"auc": (low + high) / 2, "auc_low": low, "auc_high": high} for i, (low, high) in enumerate(intervals)
    }
    return EvalRecord(step=step, nll={"forget": forget, "approximate": 3.0, "retain": retain}, attacks=attacks)


START = record(0, [(0.7, 0.9)], retain=1.0)


# ------------------------------------------------------------------ the criterion (pure)


@pytest.mark.parametrize(
    "intervals, retain, expected",
    [
        ([(0.4, 0.6), (0.45, 0.7)], 1.05, MET),  # every interval contains 0.5; retain 1.05 <= 1.1 x 1.0
        ([(0.4, 0.6), (0.3, 0.49)], 1.0, OVER_UNLEARNED),  # one interval entirely below 0.5
        ([(0.4, 0.6), (0.51, 0.7)], 1.0, None),  # one still above: not yet
        ([(0.4, 0.6)], 1.11, RETAIN_OVER),  # 1.11 > (1 + 0.1) x 1.0
        ([(0.4, 0.6)], math.nan, NON_FINITE),
    ],
)
def test_criterion_status(intervals, retain, expected):
    """Met = every attack's interval contains 0.5 and retain NLL <= (1 + 0.1) x its start value 1.0 = 1.1."""
    assert TuningCriterion(0.1).status(record(1, intervals, retain), START) == expected


def test_distance_is_zero_exactly_when_met():
    """Gap of the worst interval to 0.5 plus the retain excess: (0.6 - 0.5) + (1.32 / 1.1 - 1) = 0.1 + 0.2."""
    criterion = TuningCriterion(0.1)
    assert criterion.distance(record(1, [(0.4, 0.6)], 1.0), START) == 0
    assert criterion.distance(record(1, [(0.6, 0.8)], 1.32), START) == pytest.approx(0.3)


def outcome(number, status, cost, retain, auc=0.5):
    return TrialOutcome(
        number=number,
        method="ga",
        params={"learning_rate": 1e-3, "max_steps": 4},
        status=status,
        step=cost,
        cost_tokens=cost,
        strongest={"attack": "loss", "auc": auc, "auc_low": 0.4, "auc_high": 0.6},
        nll={"forget": 2.0, "approximate": 2.0, "retain": retain},
        retain_limit=1.1,
    )


def test_chosen_is_the_cheapest_met_trial_then_the_lower_retain_nll():
    result = TuningResult(TuningCriterion())
    result.trials = [
        outcome(0, MET, 300, 1.0),
        outcome(1, NOT_FORGOTTEN, 100, 0.9),
        outcome(2, MET, 200, 1.05),
        outcome(3, MET, 200, 1.01),
        outcome(4, PRUNED, 200, 1.0),
    ]
    assert result.chosen.number == 3 and result.best_cost() == 200
    result.trials = [outcome(0, NOT_FORGOTTEN, 100, 1.0), outcome(1, OVER_UNLEARNED, 100, 1.0)]
    assert result.chosen is None and "lower the learning rates" in result.advice() and "raise" in result.advice()


def test_cost_bound_pruner_prunes_at_or_above_the_best_cost():
    """A trial reporting cost 200 is pruned once a met setting costs 200 (it could only meet it later, at more)."""
    bound = {"value": None}
    study = optuna.create_study(pruner=cost_bound_pruner(lambda: bound["value"]))
    trial = study.ask()
    trial.report(200, step=2)
    assert not trial.should_prune()  # nothing met yet
    bound["value"] = 300
    assert not trial.should_prune()
    bound["value"] = 200
    assert trial.should_prune()


# ------------------------------------------------------------------ bad input (one line, nothing run)


@pytest.mark.parametrize(
    "space, message",
    [
        (dict(max_steps=(4,)), "needs learning rates"),
        (dict(learning_rate=(1e-3, 1e-5), max_steps=(4,)), "is empty"),
        (dict(learning_rates=(1e-3,), max_steps=()), "no max_steps"),
        (dict(learning_rates=(1e-3,), max_steps=(0,)), "holds 0"),
        (dict(learning_rates=(-1e-3,), max_steps=(4,)), "holds -0.001"),
    ],
)
def test_empty_or_invalid_search_space_is_one_clear_error(space, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace(**space)


def test_search_space_from_command_line_strings():
    assert SearchSpace.from_strings("1e-5:1e-3", "4,8") == SearchSpace(learning_rate=(1e-5, 1e-3), max_steps=(4, 8))
    assert SearchSpace.from_strings("1e-5,3e-5", "4").learning_rates == (1e-5, 3e-5)
    with pytest.raises(ValueError, match="is not LOW:HIGH"):
        SearchSpace.from_strings("fast", "4")
    with pytest.raises(ValueError, match="needs a list of learning rates"):
        SearchSpace.from_strings("1e-5:1e-3", "4").grid()


@pytest.mark.parametrize("n_trials, timeout", [(0, None), (4, 0)])
def test_a_budget_of_nothing_is_an_error(n_trials, timeout):
    with pytest.raises(ValueError, match="budget"):
        check_budget(n_trials, timeout)


# ------------------------------------------------------------------ a search through the API (model_init)


@pytest.fixture(scope="module")
def unseen_data(tokenizer):
    from hf_unlearn import chunk_documents

    return chunk_documents(make_documents(8, seed=3), tokenizer, max_length=32)


def model_init_trainer(model_dir, tokenizer, forget_data, retain_data, tmp_path, method="ga"):
    from transformers import AutoModelForCausalLM

    from hf_unlearn import get_method
    from tests.conftest import unlearning_args

    args = unlearning_args(method, tmp_path, max_steps=8)
    return get_method(method)(
        model_init=lambda: AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=forget_data,
        retain_dataset=retain_data,
        processing_class=tokenizer,
    )


@pytest.mark.slow
def test_api_search_picks_the_cheapest_setting_inside_the_criterion(
    trained_model_dir, tokenizer, forget_data, retain_data, unseen_data, tmp_path, monkeypatch
):
    """GA at lr 1e-2 makes the forget set indistinguishable within 8 steps, 1e-4 does not; the retain NLL may rise
    up to 100x (this tiny model's retain data is the forget set's language). The chosen trial met the criterion at
    its step, no met trial is cheaper, trials after it that did not meet it stopped by its step (pruned), the start
    evaluation ran once for all trials, and the trainer's arguments are restored."""
    import hf_unlearn.callbacks as callbacks
    from hf_unlearn.tuning import tune_trainer

    starts = []
    evaluate = callbacks.UnlearningEvalCallback.evaluate
    monkeypatch.setattr(
        callbacks.UnlearningEvalCallback,
        "evaluate",
        lambda self, step: (starts.append(step) if step == 0 else None) or evaluate(self, step),
    )
    trainer = model_init_trainer(trained_model_dir, tokenizer, forget_data, retain_data, tmp_path)
    splits = {"forget": forget_data, "approximate": unseen_data, "retain": retain_data}
    result = tune_trainer(
        trainer,
        splits,
        SearchSpace(learning_rates=(1e-4, 1e-2, 3e-3), max_steps=(8,)),
        TuningCriterion(retain_tolerance=100.0),
        n_trials=3,
        sampler="grid",
        attacks=ATTACKS,
        n_resamples=100,
        progress=False,
    )
    chosen = result.chosen
    assert chosen is not None and chosen.met and len(result.trials) == 3
    assert (
        chosen.strongest["auc_low"] <= 0.5 <= chosen.strongest["auc_high"]
        and chosen.nll["retain"] <= chosen.retain_limit
    )
    assert all(t.cost_tokens >= chosen.cost_tokens for t in result.trials if t.met)
    assert all(t.step <= chosen.step for t in result.trials if t.number > chosen.number and not t.met)
    assert {t.params["learning_rate"]: t.status for t in result.trials}[1e-4] in (NOT_FORGOTTEN, PRUNED)
    assert starts == [0]  # one start evaluation, shared by the three trials
    assert trainer.args.learning_rate == 1e-3 and trainer.args.max_steps == 8  # restored
    written = [f for _, _, files in os.walk(tmp_path / "out") for f in files]  # Trainer creates the folder
    assert written == []  # no checkpoint written during the search


def test_api_refuses_a_search_without_unseen_data(tiny_model, tokenizer, forget_data, retain_data, tmp_path):
    from hf_unlearn.tuning import tune_trainer

    tiny_model.save_pretrained(tmp_path / "model")
    trainer = model_init_trainer(str(tmp_path / "model"), tokenizer, forget_data, retain_data, tmp_path)
    with pytest.raises(ValueError, match=r"needs eval_splits \['approximate'\]"):
        tune_trainer(
            trainer, {"forget": forget_data, "retain": retain_data}, SearchSpace(learning_rates=(1e-3,), max_steps=(2,))
        )


# ------------------------------------------------------------------ hf-unlearn tune


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return str(path)


@pytest.fixture
def data(tmp_path):
    """The documents the tiny model was fitted on (forget: seed 1, retain: seed 2) and unseen ones (seed 3)."""
    return {
        "forget": write_jsonl(tmp_path / "forget.jsonl", make_documents(8, seed=1)),
        "retain": write_jsonl(tmp_path / "retain.jsonl", make_documents(12, seed=2)),
        "approximate": write_jsonl(tmp_path / "approx.jsonl", make_documents(8, seed=3)),
    }


def tune_argv(model, data, tmp_path, *extra):
    return [
        "tune",
        "--model_name_or_path",
        model,
        "--method",
        "ga",
        "--forget_data",
        data["forget"],
        "--retain_data",
        data["retain"],
        "--approximate_data",
        data["approximate"],
        "--max_length",
        "32",
        "--per_device_train_batch_size",
        "4",
        "--lr_scheduler_type",
        "constant",
        "--warmup_steps",
        "0",
        "--output_dir",
        str(tmp_path / "run"),
        "--use_cpu",
        "true",
        "--report_to",
        "none",
        "--eval_every_steps",
        "1",
        "--mia_attacks",
        ",".join(ATTACKS),
        "--mia_resamples",
        "100",
        "--tune_learning_rates",
        "1e-4,1e-2",
        "--tune_max_steps",
        "8",
        "--tune_sampler",
        "grid",
        "--tune_trials",
        "2",
        *extra,
    ]


@pytest.mark.slow
def test_cli_writes_a_chosen_yaml_that_hf_unlearn_train_runs_as_is(trained_model_dir, data, tmp_path, capsys):
    """`hf-unlearn tune` exits 0 with chosen.yaml, trials.json and trials.png; `hf-unlearn train --config
    chosen.yaml` reruns the chosen trial: it stops at the same step, by the worst-case rule, with the same strongest
    attack interval. The YAML holds no forget text and no statistic of the forget set."""
    import yaml

    from hf_unlearn import cli
    from hf_unlearn.scripts.unlearn import main as train_main

    assert cli.main(tune_argv(trained_model_dir, data, tmp_path, "--tune_retain_tolerance", "100")) == 0
    folder = tmp_path / "run_tune"
    assert sorted(p.name for p in folder.iterdir()) == ["chosen.yaml", "trials.json", "trials.png"]
    report = json.loads((folder / "trials.json").read_text())
    chosen = report["trials"][report["chosen_trial"]]
    assert chosen["status"] == MET
    text = (folder / "chosen.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["learning_rate"] == chosen["params"]["learning_rate"] and config["stopping_rule"] == "worst_case"
    assert config["max_steps"] == 8 and config["max_retain_nll_increase"] == 100.0
    forget_text = make_documents(8, seed=1)
    assert not any(doc[:40] in text for doc in forget_text)
    assert f"{chosen['nll']['forget']:.3f}" not in text and f"{chosen['strongest']['auc']:.3f}" not in text
    assert "chosen config:" in capsys.readouterr().out

    run = train_main(["--config", str(folder / "chosen.yaml")])
    assert run["after"].step == chosen["step"] and run["stop_reason"].startswith("target reached (every attack)")
    strongest = run["after"].attacks[chosen["strongest"]["attack"]]
    assert strongest["auc_low"] == pytest.approx(chosen["strongest"]["auc_low"])


@pytest.mark.slow
def test_cli_says_so_when_no_setting_meets_the_criterion(trained_model_dir, data, tmp_path, capsys):
    """With the retain NLL held within 10 percent, neither learning rate forgets this tiny model's forget set without
    damaging its retain set (the same language): exit status 3, the report and advice, no chosen.yaml."""
    from hf_unlearn import cli

    assert cli.main(tune_argv(trained_model_dir, data, tmp_path, "--tune_retain_tolerance", "0.1")) == 3
    out = capsys.readouterr().out
    assert "no setting in the search space met the criterion (2 trials)" in out
    folder = tmp_path / "run_tune"
    assert sorted(p.name for p in folder.iterdir()) == ["trials.json", "trials.png"]


@pytest.mark.parametrize(
    "change, message",
    [
        (("--approximate_data", None), "needs approximate_data"),
        (("--tune_trials", "0"), "at least 1 trial"),
        (("--tune_learning_rates", "1e-3:1e-5"), "is empty"),
        (("--tune_max_steps", ","), "no max_steps"),
        (("--tune_methods", "ga,nope"), "nope"),
        (("--tune_on", "holdout"), "--tune_on 'holdout' is unknown"),
        (("--tune_on", "unseen"), "--tune_on unseen needs unseen_data"),
    ],
)
def test_cli_bad_input_is_one_line_and_loads_nothing(data, tmp_path, capsys, monkeypatch, change, message):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_unlearn import cli

    for cls in (AutoModelForCausalLM, AutoTokenizer):
        monkeypatch.setattr(cls, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("loaded before the error")))
    argv = tune_argv(str(tmp_path / "model"), data, tmp_path)
    flag, value = change
    index = argv.index(flag) if flag in argv else len(argv)
    argv[index : index + 2] = [] if value is None else [flag, value]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("hf-unlearn tune: error:")
    assert not (tmp_path / "run_tune").exists()


def test_selection_splits_choose_the_non_members():
    """auto: the unseen split when there is one (then it stands in the approximate split's place, so the attacks
    compare forget with it), else the approximate split; approximate / unseen force the choice."""
    from hf_unlearn.scripts.tune import selection_splits

    splits = {"forget": "F", "approximate": "A", "retain": "R"}
    assert selection_splits(splits, "U", "auto") == ({"forget": "F", "approximate": "U", "retain": "R"}, "unseen")
    assert selection_splits(splits, None, "auto") == (splits, "approximate")
    assert selection_splits(splits, "U", "approximate") == (splits, "approximate")
    assert selection_splits(splits, "U", "unseen")[1] == "unseen"
    with pytest.raises(ValueError, match="needs unseen_data"):
        selection_splits(splits, None, "unseen")


@pytest.mark.slow
def test_cli_selects_on_unseen_data_when_given(trained_model_dir, data, tmp_path, capsys):
    """With unseen_data the trials are scored against it, not against approximate_data (which the chosen run's own
    verdict scores): approximate_data here is the forget set itself, so scoring against it would put every attack
    at AUC 0.5 from the start; against the unseen documents the untouched model's strongest attack is above 0.5.
    The chosen YAML stops at the chosen step (stop_at_step), so the rerun's own evaluation (here on other unseen
    documents) decides nothing: it stops there by that rule."""
    import yaml

    from hf_unlearn import cli
    from hf_unlearn.scripts.unlearn import main as train_main

    unseen = write_jsonl(tmp_path / "unseen.jsonl", make_documents(8, seed=4))
    argv = tune_argv(trained_model_dir, data, tmp_path, "--unseen_data", unseen, "--tune_retain_tolerance", "100")
    argv[argv.index("--approximate_data") + 1] = data["forget"]
    argv[argv.index("--tune_trials") + 1] = "1"
    argv[argv.index("--tune_learning_rates") + 1] = "1e-2"
    assert cli.main(argv) == 0
    assert "forget vs the unseen split" in capsys.readouterr().out
    folder = tmp_path / "run_tune"
    report = json.loads((folder / "trials.json").read_text())
    assert report["criterion"]["non_members"] == "unseen"
    trial = report["trials"][0]
    assert trial["trajectory"][0]["step"] == 0 and trial["trajectory"][0]["auc"] > 0.6  # identical sets: 0.5
    assert trial["status"] == MET and trial["step"] >= 1
    config = yaml.safe_load((folder / "chosen.yaml").read_text())
    assert config["stop_at_step"] == trial["step"]

    other = write_jsonl(tmp_path / "other.jsonl", make_documents(8, seed=5))
    run = train_main(["--config", str(folder / "chosen.yaml"), "--approximate_data", other])
    assert run["after"].step == trial["step"] and run["stop_reason"].startswith("fixed step reached")


def test_cli_help_lists_the_tuning_and_the_training_options(capsys):
    from hf_unlearn import cli

    assert cli.main(["tune", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--tune_learning_rates" in out and "--tune_timeout" in out and "--learning_rate" in out
