"""Callbacks: the stopping rules as pure functions, then on a tiny model under gradient ascent.

Gradient ascent on a freshly initialised tiny Llama raises the forget NLL at every step (checked below, as a
precondition), so a synthetic target placed between the NLLs after steps 2 and 3 must stop training at step 3.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from hf_unlearn import get_method
from hf_unlearn.callbacks import EvalRecord, StoppingCriteria, UnlearningEvalCallback
from hf_unlearn.evaluation import mean_nll
from hf_unlearn.testing import build_llama
from tests.conftest import make_documents, unlearning_args

START = EvalRecord(step=0, nll={"forget": 2.0, "approximate": 3.0, "retain": 2.0}, mia_auc=0.8)


def record(step, forget, retain=2.0, auc=0.7):
    return EvalRecord(step=step, nll={"forget": forget, "approximate": 3.0, "retain": retain}, mia_auc=auc)


# ---------------------------------------------------------------------------- pure rules


def test_target_rule():
    """Target 3.0: 2.9 keeps going, 3.0 stops (reached means >=)."""
    criteria = StoppingCriteria()
    assert criteria.stop_reason(record(1, 2.9), START, target=3.0) is None
    assert criteria.stop_reason(record(2, 3.0), START, target=3.0).startswith("target reached: forget NLL")
    assert StoppingCriteria(stop_at_target=False).stop_reason(record(2, 3.5), START, 3.0) is None


def test_auc_rule():
    """|0.53 - 0.5| = 0.03 <= 0.05 stops; |0.6 - 0.5| = 0.1 does not."""
    criteria = StoppingCriteria(stop_at_target=False, auc_tolerance=0.05)
    assert criteria.stop_reason(record(1, 2.5, auc=0.6), START, 3.0) is None
    assert "MIA AUC 0.5300" in criteria.stop_reason(record(1, 2.5, auc=0.53), START, 3.0)


def test_blow_up_guard():
    """Retain starts at 2.0; +10% allows up to 2.2. Forget above 10 nats or a nan also stops."""
    criteria = StoppingCriteria(max_forget_nll=10.0, max_retain_nll_increase=0.1)
    assert criteria.retain_limit(START) == pytest.approx(2.2)
    assert criteria.stop_reason(record(1, 2.5, retain=2.19), START, 3.0) is None
    assert "retain NLL 2.3000 > 2.2000" in criteria.stop_reason(record(1, 2.5, retain=2.3), START, 3.0)
    assert "forget NLL 11.0000 > max_forget_nll 10.0" in criteria.stop_reason(record(1, 11.0), START, 3.0)
    assert "non-finite" in criteria.stop_reason(record(1, math.nan), START, 3.0)


def test_best_is_closest_to_target_within_limits():
    """Target 3.0, retain limit 2.2: 3.1 (retain 2.5) is out; 2.8 is the closest admissible; 3.2 is farther;
    a tie (3.2 vs 2.8 are both 0.2 away) keeps the earlier."""
    criteria = StoppingCriteria(max_retain_nll_increase=0.1)
    best = None
    for candidate in (record(1, 2.5), record(2, 2.8), record(3, 3.1, retain=2.5), record(4, 3.2)):
        if criteria.is_better(candidate, best, START, 3.0):
            best = candidate
    assert best.step == 2


def test_constructor_errors(forget_data):
    with pytest.raises(ValueError, match="'forget' split"):
        UnlearningEvalCallback({"retain": forget_data})
    with pytest.raises(ValueError, match="target_nll"):
        UnlearningEvalCallback({"forget": forget_data}, criteria=StoppingCriteria())
    with pytest.raises(ValueError, match="'retain' split"):
        criteria = StoppingCriteria(target_nll=1.0, max_retain_nll_increase=0.1)
        UnlearningEvalCallback({"forget": forget_data}, criteria=criteria)
    with pytest.raises(ValueError, match="eval_steps=0"):
        UnlearningEvalCallback({"forget": forget_data}, eval_steps=0)


# ---------------------------------------------------------------------------- on a tiny model


@pytest.fixture(scope="module")
def splits(tokenizer, forget_data, retain_data):
    from hf_unlearn import chunk_documents

    approximate = chunk_documents(make_documents(4, seed=3), tokenizer, max_length=32)
    return {"forget": forget_data.select(range(8)), "approximate": approximate, "retain": retain_data.select(range(8))}


def unlearn(tokenizer, splits, tmp_path, callback, attach=True, **overrides):
    """Gradient ascent on a fresh tiny Llama (seed 0), 8 forget chunks, global batch 4."""
    values = dict(max_steps=6, learning_rate=1e-2, per_device_train_batch_size=4)
    values.update(overrides)
    model = build_llama(len(tokenizer), hidden_size=32, layers=2, heads=2, seed=0)
    trainer = get_method("ga")(
        model=model, args=unlearning_args("ga", tmp_path, **values), train_dataset=splits["forget"],
        processing_class=tokenizer,
    )
    if attach:
        callback.attach(trainer)
    trainer.train()
    return trainer


def test_evaluation_is_logged_and_stops_at_the_expected_step(tokenizer, splits, tmp_path):
    """Run 1 (no rule) gives the forget NLL after every step; run 2 (same seed) with a target halfway between
    the NLLs after steps 2 and 3 stops at step 3, with the same numbers up to there."""
    free = UnlearningEvalCallback(splits, eval_steps=1)
    trainer = unlearn(tokenizer, splits, tmp_path / "free", free, max_steps=4)
    nll = [r.nll["forget"] for r in free.history]
    assert [r.step for r in free.history] == list(range(5))
    assert all(later > earlier for earlier, later in zip(nll, nll[1:])), f"GA should raise the forget NLL: {nll}"
    logged = [entry for entry in trainer.state.log_history if "eval_forget_nll" in entry]
    assert [entry["eval_forget_nll"] for entry in logged] == pytest.approx(nll)
    assert all("eval_mia_auc" in entry and "eval_retain_nll" in entry for entry in logged)

    target = (nll[2] + nll[3]) / 2
    stopping = UnlearningEvalCallback(splits, eval_steps=1, criteria=StoppingCriteria(target_nll=target))
    trainer = unlearn(tokenizer, splits, tmp_path / "stop", stopping, max_steps=4)
    assert trainer.state.global_step == 3
    assert stopping.stop_reason.startswith("target reached")
    assert [r.nll["forget"] for r in stopping.history] == pytest.approx(nll[:4], rel=1e-5)
    assert stopping.best.step == (3 if abs(nll[3] - target) < abs(nll[2] - target) else 2)  # closest to the target


def test_default_target_is_the_original_unseen_nll_and_eval_steps(tokenizer, splits, tmp_path):
    """Without target_nll the target is the approximate NLL of the original model (the evaluation at step 0);
    eval_steps=4 with 6 steps evaluates at 0, 4 and the last step 6."""
    callback = UnlearningEvalCallback(splits, eval_steps=4, criteria=StoppingCriteria(stop_at_target=False))
    unlearn(tokenizer, splits, tmp_path, callback)
    assert callback.target == callback.history[0].nll["approximate"]
    assert [r.step for r in callback.history] == [0, 4, 6]


def test_blow_up_guard_stops_and_saves_the_best_model(tokenizer, splits, tmp_path):
    """A retain limit of +20% stops the (retain-free) gradient ascent once the retain NLL has risen that much;
    the saved best model is the admissible evaluation closest to the target, and reloads with its forget NLL."""
    from transformers import AutoModelForCausalLM

    criteria = StoppingCriteria(target_nll=100.0, max_retain_nll_increase=0.2)
    callback = UnlearningEvalCallback(splits, eval_steps=1, criteria=criteria, save_best=True)
    trainer = unlearn(tokenizer, splits, tmp_path, callback, max_steps=30, learning_rate=3e-2)
    assert callback.stop_reason.startswith("blow-up: retain NLL"), callback.stop_reason
    assert trainer.state.global_step < 30
    limit = 1.2 * callback.history[0].nll["retain"]
    admissible = [r for r in callback.history if r.nll["retain"] <= limit]
    expected = min(admissible, key=lambda r: abs(r.nll["forget"] - 100.0))
    assert callback.best.step == expected.step and expected.step < trainer.state.global_step
    best_dir = os.path.join(trainer.args.output_dir, "best")
    selection = json.load(open(os.path.join(best_dir, "selection.json")))
    assert selection["step"] == expected.step and "closest forget NLL to the target" in selection["criterion"]
    reloaded = AutoModelForCausalLM.from_pretrained(best_dir)
    assert mean_nll(reloaded, splits["forget"]) == pytest.approx(expected.nll["forget"], rel=1e-5)


def test_unattached_callback_explains_the_fix(tokenizer, splits, tmp_path):
    callback = UnlearningEvalCallback(splits, eval_steps=1)
    model = build_llama(len(tokenizer), hidden_size=32, layers=2, heads=2)
    trainer = get_method("ga")(
        model=model, args=unlearning_args("ga", tmp_path), train_dataset=splits["forget"], callbacks=[callback]
    )
    with pytest.raises(RuntimeError, match=r"callback.attach\(trainer\)"):
        trainer.train()
