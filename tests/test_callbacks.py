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
    criteria = StoppingCriteria(stop_at_target=False, loss_auc_tolerance=0.05)
    assert criteria.stop_reason(record(1, 2.5, auc=0.6), START, 3.0) is None
    assert "(LOSS attack only): MIA AUC 0.5300" in criteria.stop_reason(record(1, 2.5, auc=0.53), START, 3.0)


def test_fixed_step_rule():
    """stop_at_step 2: the target (3.0, reached at step 1 with 3.5) does not stop step 1, step 2 stops whatever the
    forget NLL; the retain guard (2.2 allowed) still stops step 1 at 2.3; 0 is refused."""
    criteria = StoppingCriteria(stop_at_step=2, max_retain_nll_increase=0.1)
    assert criteria.stop_reason(record(1, 3.5), START, target=3.0) is None
    assert criteria.stop_reason(record(2, 2.1), START, target=3.0) == "fixed step reached: step 2 (stop_at_step 2)"
    assert criteria.stop_reason(record(1, 2.5, retain=2.3), START, 3.0).startswith("blow-up")
    with pytest.raises(ValueError, match="stop_at_step=0 must be at least 1"):
        StoppingCriteria(stop_at_step=0)


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
        model=model,
        args=unlearning_args("ga", tmp_path, **values),
        train_dataset=splits["forget"],
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
    admissible = [r for r in callback.history[1:] if r.nll["retain"] <= limit]  # the start is never best
    expected = min(admissible, key=lambda r: abs(r.nll["forget"] - 100.0))
    assert callback.best.step == expected.step and expected.step < trainer.state.global_step
    best_dir = os.path.join(trainer.args.output_dir, "best")
    selection = json.load(open(os.path.join(best_dir, "selection.json")))
    assert selection["step"] == expected.step and selection["criterion"] == "closest_forget_nll_to_target"
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


# ---------------------------------------------------------------------------- regressions


def test_eval_every_step_keeps_the_training_logs(tokenizer, splits, tmp_path):
    """logging_steps=1 and eval_steps=1 over 4 steps. The trainer's own log of every step (loss,
    forget_loss, grad_norm, learning_rate) must survive the callback's evaluation log of the same step: 4
    training entries (steps 1-4) and 5 evaluation entries (steps 0-4, the start included)."""
    callback = UnlearningEvalCallback(splits, eval_steps=1)
    trainer = unlearn(tokenizer, splits, tmp_path, callback, max_steps=4)
    training = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in training] == [1, 2, 3, 4]
    for entry in training:
        assert {"forget_loss", "grad_norm", "learning_rate"} <= set(entry), entry
    evaluations = [entry for entry in trainer.state.log_history if "eval_forget_nll" in entry]
    assert [entry["step"] for entry in evaluations] == [0, 1, 2, 3, 4]


def toy_examples(count: int) -> list[dict]:
    """`count` distinct one-target examples; example i has input_ids [i + 1, i + 2] so it can be recognised."""
    return [{"input_ids": [i + 1, i + 2], "attention_mask": [1, 1], "labels": [i + 1, i + 2]} for i in range(count)]


def test_max_examples_is_a_seeded_random_sample():
    """`max_examples` draws a seeded sample, not the first N examples (a few documents).

    40 examples, 8 kept: the kept ones are not examples 0-7, are 8 distinct examples, the same for the same seed
    (every process must evaluate the same sample) and different for another seed."""
    data = toy_examples(40)

    def kept(seed):
        callback = UnlearningEvalCallback({"forget": data}, max_examples=8, seed=seed)
        return [example["input_ids"][0] - 1 for example in callback.splits["forget"]]

    first = kept(0)
    assert len(set(first)) == 8 and all(0 <= i < 40 for i in first)
    assert sorted(first) != list(range(8)), "max_examples must not take the head of the split"
    assert kept(0) == first
    assert kept(1) != first
    assert len(UnlearningEvalCallback({"forget": data}, max_examples=100).splits["forget"]) == 40


def test_seeded_sample_is_uniform():
    """Each of 40 indices is kept with probability 8/40 = 0.2: over 2000 seeds its count is Binomial(2000, 0.2),
    mean 400, standard deviation sqrt(2000 x 0.2 x 0.8) = 17.9; 5 standard deviations (+-90) is a bound a
    uniform sampler misses with probability ~1e-5 per index, while the head-of-split rule (counts 2000 / 0)
    or a sampler biased to early examples fails it."""
    import numpy as np

    from hf_unlearn.callbacks import sample_indices

    counts = np.zeros(40, dtype=int)
    for seed in range(2000):
        indices = sample_indices(40, 8, seed)
        assert len(indices) == 8 and len(set(indices)) == 8
        counts[indices] += 1
    assert np.abs(counts - 400).max() <= 90, counts
    with pytest.raises(ValueError, match="max_examples=0"):
        sample_indices(40, 0, 0)


