"""Evaluation during unlearning, the paper's stopping rule, a blow-up guard and best-checkpoint selection.

`UnlearningEvalCallback` evaluates the model every `eval_steps` optimizer steps (and once at the start, on the
original model): the mean NLL of the forget, approximate (unseen, same domain) and retain splits, and the AUC of
the LOSS membership-inference attack, forget (members) against approximate (non-members). The numbers go
through `trainer.log`, so every logger of the Trainer (TensorBoard, W&B, the console, `trainer_state.json`) gets
them as `eval_forget_nll`, `eval_approximate_nll`, `eval_retain_nll`, `eval_mia_auc`. With `attacks=` (or the
worst-case rule) it also computes other attacks (Min-K%, Min-K%++) from the same single forward pass per split,
each AUC with a seeded bootstrap interval (`record.attacks`), logged as `eval_mia_auc_<attack>`.

`StoppingCriteria` (`hf_unlearn.stopping`) then decides, from those numbers alone (pure functions, see its
docstring):

- the paper's rule (Yao et al. 2024, guidelines): stop when the forget NLL reaches the *target*, the approximate
  set's NLL measured on the original model at the start; or (`loss_auc_tolerance`) when the LOSS attack's AUC
  is within a tolerance of 0.5. Both look at one attack only: a Min-K% attack may still separate the forget set;
- the worst case over attacks (`worst_case_attacks=True`): stop once *every* configured attack's AUC interval
  contains 0.5; an interval entirely below 0.5 stops as over-unlearning (the forget set now looks *less* likely
  than unseen data, itself a detectable signal);
- a guard against gradient-ascent blow-up: stop when the forget NLL exceeds `max_forget_nll`, when the retain
  NLL rises more than `max_retain_nll_increase` (relative) above its value at the start, or on nan / inf (an NLL
  or the AUC). Such a stop is a failure: `callback.failed` is True (a recipe can exit non-zero on it);
- the best evaluation so far: among evaluations *after the start* whose retain NLL is within that limit and whose
  forget NLL is within `max_forget_nll`, the one whose forget NLL is closest to the target (earlier wins ties).
  The start (the model before any update) is never best: if no later evaluation qualifies, `best` is None and
  nothing is saved. With `save_best=True` the best is saved to `<output_dir>/best` (never pushed to the Hub),
  with `selection.json` (numbers and steps only).

Examples without any target token (all labels -100, or a single token) have no NLL: they are left out of the
AUC (and contribute nothing to the token-weighted mean NLLs); the callback counts them (`without_targets`) and
warns once. `max_examples` evaluates a seeded random sample (`seed`) of each split, the same on every process.

Multi-process design: the callback holds the trainer (`callback.attach(trainer)`), and evaluates with
`trainer.model_wrapped` and `trainer.accelerator`: every process scores its shard of each split (padded so that
all processes run the same number of forward passes, as DeepSpeed ZeRO-3 requires) and the per-example results
are all-gathered, so every process computes the same numbers and takes the same decision (a stop decided on one
rank only would hang the others). Saving the best model is collective too (`save_model` gathers ZeRO-3 weights).

    callback = UnlearningEvalCallback(
        {"forget": forget, "approximate": approximate, "retain": retain}, eval_steps=10,
        criteria=StoppingCriteria(max_retain_nll_increase=0.1), save_best=True,
    ).attach(trainer)
    trainer.train()
    callback.stop_reason, callback.failed, callback.best  # why training stopped, was it a blow-up, the selection

Resuming from a checkpoint: the model at the start is then not the original one, so pass `target_nll`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.utils import logging

from .earlier import EARLIER_PREFIX, earlier_names
from .evaluation.attack_registry import attack_intervals, available_attacks, resolve_attacks
from .evaluation.membership import loss_auc, scored_mask
from .evaluation.scores import ExampleScores, score_examples
from .evaluation.uncertainty import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES
from .evaluation.verdict import format_auc, strongest_attack
from .stopping import APPROXIMATE, FORGET, RETAIN, EvalRecord, StoppingCriteria, worst_case_reason

logger = logging.get_logger(__name__)

# How the best evaluation is chosen, as written to selection.json (see the module docstring).
BEST_CRITERION = "closest_forget_nll_to_target"
# The Trainer callbacks that print logs on the console; an evaluation prints `console_line` there instead.
CONSOLE_PRINTERS = (ProgressCallback, PrinterCallback)
# Console names of the splits.
CONSOLE_SPLITS = {FORGET: "forget", APPROXIMATE: "unseen", RETAIN: "retain"}


def console_line(record: EvalRecord, target: float | None = None) -> str:
    """One evaluation on one console line: each split's NLL, the LOSS attack's AUC and the strongest attack's
    (largest |AUC - 0.5|), each with its interval, and `target` (the forget NLL to reach) when given, e.g.

        eval step 10: NLL forget 3.214 | unseen 3.402 | retain 2.951 | LOSS AUC 0.620 [0.430, 0.800] |
        strongest min_k_plus_plus_20 AUC 0.710 [0.530, 0.870]   (on one line)

    Every number stays in the logs (`EvalRecord.logs`); this is what a person reads while training runs."""
    nll = " | ".join(f"{CONSOLE_SPLITS.get(split, split)} {value:.3f}" for split, value in record.nll.items())
    parts = [f"eval step {record.step}: NLL {nll}"]
    if target is not None:
        parts.append(f"target forget NLL {target:.3f}")
    attacks = record.attacks or {}
    if "loss" in attacks:
        parts.append(f"LOSS AUC {format_auc(attacks['loss'])}")
    elif record.mia_auc is not None:
        parts.append(f"LOSS AUC {record.mia_auc:.3f}")
    strongest = strongest_attack(attacks)
    if strongest is not None and strongest != "loss":
        parts.append(f"strongest {strongest} AUC {format_auc(attacks[strongest])}")
    return " | ".join(parts)


def sample_indices(size: int, count: int, seed: int = 0) -> list[int]:
    """`count` distinct indices of `range(size)` drawn uniformly without replacement (`numpy.random.default_rng(
    seed)`), in increasing order; every index when `count >= size`. Deterministic: every process draws the same."""
    if count < 1:
        raise ValueError(f"max_examples={count} must be at least 1; pass None to evaluate every example.")
    if count >= size:
        return list(range(size))
    return sorted(np.random.default_rng(seed).choice(size, size=count, replace=False).tolist())


def sample_examples(dataset, count: int | None, seed: int = 0):
    """A seeded random sample of `count` examples of a datasets.Dataset or a list (all of them for None).

    Not the first `count`: consecutive chunks come from a few documents, which would not represent the split."""
    if count is None:
        return dataset
    indices = sample_indices(len(dataset), count, seed)
    return dataset.select(indices) if hasattr(dataset, "select") else [dataset[i] for i in indices]


class UnlearningEvalCallback(TrainerCallback):
    """Periodic forget / approximate / retain evaluation with optional stopping rules and best-model saving.

    See the module docstring for the metrics, the rules and the multi-process design.

    Args:
        splits: "forget" (required), "approximate" (needed for the default target and the AUC) and "retain"
            (needed for the retain guard) example sets, in `hf_unlearn.data` format. Other keys are evaluated
            and logged too.
        eval_steps: evaluate every this many optimizer steps (and at the start and at the last step).
        criteria: a `StoppingCriteria`; None evaluates and logs only (never stops training).
        save_best: save the best evaluation's model (criterion above) to `best_dir`.
        best_dir: where; defaults to `<output_dir>/best`.
        batch_size: evaluation batch size per process.
        max_examples: evaluate at most this many examples of each split: a random sample drawn with `seed`.
        seed: seed of that sample and of the bootstrap intervals (the same on every process and evaluation).
        attacks: membership-inference attacks to compute at every evaluation, with a bootstrap AUC interval
            (names of `available_attacks()`, e.g. ("loss", "min_k_20"), or "all"), from the same forward pass
            per split. None: the LOSS AUC only, or every available attack under `worst_case_attacks`.
        n_resamples, confidence: the bootstrap of those intervals.
        prefix: prefix of the logged names.

    After training: `history` (every `EvalRecord`, `history[0]` the start), `target`, `best` (None when no
    evaluation after the start qualified), `stop_reason` (None: the schedule ended) and `failed` (True when
    training stopped for a blow-up, e.g. to exit non-zero).
    """

    def __init__(
        self,
        splits: Mapping[str, Any],
        eval_steps: int = 10,
        criteria: StoppingCriteria | None = None,
        save_best: bool = False,
        best_dir: str | None = None,
        batch_size: int = 8,
        max_examples: int | None = None,
        seed: int = 0,
        attacks: Sequence[str] | str | None = None,
        n_resamples: int = DEFAULT_RESAMPLES,
        confidence: float = DEFAULT_CONFIDENCE,
        prefix: str = "eval",
    ):
        if FORGET not in splits:
            raise ValueError(f"UnlearningEvalCallback needs a {FORGET!r} split; got {sorted(splits)}.")
        if eval_steps < 1:
            raise ValueError(f"eval_steps={eval_steps} must be at least 1.")
        needs_target = criteria is not None and (criteria.stop_at_target or save_best) and criteria.target_nll is None
        if needs_target and APPROXIMATE not in splits:
            raise ValueError(
                f"The target forget NLL is the {APPROXIMATE!r} split's NLL at the start, but there is no such split: "
                "pass one (unseen same-domain data) or set StoppingCriteria(target_nll=...)."
            )
        if save_best and criteria is None:
            raise ValueError("save_best=True needs `criteria` (the best evaluation is the one closest to its target).")
        if criteria is not None and criteria.max_retain_nll_increase is not None and RETAIN not in splits:
            raise ValueError("max_retain_nll_increase needs a 'retain' split to watch; pass one or set it to None.")
        if attacks is None and criteria is not None and criteria.worst_case_attacks:
            attacks = "all"
        self.attacks = resolve_attacks(attacks)
        if criteria is not None and criteria.worst_case_attacks and n_resamples < 1:
            raise ValueError(
                f"worst_case_attacks needs AUC intervals, so n_resamples={n_resamples} must be at least 1 (e.g. 1000)."
            )
        if self.attacks is not None and APPROXIMATE not in splits:
            raise ValueError(
                f"attacks={list(self.attacks)} need an {APPROXIMATE!r} split (the non-members); pass one or "
                "attacks=None."
            )
        self.n_resamples, self.confidence, self.seed = n_resamples, confidence, seed
        self.splits = {name: sample_examples(dataset, max_examples, seed) for name, dataset in splits.items()}
        self.eval_steps = eval_steps
        self.criteria = criteria
        self.save_best = save_best
        self.best_dir = best_dir
        self.batch_size = batch_size
        self.prefix = prefix
        self.trainer = None
        self.history: list[EvalRecord] = []
        self.start: EvalRecord | None = None
        self.target: float | None = None
        self.best: EvalRecord | None = None
        self.stop_reason: str | None = None
        self._failed = False
        self.without_targets: dict[str, int] | None = None  # examples without target tokens, per split

    @property
    def failed(self) -> bool:
        """True when training stopped for a blow-up (non-finite values, forget NLL or retain NLL over a limit).

        False for a target reached, the end of the schedule and over-unlearning (`stop_reason` says which)."""
        return self._failed

    def attach(self, trainer) -> UnlearningEvalCallback:
        """Give the callback its trainer (for the wrapped model, the accelerator and the loggers); adds it to the
        trainer's callbacks if it is not there yet. Returns the callback."""
        self.trainer = trainer
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        return self

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, step: int) -> EvalRecord:
        """Score every split on every process (sharded, gathered) and return the record (same on all ranks)."""
        trainer = self.trainer
        pad = getattr(trainer.data_collator, "pad_token_id", None)
        if pad is None:
            pad = getattr(trainer.processing_class, "pad_token_id", None) or 0
        scores: dict[str, ExampleScores] = {
            name: score_examples(
                trainer.model_wrapped,
                dataset,
                pad,
                self.batch_size,
                accelerator=trainer.accelerator,
                token_scores=self.attacks is not None
                and (name in (FORGET, APPROXIMATE) or name.startswith(EARLIER_PREFIX)),  # same single forward pass
            )
            for name, dataset in self.splits.items()
        }
        if self.without_targets is None:
            self._count_without_targets(scores)
        auc = loss_auc(scores[FORGET], scores[APPROXIMATE]) if APPROXIMATE in scores else None
        attacks = None
        if self.attacks is not None:
            attacks = attack_intervals(
                scores[FORGET], scores[APPROXIMATE], self.attacks, self.n_resamples, self.confidence, self.seed
            )
        earlier = None
        if self.attacks is not None and earlier_names(scores):
            earlier = {
                name: attack_intervals(
                    scores[name], scores[APPROXIMATE], self.attacks, self.n_resamples, self.confidence, self.seed
                )
                for name in earlier_names(scores)
            }
        return EvalRecord(
            step=step,
            nll={name: s.mean_nll for name, s in scores.items()},
            mia_auc=auc,
            attacks=attacks,
            earlier_attacks=earlier,
        )

    def _count_without_targets(self, scores: Mapping[str, ExampleScores]) -> None:
        """Count (and warn once about) the examples without target tokens, which every metric leaves out."""
        self.without_targets = {name: int((~scored_mask(split)).sum()) for name, split in scores.items()}
        skipped = {name: count for name, count in self.without_targets.items() if count}
        if skipped and self.trainer.is_world_process_zero():
            logger.warning(
                f"Examples without any target token (all labels -100, or a single token) are left out of the "
                f"evaluation: {skipped} (of { ({name: len(split) for name, split in scores.items()}) }). Drop them from "
                "the data or lengthen them."
            )

    def _require_trainer(self) -> None:
        if self.trainer is None:
            raise RuntimeError(
                "UnlearningEvalCallback is not attached to a trainer; call `callback.attach(trainer)` before "
                "`trainer.train()` (it needs the trainer's wrapped model, accelerator and loggers)."
            )

    # ------------------------------------------------------------------ events

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._require_trainer()
        if self.criteria is not None and self.criteria.target_nll is None and state.global_step > 0:
            raise ValueError(
                f"Training resumes at step {state.global_step}, so the model at the start is not the original one and "
                "its approximate NLL is not the target. Pass StoppingCriteria(target_nll=<original approximate NLL>)."
            )
        self.history, self.best, self.stop_reason, self._failed = [], None, None, False
        self.start = self.evaluate(state.global_step)
        if self.criteria is not None:
            self.target = self.criteria.target_nll
            if self.target is None:
                self.target = self.start.nll.get(APPROXIMATE)
        self._record(self.start, args, state, control)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.global_step % self.eval_steps == 0 or state.global_step >= state.max_steps:
            self._record(self.evaluate(state.global_step), args, state, control)

    def _record(
        self, record: EvalRecord, args: TrainingArguments, state: TrainerState, control: TrainerControl
    ) -> None:
        self.history.append(record)
        logs = record.logs(self.prefix)
        if self.target is not None and record is self.start:
            logs[f"{self.prefix}_target_nll"] = self.target
        self._log(logs, control, record)
        if self.criteria is None or record is self.start:
            return  # the start only sets the target: it never stops training and is never best
        if self.target is not None and self.criteria.is_better(record, self.best, self.start, self.target):
            self.best = record
            if self.save_best:
                self._save_best(args)
        reason = self.criteria.stop_reason(record, self.start, self.target)
        if reason is not None:
            self.stop_reason = reason
            self._failed = self.criteria.failure(record, self.start, self.target) is not None
            control.should_training_stop = True
            if state.is_world_process_zero:
                logger.warning(f"Stopping unlearning at step {record.step}: {reason}.")

    def _log(self, logs: dict[str, float], control: TrainerControl, record: EvalRecord | None = None) -> None:
        """`trainer.log(logs)` without swallowing the trainer's own log of this step, and one console line.

        `trainer.log` fires `on_log`, and transformers' `CallbackHandler.on_log` sets `control.should_log = False`;
        called from `on_step_end`, that would cancel the training log (loss, grad_norm, learning_rate, the loss
        terms) that `DefaultFlowCallback` has just requested for this step. The flag is restored afterwards.

        Every key goes to every logger (`log_history`, TensorBoard, W&B, ...) except the console printers
        (`ProgressCallback`, `PrinterCallback`), which would print the whole dict (63 keys with every attack): where
        one of them prints, `console_line(record)` is printed instead (on the main process)."""
        should_log = control.should_log
        handler = self.trainer.callback_handler
        everyone = handler.callbacks
        printers = [callback for callback in everyone if isinstance(callback, CONSOLE_PRINTERS)]
        handler.callbacks = [callback for callback in everyone if not isinstance(callback, CONSOLE_PRINTERS)]
        try:
            self.trainer.log(logs)
        finally:
            handler.callbacks = everyone
        control.should_log = should_log
        if record is not None and printers and self.trainer.is_world_process_zero():
            bar = next((p.training_bar for p in printers if getattr(p, "training_bar", None) is not None), None)
            line = console_line(record, self.target if record is self.start else None)
            if bar is not None:
                bar.write(line)  # between the progress bar's redraws, as ProgressCallback writes its logs
            elif any(isinstance(p, PrinterCallback) for p in printers):
                print(line)

    def _save_best(self, args: TrainingArguments) -> None:
        path = self.best_dir or os.path.join(args.output_dir, "best")
        # Collective under ZeRO-3 (every rank calls it). `_internal_call=True`: an intermediate save, never pushed
        # to the Hub even with `push_to_hub=True` (the recipe decides what to push, once training is over).
        self.trainer.save_model(path, _internal_call=True)
        if self.trainer.is_world_process_zero():
            # Numbers, steps and split names only: nothing of the forget set's text or token ids.
            selection = {
                "step": self.best.step,
                "criterion": BEST_CRITERION,
                "target_nll": self.target,
                "record": asdict(self.best),
                "criteria": asdict(self.criteria),
            }
            with open(os.path.join(path, "selection.json"), "w") as handle:
                json.dump(selection, handle, indent=2)


__all__ = [
    "EvalRecord",
    "StoppingCriteria",
    "UnlearningEvalCallback",
    "attack_intervals",
    "available_attacks",
    "console_line",
    "resolve_attacks",
    "sample_examples",
    "sample_indices",
    "worst_case_reason",
]
