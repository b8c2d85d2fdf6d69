"""The scripts fail safe: errors about forget data quote none of it (with and without `--debug`), an output
folder never deletes an input, a destroyed model never ships with exit 0, and `--debug` keeps the exit status.

Each run is a tiny Llama on a few JSONL documents, stopped before training where the error is about the input.
"""

from __future__ import annotations

import json

import pytest

from tests._support import SECRET_KEY, argv, no_model_loading, write_jsonl
from tests.conftest import make_documents


def unlearn(args):
    from hf_unlearn.scripts.unlearn import main

    return main(args)


def evaluate(args):
    from hf_unlearn.scripts.evaluate import main

    return main(args)


def eval_argv(model, forget, output_dir):
    return [
        "--model_name_or_path",
        model,
        "--forget_data",
        forget,
        "--output_dir",
        str(output_dir),
        "--max_length",
        "32",
    ]


def bad_forget_sources(tmp_path):
    key_is_text = tmp_path / "forget.jsonl"
    key_is_text.write_text(json.dumps({SECRET_KEY: 1}) + "\n")
    return {"a key that is the text": str(key_is_text), "pasted text": SECRET_KEY}


@pytest.mark.parametrize("script", ["train", "eval"])
@pytest.mark.parametrize("source", ["a key that is the text", "pasted text"])
def test_errors_about_forget_data_quote_none_of_it(
    script, source, trained_model_dir, data, tmp_path, capfd, monkeypatch
):
    """Without `--debug`: one line, exit 2, naming the file and line (or the length of what was passed);
    with `--debug`: the traceback, its chained causes included, holds none of it either."""
    no_model_loading(monkeypatch)
    forget = bad_forget_sources(tmp_path)[source]
    if script == "train":
        run, args = unlearn, argv(trained_model_dir, {**data, "forget": forget}, tmp_path / "out")
    else:
        run, args = evaluate, eval_argv(trained_model_dir, forget, tmp_path / "eval")
    with pytest.raises(SystemExit) as exit_info:
        run(args)
    err = capfd.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert ("line 1 of" in err) if source == "a key that is the text" else ("33 characters, not shown" in err)
    with pytest.raises(SystemExit) as debug_info:
        run(args + ["--debug"])
    shown = "".join(capfd.readouterr())
    assert debug_info.value.code == 2 and "Traceback" in shown
    for text in (err, shown):
        assert "48213077" not in text and "vault" not in text, text


# ------------------------------------------------------------------ an output folder never deletes an input


@pytest.mark.parametrize(
    "where", ["the model folder", "a link to the model folder", "the data's folder", "inside the model folder"]
)
def test_overwrite_output_dir_never_deletes_an_input(where, trained_model_dir, tmp_path, capfd, monkeypatch):
    """`--overwrite_output_dir true` with an output folder that is, contains or lies inside an input: exit 2, one
    line naming the value and the fix, and every input file still there."""
    import os
    import shutil

    no_model_loading(monkeypatch)
    model = str(tmp_path / "model")
    shutil.copytree(trained_model_dir, model)
    folder = tmp_path / "data"
    folder.mkdir()
    data = {
        name: write_jsonl(folder / f"{name}.jsonl", make_documents(4, seed=seed))
        for seed, name in enumerate(("forget", "retain", "approximate"))
    }
    if where == "a link to the model folder":
        os.symlink(model, tmp_path / "link")
    output = {
        "the model folder": model,
        "a link to the model folder": str(tmp_path / "link"),
        "the data's folder": str(folder),
        "inside the model folder": os.path.join(model, "out"),
    }[where]
    before = {
        path: open(path, "rb").read()
        for root in (model, str(folder))
        for path in (os.path.join(r, n) for r, _, names in os.walk(root) for n in names)
    }
    with pytest.raises(SystemExit) as exit_info:
        unlearn(argv(model, data, output, "--overwrite_output_dir", "true"))
    err = capfd.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert repr(output) in err and "choose an --output_dir outside every input folder" in err
    assert all(os.path.isfile(path) and open(path, "rb").read() == content for path, content in before.items())


@pytest.mark.parametrize("broken", ["model", "forget data"])
def test_a_run_that_fails_to_load_leaves_an_overwritable_folder_as_it_was(
    broken, trained_model_dir, data, tmp_path, capfd
):
    """`--overwrite_output_dir true` on a folder holding an earlier result, and a model path or forget file that
    does not exist: exit 2 with one line, and the earlier result is still there (the folder is emptied only right
    before training, once everything loaded)."""
    earlier = tmp_path / "earlier_result"
    earlier.mkdir()
    (earlier / "model.safetensors").write_bytes(b"an earlier run's weights")
    missing = str(tmp_path / "does_not_exist")
    model = missing if broken == "model" else trained_model_dir
    files = dict(data, forget=missing) if broken == "forget data" else data
    with pytest.raises(SystemExit) as exit_info:
        unlearn(argv(model, files, str(earlier), "--overwrite_output_dir", "true"))
    err = capfd.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert (earlier / "model.safetensors").read_bytes() == b"an earlier run's weights"


def test_overwrite_output_dir_replaces_an_earlier_result(trained_model_dir, data, tmp_path):
    """The same folder with everything valid: the run empties it before training and saves its own model."""
    earlier = tmp_path / "earlier_result"
    earlier.mkdir()
    (earlier / "stale.txt").write_text("an earlier run's file")
    unlearn(argv(trained_model_dir, data, str(earlier), "--overwrite_output_dir", "true"))
    assert not (earlier / "stale.txt").exists() and (earlier / "model.safetensors").is_file()