class PoisonWeightsAt:
    """A TrainerCallback (registered before the evaluation callback) that sets every weight to nan after `step`,
    as a diverged run would."""

    def __init__(self, step):
        from transformers import TrainerCallback

        outer = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kwargs):
                if state.global_step == outer.step:
                    import torch

                    with torch.no_grad():
                        for parameter in model.parameters():
                            parameter.fill_(float("nan"))

        self.step, self.callback = step, _Callback()


def test_nan_weights_stop_as_a_blow_up_without_crashing(tokenizer, splits, tmp_path):
    """weights turned to nan after step 2. The evaluation at step 2 must not crash in the AUC
    (members' and non-members' scores are all nan): its record carries nan, the stop rule reports a non-finite
    blow-up, `failed` is True, and the best model saved is the step-1 evaluation (finite, the only one after the
    start: 100 nats is never reached)."""
    poison = PoisonWeightsAt(2)
    criteria = StoppingCriteria(target_nll=100.0)
    callback = UnlearningEvalCallback(splits, eval_steps=1, criteria=criteria, save_best=True)
    model = build_llama(len(tokenizer), hidden_size=32, layers=2, heads=2, seed=0)
    trainer = get_method("ga")(
        model=model,
        args=unlearning_args("ga", tmp_path, max_steps=6, learning_rate=1e-2),
        train_dataset=splits["forget"],
        processing_class=tokenizer,
        callbacks=[poison.callback],
    )
    callback.attach(trainer)
    trainer.train()
    assert trainer.state.global_step == 2
    last = callback.history[-1]
    assert last.step == 2 and math.isnan(last.nll["forget"]) and math.isnan(last.mia_auc)
    assert callback.stop_reason.startswith("blow-up: non-finite"), callback.stop_reason
    assert callback.failed is True
    assert callback.best.step == 1


def test_failed_is_false_when_the_target_is_reached(tokenizer, splits, tmp_path):
    """A target of 0 nats is reached at the first evaluation after the start: a success, not a failure."""
    callback = UnlearningEvalCallback(splits, eval_steps=1, criteria=StoppingCriteria(target_nll=0.0))
    assert callback.failed is False  # nothing ran yet
    unlearn(tokenizer, splits, tmp_path, callback, max_steps=4)
    assert callback.stop_reason.startswith("target reached") and callback.failed is False


def test_the_start_is_never_best(tokenizer, splits, tmp_path):
    """lr 1.0 makes the first gradient-ascent step overshoot, so the only evaluation within the
    retain limit (+10%) is the start (the original model, which a rule ranking every evaluation would pick as
    best and save). The start can never be best: nothing is saved, `best` is None, and the run is a failure (blow-up)."""
    criteria = StoppingCriteria(max_retain_nll_increase=0.1)
    callback = UnlearningEvalCallback(splits, eval_steps=1, criteria=criteria, save_best=True)
    trainer = unlearn(tokenizer, splits, tmp_path, callback, max_steps=4, learning_rate=1.0)
    start, first = callback.history[0], callback.history[1]
    assert first.nll["retain"] > 1.1 * start.nll["retain"], "precondition: step 1 overshoots the retain limit"
    assert callback.best is None
    assert not os.path.exists(os.path.join(trainer.args.output_dir, "best"))
    assert callback.stop_reason.startswith("blow-up: retain NLL") and callback.failed


def leaves(value):
    """Every scalar of a JSON value."""
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item)]
    return [value]


def test_saving_best_never_pushes_and_selection_holds_numbers_only(tokenizer, splits, tmp_path, monkeypatch):
    """with push_to_hub=True, saving the best model must not push (the Hub is mocked so nothing
    touches the network: `init_hf_repo` and `push_to_hub` record their calls). selection.json holds numbers,
    steps, split names and fixed identifiers only: no text and no token ids of the forget set."""
    from hf_unlearn.trainer import UnlearningTrainer

    pushes = []
    monkeypatch.setattr(UnlearningTrainer, "init_hf_repo", lambda self, *a, **k: None)
    monkeypatch.setattr(UnlearningTrainer, "push_to_hub", lambda self, *a, **k: pushes.append((a, k)))
    criteria = StoppingCriteria(target_nll=100.0)
    callback = UnlearningEvalCallback(splits, eval_steps=1, criteria=criteria, save_best=True)
    trainer = unlearn(tokenizer, splits, tmp_path, callback, max_steps=2, push_to_hub=True, hub_model_id="me/x")
    assert callback.best is not None and callback.best.step == 2  # GA raises the forget NLL towards 100 nats
    assert pushes == [], "saving the best model must never push to the Hub"
    selection = json.load(open(os.path.join(trainer.args.output_dir, "best", "selection.json")))
    allowed_strings = set(splits) | {"closest_forget_nll_to_target"}
    for leaf in leaves(selection):
        assert leaf is None or isinstance(leaf, (bool, int, float)) or leaf in allowed_strings, leaf
    assert not any(isinstance(value, list) for value in selection.values())


