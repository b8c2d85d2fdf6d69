"""Evaluation during unlearning, the paper's stopping rule, a blow-up guard and best-checkpoint selection.

`UnlearningEvalCallback` evaluates the model every `eval_steps` optimizer steps (and once at the start, on the
original model): the mean NLL of the forget, approximate (unseen, same domain) and retain splits, and the AUC of
the LOSS membership-inference attack, forget (members) against approximate (non-members). The numbers go
through `trainer.log`, so every logger of the Trainer (TensorBoard, W&B, the console, `trainer_state.json`) gets
them as `eval_forget_nll`, `eval_approximate_nll`, `eval_retain_nll`, `eval_mia_auc`.

`StoppingCriteria` then decides, from those numbers alone (pure functions, see its docstring):

- the paper's rule (Yao et al. 2024, guidelines): stop when the forget NLL reaches the *target*, the approximate
  set's NLL measured on the original model at the start; or when the AUC is within `auc_tolerance` of 0.5;
- a guard against gradient-ascent blow-up: stop when the forget NLL exceeds `max_forget_nll`, when the retain
  NLL rises more than `max_retain_nll_increase` (relative) above its value at the start, or on nan / inf;
- the best evaluation so far: among evaluations whose retain NLL is within that limit and whose forget NLL is
  within `max_forget_nll`, the one whose forget NLL is closest to the target (earlier wins ties). With
  `save_best=True` it is saved (`trainer.save_model`) to `<output_dir>/best`, with `selection.json`.

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
    callback.stop_reason, callback.best  # why training stopped, the selected evaluation

Resuming from a checkpoint: the model at the start is then not the original one, so pass `target_nll`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.utils import logging

from .evaluation.membership import loss_auc
from .evaluation.scores import ExampleScores, score_examples

logger = logging.get_logger(__name__)

FORGET, APPROXIMATE, RETAIN = "forget", "approximate", "retain"


@dataclass
class EvalRecord:
    """One evaluation: optimizer step, mean NLL of each split, LOSS-attack AUC (forget vs approximate)."""

    step: int
    nll: dict[str, float]
    mia_auc: float | None = None

    def logs(self, prefix: str = "eval") -> dict[str, float]:
        logs = {f"{prefix}_{split}_nll": value for split, value in self.nll.items()}
        if self.mia_auc is not None:
            logs[f"{prefix}_mia_auc"] = self.mia_auc
        return logs


@dataclass(frozen=True)
class StoppingCriteria:
    r"""
    When to stop unlearning, and which evaluation is best. Every limit is optional.

    Parameters:
        target_nll (`float` or `None`, defaults to `None`):
            Forget-set NLL to reach. `None`: the approximate split's NLL on the original model (the first
            evaluation), as the paper recommends ("as unseen data", not "as high as possible").
        stop_at_target (`bool`, defaults to `True`):
            Stop once the forget NLL is at or above the target.
        auc_tolerance (`float` or `None`, defaults to `None`):
            Also stop once |AUC - 0.5| <= auc_tolerance (LOSS attack, forget vs approximate).
        max_forget_nll (`float` or `None`, defaults to `None`):
            Blow-up guard: stop once the forget NLL exceeds this (nats); also bounds the best evaluation.
        max_retain_nll_increase (`float` or `None`, defaults to `None`):
            Blow-up guard: stop once the retain NLL exceeds (1 + this) x its value at the start (0.1 = +10%);
            also bounds the best evaluation.
    """

    target_nll: float | None = None
    stop_at_target: bool = True
    auc_tolerance: float | None = None
    max_forget_nll: float | None = None
    max_retain_nll_increase: float | None = None

    def __post_init__(self):
        for name in ("auc_tolerance", "max_retain_nll_increase"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name}={value} is negative; pass a value >= 0 or None to disable it.")

    def retain_limit(self, start: EvalRecord) -> float | None:
        """Highest retain NLL allowed, from its value at the start; None without a limit or a retain split."""
        if self.max_retain_nll_increase is None or RETAIN not in start.nll:
            return None
        return (1 + self.max_retain_nll_increase) * start.nll[RETAIN]

    def within_limits(self, record: EvalRecord, start: EvalRecord) -> bool:
        """Finite, forget NLL within `max_forget_nll` and retain NLL within its limit."""
        if not all(math.isfinite(value) for value in record.nll.values()):
            return False
        if self.max_forget_nll is not None and record.nll[FORGET] > self.max_forget_nll:
            return False
        limit = self.retain_limit(start)
        return limit is None or record.nll[RETAIN] <= limit

    def stop_reason(self, record: EvalRecord, start: EvalRecord, target: float | None) -> str | None:
        """Why training should stop after `record` (None: keep going). Guard first, then the target."""
        forget = record.nll[FORGET]
        if not all(math.isfinite(value) for value in record.nll.values()):
            return f"blow-up: a non-finite NLL at step {record.step} ({record.nll})"
        if self.max_forget_nll is not None and forget > self.max_forget_nll:
            return f"blow-up: forget NLL {forget:.4f} > max_forget_nll {self.max_forget_nll}"
        limit = self.retain_limit(start)
        if limit is not None and record.nll[RETAIN] > limit:
            return (
                f"blow-up: retain NLL {record.nll[RETAIN]:.4f} > {limit:.4f} "
                f"(start {start.nll[RETAIN]:.4f} x (1 + {self.max_retain_nll_increase}))"
            )
        if self.stop_at_target and target is not None and forget >= target:
            return f"target reached: forget NLL {forget:.4f} >= target {target:.4f}"
        if self.auc_tolerance is not None and record.mia_auc is not None and abs(record.mia_auc - 0.5) <= self.auc_tolerance:
            return f"target reached: MIA AUC {record.mia_auc:.4f} within {self.auc_tolerance} of 0.5"
        return None

    def is_better(self, record: EvalRecord, best: EvalRecord | None, start: EvalRecord, target: float) -> bool:
        """Whether `record` beats `best`: within the limits and strictly closer to the target forget NLL."""
        if not self.within_limits(record, start):
            return False
        return best is None or abs(record.nll[FORGET] - target) < abs(best.nll[FORGET] - target)


def _head(dataset, count: int | None):
    """The first `count` examples of a datasets.Dataset or a list."""
    if count is None or count >= len(dataset):
        return dataset
    return dataset.select(range(count)) if hasattr(dataset, "select") else dataset[:count]


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
        max_examples: evaluate at most this many examples of each split (the first ones).
        prefix: prefix of the logged names.
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
        self.splits = {name: _head(dataset, max_examples) for name, dataset in splits.items()}
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
            name: score_examples(trainer.model_wrapped, dataset, pad, self.batch_size, accelerator=trainer.accelerator)
            for name, dataset in self.splits.items()
        }
        auc = loss_auc(scores[FORGET], scores[APPROXIMATE]) if APPROXIMATE in scores else None
        return EvalRecord(step=step, nll={name: s.mean_nll for name, s in scores.items()}, mia_auc=auc)

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
        self.history, self.best, self.stop_reason = [], None, None
        self.start = self.evaluate(state.global_step)
        if self.criteria is not None:
            self.target = self.criteria.target_nll
            if self.target is None:
                self.target = self.start.nll.get(APPROXIMATE)
        self._record(self.start, args, state, control)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.global_step % self.eval_steps == 0 or state.global_step >= state.max_steps:
            self._record(self.evaluate(state.global_step), args, state, control)

    def _record(self, record: EvalRecord, args: TrainingArguments, state: TrainerState, control: TrainerControl) -> None:
        self.history.append(record)
        logs = record.logs(self.prefix)
        if self.target is not None and record is self.start:
            logs[f"{self.prefix}_target_nll"] = self.target
        self.trainer.log(logs)
        if self.criteria is None:
            return
        if self.target is not None and self.criteria.is_better(record, self.best, self.start, self.target):
            self.best = record
            if self.save_best:
                self._save_best(args)
        reason = self.criteria.stop_reason(record, self.start, self.target)
        if reason is not None and record is not self.start:
            self.stop_reason = reason
            control.should_training_stop = True
            if state.is_world_process_zero:
                logger.warning(f"Stopping unlearning at step {record.step}: {reason}.")

    def _save_best(self, args: TrainingArguments) -> None:
        path = self.best_dir or os.path.join(args.output_dir, "best")
        self.trainer.save_model(path)  # collective under ZeRO-3: every rank calls it
        if self.trainer.is_world_process_zero():
            selection = {
                "step": self.best.step,
                "criterion": (
                    "closest forget NLL to the target, among evaluations with finite NLLs, forget NLL <= "
                    "max_forget_nll and retain NLL <= (1 + max_retain_nll_increase) x retain NLL at the start"
                ),
                "target_nll": self.target,
                "record": asdict(self.best),
                "criteria": asdict(self.criteria),
            }
            with open(os.path.join(path, "selection.json"), "w") as handle:
                json.dump(selection, handle, indent=2)


__all__ = ["EvalRecord", "StoppingCriteria", "UnlearningEvalCallback"]