def test_debug_shows_the_traceback_and_keeps_exit_3(trained_model_dir, data, tmp_path, capfd):
    """A blow-up (lr 1.0, as in test_scripts_unlearn) under `--debug`: the traceback, then exit 3 (not 1)."""
    with pytest.raises(SystemExit) as exit_info:
        unlearn(
            argv(
                trained_model_dir,
                data,
                tmp_path / "out",
                "--learning_rate",
                "1.0",
                "--max_steps",
                "6",
                "--stop_at_unseen_nll",
                "false",
                "--debug",
                method="ga",
            )
        )
    err = capfd.readouterr().err
    assert exit_info.value.code == 3 and "Traceback" in err and "BlowUp" in err


# ------------------------------------------------------------------ a destroyed model is a blow-up


def record(step, forget, approximate=5.15, retain=None):
    from hf_unlearn.callbacks import EvalRecord

    nll = {"forget": forget, "approximate": approximate}
    if retain is not None:
        nll["retain"] = retain
    return EvalRecord(step=step, nll=nll)


def test_overshooting_the_target_by_far_is_a_blow_up_not_a_target_reached():
    """The measured GA run at lr 10 without retain data: start forget 1.86 / unseen 5.15 (the target); step 1
    forget 2,394 > 10 x 5.15 = 51.5: a blow-up, and not best. Forget 6.0 (1.17 x target) is a target reached."""
    from hf_unlearn.callbacks import StoppingCriteria

    criteria, start = StoppingCriteria(), record(0, 1.86)
    destroyed = record(1, 2394.0)
    assert criteria.stop_reason(destroyed, start, 5.15).startswith("blow-up: forget NLL 2394.0000 > 10.0 x 5.1500")
    assert not criteria.is_better(destroyed, None, start, 5.15)
    assert criteria.stop_reason(record(1, 6.0), start, 5.15).startswith("target reached")
    assert criteria.is_better(record(1, 6.0), None, start, 5.15)


def test_a_non_finite_auc_of_an_earlier_forget_set_is_a_blow_up():
    """An earlier request's attack AUC of nan (its scores diverged) stops the run as a blow-up, naming it."""
    from hf_unlearn.callbacks import StoppingCriteria

    criteria, start = StoppingCriteria(stop_at_target=False), record(0, 1.86)
    later = record(3, 2.0)
    later.earlier_attacks = {"earlier_1": {"loss": {"auc": float("nan"), "auc_low": 0.0, "auc_high": 1.0}}}
    assert criteria.stop_reason(later, start, None) == "blow-up: non-finite values at step 3 (earlier_1 loss AUC nan)"


def test_the_unseen_nll_exploding_is_a_blow_up():
    """Unseen NLL 34,167 against 5.15 at the start (> 10 x 5.15 = 51.5) with the target rule off; 30.0 is within."""
    from hf_unlearn.callbacks import StoppingCriteria

    criteria, start = StoppingCriteria(stop_at_target=False), record(0, 1.86)
    assert criteria.stop_reason(record(3, 35815.0, approximate=34167.0), start, None).startswith(
        "blow-up: approximate (unseen) NLL 34167.0000 > 10.0 x its start 5.1500"
    )
    assert criteria.stop_reason(record(3, 4.0, approximate=30.0), start, None) is None


def test_the_relative_retain_guard_has_an_absolute_floor():
    """A memorised retain set: 0.0059 -> 0.0090 is +0.0031 nats, over +50% (0.00885) but under the 0.05-nat floor
    (limit max(1.5 x 0.0059, 0.0059 + 0.05) = 0.0559): no blow-up; 0.06 is over it. A large retain NLL keeps the
    relative limit: 2.0 -> 3.1 > 1.5 x 2.0 = 3.0."""
    from hf_unlearn.callbacks import StoppingCriteria

    criteria = StoppingCriteria(stop_at_target=False, max_retain_nll_increase=0.5)
    start = record(0, 1.0, retain=0.0059)
    assert criteria.retain_limit(start) == pytest.approx(0.0559)
    assert criteria.failure(record(1, 1.1, retain=0.0090), start) is None
    assert criteria.failure(record(1, 1.1, retain=0.06), start).startswith("blow-up: retain NLL")
    assert criteria.failure(record(1, 1.1, retain=3.1), record(0, 1.0, retain=2.0)).startswith("blow-up: retain NLL")


# ------------------------------------------------------------------ resuming after a crash during a checkpoint write


def test_resume_skips_incomplete_checkpoints_with_a_warning(tmp_path):
    """checkpoint-3 lacks trainer_state.json, checkpoint-2's optimizer.pt is cut in half: checkpoint-1 is resumed."""
    import torch

    from hf_unlearn.scripts.unlearn import last_complete_checkpoint

    for step in (1, 2, 3):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        torch.save({"state": torch.zeros(64)}, folder / "optimizer.pt")
        if step < 3:
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    whole = (tmp_path / "checkpoint-2" / "optimizer.pt").read_bytes()
    (tmp_path / "checkpoint-2" / "optimizer.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.warns(UserWarning) as caught:
        assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-1")
    messages = [str(w.message) for w in caught]
    assert any("checkpoint-3" in m and "trainer_state.json" in m for m in messages)
    assert any("checkpoint-2" in m and "optimizer.pt is incomplete" in m for m in messages)
