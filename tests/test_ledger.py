"""The request ledger (`hf_unlearn.ledger`): chained runs continue one history, with the original target.

Each run is a tiny Llama on a few JSONL documents (seconds).
"""

from __future__ import annotations

import json

import pytest

from tests._support import read_json, recipe_argv, write_jsonl
from tests.conftest import make_documents


def request_data(tmp_path, index):
    """A request's own forget set, with shared retain and unseen data."""
    return {
        "forget": write_jsonl(tmp_path / f"forget{index}.jsonl", make_documents(3, seed=100 + index)),
        "retain": write_jsonl(tmp_path / "retain.jsonl", make_documents(4, seed=2)),
        "approximate": write_jsonl(tmp_path / "approx.jsonl", make_documents(4, seed=3)),
    }


STEPS = ["--learning_rate", "3e-3", "--lr_scheduler_type", "constant", "--warmup_steps", "0"]


def test_three_chained_runs_give_three_requests_a_manifest_chain_and_the_original_target(trained_model_dir, tmp_path):
    """Request 1 unlearns the trained model, requests 2 and 3 the output of the one before. The last folder's
    card lists three requests, its ledger holds three manifests chained by SHA-256, and every request stopped on
    the unseen NLL measured on the original model (request 1's start), not on the partly unlearned model's."""
    from hf_unlearn.ledger import MEASURED, check_chain
    from hf_unlearn.manifest import manifest_digest
    from hf_unlearn.scripts.unlearn import main

    model = trained_model_dir
    starts = []
    for index in (1, 2, 3):
        output = tmp_path / f"request{index}"
        main(recipe_argv(model, request_data(tmp_path, index), output, *STEPS))
        starts.append(read_json(output / "unlearning_start.json"))
        model = str(output)
    original = starts[0]["nll"]["approximate"]  # measured on the original model
    assert [start["target_nll"] for start in starts] == [original] * 3
    # The partly unlearned models' own unseen NLL differs: taking it would have moved the target.
    assert starts[1]["nll"]["approximate"] != original and starts[2]["nll"]["approximate"] != original

    last = tmp_path / "request3"
    ledger = read_json(last / "unlearning_ledger.json")
    assert ledger["original_unseen_nll"] == original and ledger["original_unseen_nll_source"] == MEASURED
    assert [request["request"] for request in ledger["requests"]] == [1, 2, 3]
    assert check_chain(ledger) == []
    manifests = ledger["manifests"]
    assert manifests[-1] == read_json(last / "unlearning_manifest.json")
    assert manifests[0]["previous_manifest_sha256"] is None
    for before, after in zip(manifests, manifests[1:]):
        assert after["previous_manifest_sha256"] == manifest_digest(before)
    assert [m["request"] for m in manifests] == [1, 2, 3]
    # Each request's counts are its own forget set's.
    assert all(request["forget_examples"] >= 3 and request["method"] == "ga_descent" for request in ledger["requests"])
    card = (last / "README.md").read_text()
    assert "This model went through 3 unlearning request(s)" in card
    rows = [line for line in card.splitlines() if line.startswith(("| 1 |", "| 2 |", "| 3 |"))]
    assert len(rows) == 3 and all("ga_descent" in row for row in rows)
    assert "unlearning_ledger.json" in card and "unlearning_manifest.json" in card


def test_a_broken_chain_is_named():
    from hf_unlearn.ledger import History, check_chain, next_ledger

    first = {"created": "2026-01-01T00:00:00+00:00", "config": {}, "request": 1, "previous_manifest_sha256": None}
    ledger = next_ledger(History(), first, 3.0, "given")
    second = {**first, "request": 2, "previous_manifest_sha256": ledger["requests"][0]["manifest_sha256"]}
    ledger = next_ledger(History(ledger=ledger, manifest=first, **_lists(ledger)), second, 3.0, "given")
    assert check_chain(ledger) == []
    ledger["manifests"][0]["config"]["learning_rate"] = 1.0  # an edited earlier manifest
    assert check_chain(ledger) == [
        "request 1: its manifest_sha256 is not its manifest's digest",
        "request 2: previous_manifest_sha256 is not request 1's digest",
    ]


def _lists(ledger):
    return {"requests": ledger["requests"], "manifests": ledger["manifests"]}


