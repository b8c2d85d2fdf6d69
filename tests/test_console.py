"""The console during unlearning: one compact line per evaluation, while every number still reaches the logs."""

import pytest

from hf_unlearn import GradientAscentTrainer
from hf_unlearn.callbacks import EvalRecord, StoppingCriteria, UnlearningEvalCallback, available_attacks, console_line
from tests.conftest import unlearning_args


def test_console_line_names_each_split_the_loss_and_the_strongest_attack():
    record = EvalRecord(
        step=10,
        nll={"forget": 3.2141, "approximate": 3.4019, "retain": 2.9512},
        mia_auc=0.62,
        attacks={
            "loss": {"auc": 0.62, "auc_low": 0.43, "auc_high": 0.80},
            "min_k_20": {"auc": 0.40, "auc_low": 0.22, "auc_high": 0.58},
            "min_k_plus_plus_20": {"auc": 0.71, "auc_low": 0.53, "auc_high": 0.87},
        },
    )
    assert console_line(record) == (
        "eval step 10: NLL forget 3.214 | unseen 3.402 | retain 2.951 | LOSS AUC 0.620 [0.430, 0.800] | "
        "strongest min_k_plus_plus_20 AUC 0.710 [0.530, 0.870]"
    )
    plain = EvalRecord(step=0, nll={"forget": 3.0, "approximate": 3.5}, mia_auc=0.7)
    assert (
        console_line(plain, target=3.5)
        == "eval step 0: NLL forget 3.000 | unseen 3.500 | target forget NLL 3.500 | LOSS AUC 0.700"
    )


@pytest.mark.parametrize("disable_tqdm", [False, True])  # ProgressCallback, PrinterCallback
def test_each_evaluation_prints_one_line_and_logs_every_key(
    disable_tqdm, tiny_model, tokenizer, forget_data, retain_data, tmp_path, capsys
):
    """Evaluations at steps 0, 1, 2 with all 21 attacks: three console lines, none of the 63 attack keys printed;
    `log_history` holds every key of every evaluation."""
    args = unlearning_args("ga", tmp_path, max_steps=2, logging_steps=1, disable_tqdm=disable_tqdm)
    trainer = GradientAscentTrainer(model=tiny_model, args=args, train_dataset=forget_data, processing_class=tokenizer)
    splits = {"forget": forget_data, "approximate": retain_data, "retain": retain_data}
    callback = UnlearningEvalCallback(
        splits, eval_steps=1, attacks="all", n_resamples=20, criteria=StoppingCriteria(stop_at_target=False)
    ).attach(trainer)
    trainer.train()
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "eval step" in line]
    assert [line.split(":")[0].split("eval step ")[-1] for line in lines] == ["0", "1", "2"]
    assert lines[0].endswith(console_line(callback.history[0], callback.target))
    assert "eval_mia_auc" not in out and "eval_forget_nll" not in out
    assert "'loss':" in out  # the training logs are still printed
    logged = [entry for entry in trainer.state.log_history if "eval_forget_nll" in entry]
    assert len(logged) == 3
    assert all(
        len([key for key in entry if key.startswith("eval_mia_auc_")]) == 3 * len(available_attacks())
        for entry in logged
    )