# ---------------------------------------------------------------------------- worst case over attacks


def attack_record(step, **intervals):
    """A record whose attacks have the given (low, high) AUC intervals; the AUC is their midpoint and the LOSS
    attack's AUC is also the record's `mia_auc`."""
    attacks = {
        name: {"auc": (low + high) / 2, "auc_low": low, "auc_high": high} for name, (low, high) in intervals.items()
    }
    return EvalRecord(
        step=step,
        nll={"forget": 2.5, "approximate": 3.0, "retain": 2.0},
        mia_auc=attacks["loss"]["auc"],
        attacks=attacks,
    )


def first_stop(criteria, records):
    for candidate in records:
        reason = criteria.stop_reason(candidate, START, target=None)
        if reason is not None:
            return candidate.step, reason
    return None, None


def test_worst_case_rule_stops_later_than_the_loss_rule():
    """Step 1: LOSS AUC 0.52 (interval [0.44, 0.60]) looks forgotten, but Min-20% still separates ([0.70, 0.90]).
    The LOSS rule (|0.52 - 0.5| <= 0.05) stops at step 1; the worst case over attacks keeps going until step 2,
    where both intervals contain 0.5. At step 3 the Min-20% interval [0.20, 0.40] lies below 0.5: over-unlearning."""
    records = [
        attack_record(1, loss=(0.44, 0.60), min_k_20=(0.70, 0.90)),
        attack_record(2, loss=(0.40, 0.60), min_k_20=(0.45, 0.65)),
        attack_record(3, loss=(0.40, 0.60), min_k_20=(0.20, 0.40)),
    ]
    loss_rule = StoppingCriteria(stop_at_target=False, loss_auc_tolerance=0.05)
    worst_case = StoppingCriteria(stop_at_target=False, worst_case_attacks=True)
    assert first_stop(loss_rule, records)[0] == 1
    step, reason = first_stop(worst_case, records)
    assert step == 2 and reason.startswith("target reached (every attack)")
    assert worst_case.stop_reason(records[2], START, None).startswith("over-unlearning: 1 attack(s)")
    assert "min_k_20 [0.2000, 0.4000]" in worst_case.stop_reason(records[2], START, None)
    with pytest.raises(ValueError, match="attacks=..."):
        worst_case.stop_reason(record(1, 2.5), START, None)


def test_callback_computes_every_attack_from_one_forward_pass_per_split(tokenizer, splits, tmp_path):
    """With attacks="all" an evaluation runs exactly as many forward passes as the LOSS-only one: one per batch of
    each split (ceil(n / 4) with batch size 4). The LOSS entry equals `mia_auc`, Min-100% is the LOSS attack, every
    interval holds 2 ordered bounds within [0, 1], and the names are logged."""
    model = build_llama(len(tokenizer), hidden_size=32, layers=2, heads=2, seed=0)
    trainer = get_method("ga")(
        model=model, args=unlearning_args("ga", tmp_path), train_dataset=splits["forget"], processing_class=tokenizer
    )
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    expected_calls = sum(math.ceil(len(split) / 4) for split in splits.values())
    records = {}
    for attacks in (None, "all"):
        callback = UnlearningEvalCallback(splits, batch_size=4, attacks=attacks, n_resamples=200).attach(trainer)
        calls.clear()
        records[attacks] = callback.evaluate(0)
        assert len(calls) == expected_calls, attacks
    assert records[None].attacks is None
    attacks = records["all"].attacks
    assert len(attacks) == 21 and attacks["loss"]["auc"] == records["all"].mia_auc == records[None].mia_auc
    assert attacks["min_k_100"]["auc"] == pytest.approx(attacks["loss"]["auc"], abs=1e-12)
    assert all(0 <= v["auc_low"] <= v["auc_high"] <= 1 for v in attacks.values())
    logs = records["all"].logs()
    assert "eval_mia_auc_min_k_plus_plus_20" in logs  # each AUC reaches the training logs with its interval
    assert (
        logs["eval_mia_auc_loss_low"] == attacks["loss"]["auc_low"]
        and logs["eval_mia_auc_loss_high"] == attacks["loss"]["auc_high"]
    )


def test_attack_configuration_errors(forget_data):
    with pytest.raises(ValueError, match="unknown \\['zlib'\\]"):
        UnlearningEvalCallback({"forget": forget_data, "approximate": forget_data}, attacks=("loss", "zlib"))
    with pytest.raises(ValueError, match="need an 'approximate' split"):
        UnlearningEvalCallback(
            {"forget": forget_data}, criteria=StoppingCriteria(target_nll=1.0, worst_case_attacks=True)
        )
    with pytest.raises(ValueError, match="n_resamples=0"):
        UnlearningEvalCallback(
            {"forget": forget_data, "approximate": forget_data},
            n_resamples=0,
            criteria=StoppingCriteria(target_nll=1.0, worst_case_attacks=True),
        )