def test_the_original_target_given_by_the_user_is_used_and_recorded(trained_model_dir, tmp_path):
    """A model without an hf_unlearn ledger: `--original_unseen_nll` is the stopping target and goes into the
    ledger as given."""
    from hf_unlearn.ledger import GIVEN
    from hf_unlearn.scripts.unlearn import main

    output = tmp_path / "out"
    main(recipe_argv(trained_model_dir, request_data(tmp_path, 1), output, *STEPS, "--original_unseen_nll", "4.25"))
    assert read_json(output / "unlearning_start.json")["target_nll"] == 4.25
    ledger = read_json(output / "unlearning_ledger.json")
    assert (ledger["original_unseen_nll"], ledger["original_unseen_nll_source"]) == (4.25, GIVEN)
    assert "4.25 (given by the user" in (output / "README.md").read_text()


def test_the_history_of_a_hub_model_is_read_from_its_repository(tmp_path, monkeypatch):
    from hf_unlearn import ledger as ledger_module

    manifest = {"created": "2026-01-01T00:00:00+00:00", "config": {"learning_rate": 1e-5}, "request": 1}
    stored = ledger_module.next_ledger(ledger_module.History(), manifest, 3.5, ledger_module.MEASURED)
    files = {"unlearning_ledger.json": stored, "unlearning_manifest.json": manifest}
    for name, values in files.items():
        (tmp_path / name).write_text(json.dumps(values))
    asked = []

    def hub_file(repo_id, name, revision):
        asked.append((repo_id, name, revision))
        return str(tmp_path / name)

    monkeypatch.setattr(ledger_module, "_hub_file", hub_file)
    history = ledger_module.read_history("me/unlearned", "abc123")
    assert history.next_request == 2 and history.original_unseen_nll == 3.5
    assert history.previous_digest == stored["requests"][0]["manifest_sha256"]
    assert {(repo, revision) for repo, _, revision in asked} == {("me/unlearned", "abc123")}


def test_a_folder_without_history_is_a_first_request(trained_model_dir, tmp_path):
    from hf_unlearn.ledger import read_history

    assert read_history(trained_model_dir).next_request == 1
    assert read_history(str(tmp_path / "missing")).next_request == 1
    assert read_history(None).next_request == 1


@pytest.mark.parametrize(
    "given, kept, measured, expected",
    [
        (4.0, 3.0, 5.0, 4.0),  # the user's number wins
        (None, 3.0, 5.0, 3.0),  # the ledger's, not this run's start
        (None, None, 5.0, 5.0),  # a first request: measured now
    ],
)
def test_original_target_precedence(given, kept, measured, expected):
    from hf_unlearn.ledger import History, original_target

    history = History(ledger={"original_unseen_nll": kept, "original_unseen_nll_source": "x"} if kept else None)
    assert original_target(history, given, measured)[0] == expected


def test_a_later_request_without_a_known_target_measures_none():
    from hf_unlearn.ledger import History, original_target

    history = History(ledger={"original_unseen_nll": None}, requests=[{"request": 1}])
    assert original_target(history, None, 5.0) == (None, None)


def test_a_hub_model_s_repository_is_asked_at_the_first_save_not_at_construction(
    trained_model_dir, tokenizer, tmp_path, monkeypatch
):
    """Building a trainer (a tuning trial builds one per trial) sends no request to the Hub; saving reads the
    history once."""
    from transformers import AutoModelForCausalLM

    from hf_unlearn import GradientAscentTrainer, UnlearningConfig, build_qa_dataset
    from hf_unlearn import ledger as ledger_module

    asked = []
    monkeypatch.setattr(ledger_module, "_hub_file", lambda repo, name, revision: asked.append(repo))
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    model.name_or_path = model.config._name_or_path = "someone/original-model"  # as if loaded from the Hub
    records = [{"question": f"What is item {i}?", "answer": f"Item {i} is small."} for i in range(2)]
    args = UnlearningConfig(output_dir=str(tmp_path / "out"), max_steps=1, report_to="none", use_cpu=True)
    trainer = GradientAscentTrainer(
        model=model, args=args, train_dataset=build_qa_dataset(records, tokenizer), processing_class=tokenizer
    )
    assert asked == []
    trainer.save_model(str(tmp_path / "saved"))
    assert set(asked) == {"someone/original-model"} and len(asked) == 2  # the ledger and the manifest, once
