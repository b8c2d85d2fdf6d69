"""Earlier forget sets (`hf_unlearn.earlier`): evaluated alongside the new one, a return is reported and stops.

Each run is a tiny Llama on a few JSONL documents (seconds).
"""

from __future__ import annotations

import pytest

from tests._support import recipe_argv, write_jsonl
from tests.conftest import make_documents


def record(step, nll, attacks=None):
    from hf_unlearn.callbacks import EvalRecord

    return EvalRecord(step=step, nll=nll, earlier_attacks=attacks)


def interval(low, high):
    return {"loss": {"auc": (low + high) / 2, "auc_low": low, "auc_high": high}}


def test_the_return_rule_at_its_thresholds():
    """5% below the start NLL 4.0 is 3.8: 3.81 stays forgotten, 3.79 came back; an attack interval above 0.5
    that was not at the start came back, one that already was does not count again."""
    from hf_unlearn.earlier import earlier_return

    start = record(0, {"forget": 3.0, "earlier_forget_1": 4.0}, {"earlier_forget_1": interval(0.4, 0.6)})
    assert earlier_return(record(1, {"forget": 3.0, "earlier_forget_1": 3.81}), start, 0.05) is None
    reason = earlier_return(record(1, {"forget": 3.0, "earlier_forget_1": 3.79}), start, 0.05)
    assert reason.startswith("earlier forget set 1 came back: its NLL fell more than 5%")
    assert earlier_return(record(1, {"earlier_forget_1": 3.79}), start, None) is None
    separated = record(1, {"earlier_forget_1": 4.0}, {"earlier_forget_1": interval(0.55, 0.8)})
    assert "loss attack separates it" in earlier_return(separated, start, 0.05)
    already = record(0, {"earlier_forget_1": 4.0}, {"earlier_forget_1": interval(0.55, 0.8)})
    assert earlier_return(separated, already, 0.05) is None
    # Numbers of the earlier set never reach the card: its metrics are forget-side.
    from hf_unlearn.model_card import is_forget_side

    assert all(is_forget_side(name) for name in separated.logs() if "earlier" in name)


def test_a_run_that_brings_an_earlier_forget_set_back_is_reported_and_stops(trained_model_dir, tmp_path, capfd):
    """The new request descends on the earlier request's forget set (it is the retain data, retain_weight 1,
    forget_weight 0.01, lr 1e-2): within the steps its NLL falls past 5% below its start, or an attack separates it
    from unseen data again (whichever comes first), so the run stops on it, exits 3 and saves nothing."""
    from hf_unlearn.scripts.unlearn import main

    earlier = write_jsonl(tmp_path / "earlier.jsonl", make_documents(4, seed=50))
    data = {
        "forget": write_jsonl(tmp_path / "forget.jsonl", make_documents(4, seed=1)),
        "retain": earlier,
        "approximate": write_jsonl(tmp_path / "approx.jsonl", make_documents(4, seed=3)),
    }
    argv = recipe_argv(trained_model_dir, data, tmp_path / "out", "--max_steps", "12", "--learning_rate", "1e-2")
    argv += ["--lr_scheduler_type", "constant", "--warmup_steps", "0", "--forget_weight", "0.01"]
    argv += ["--stop_at_unseen_nll", "false", "--earlier_forget_data", earlier]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 3
    err = capfd.readouterr().err
    assert "unlearning stopped: earlier forget set 1 came back: " in err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_later_request_without_earlier_sets_says_once_it_cannot_check(trained_model_dir, tmp_path, capfd):
    from hf_unlearn.scripts.unlearn import main

    data = {
        "forget": write_jsonl(tmp_path / "forget.jsonl", make_documents(4, seed=1)),
        "retain": write_jsonl(tmp_path / "retain.jsonl", make_documents(4, seed=2)),
        "approximate": write_jsonl(tmp_path / "approx.jsonl", make_documents(4, seed=3)),
    }
    main(recipe_argv(trained_model_dir, data, tmp_path / "first", "--stop_at_unseen_nll", "false"))
    assert "cannot check" not in capfd.readouterr().err  # a first request has nothing earlier
    main(recipe_argv(str(tmp_path / "first"), data, tmp_path / "second", "--stop_at_unseen_nll", "false"))
    assert capfd.readouterr().err.count("cannot check that the 1 earlier request(s) stay forgotten") == 1
