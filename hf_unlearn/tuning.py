"""Hyperparameter tuning by the paper's guideline, from data a user has: forget, unseen (approximate) and retain sets.

Yao et al. 2024 (guidelines): unlearn until the forget set looks like unseen same-domain data, not until its NLL is
"as high as possible". `tune_trainer` turns that into a criterion that a setting meets or not, and picks the
cheapest setting that meets it. Nothing here needs the retrained model.

The criterion (`TuningCriterion`), checked at every evaluation of a trial:

- forgotten: every membership attack of the evaluation (LOSS, Min-K%, Min-K%++ at K = 10..100 by default) has a
  bootstrap AUC interval, forget (members) against unseen (non-members), that contains 0.5, so the strongest
  attack cannot tell the two apart. An interval entirely below 0.5 is over-unlearning (the forget set now looks
  *less* likely than unseen data, itself a signal), not a success;
- utility kept: the retain NLL is at most `(1 + retain_tolerance)` x its value on the original model.

A trial is one training run (`Trainer.hyperparameter_search` with optuna: the `SearchSpace` sets `learning_rate` and
`max_steps`) under the worst-case stopping rule of `hf-unlearn train` (`stopping_rule: worst_case`, with
`max_retain_nll_increase = retain_tolerance`): it stops at the first evaluation that meets the criterion, or on
over-unlearning, or once the retain NLL leaves the tolerance; the stopping rule chooses the step within a trial.
Its cost is the tokens trained on until that evaluation: optimizer steps x (forget + retain tokens per step). The
chosen setting is the cheapest trial that met the criterion (ties: the lower retain NLL, then the strongest AUC
closer to 0.5). A trial is stopped early as hopeless through optuna's pruning (`trial.report` + `should_prune`,
`cost_bound_pruner`): once its cost passes the cheapest setting found so far without meeting the criterion, no
later step can win.

Shared between trials: the trainer's prepared streams (precomputed per-example values such as adversarial targets,
computed once at construction), the loaded reference model, and the start evaluation of the original model (a
trial's model from `model_init` with the same weights, checked by their fingerprint, is evaluated once).

Budget: `n_trials`, and `timeout` (seconds of wall time: no trial starts after it, and a running trial stops at its
next step). Progress: one bar over the trials.

    trainer = get_method("ga_descent")(model_init=model_init, args=config, train_dataset=forget,
                                      retain_dataset=retain, processing_class=tokenizer)
    result = tune_trainer(trainer, {"forget": forget, "approximate": unseen, "retain": retain},
                          SearchSpace(learning_rate=(1e-5, 1e-3), max_steps=(20,)), n_trials=8)
    result.chosen          # the cheapest TrialOutcome that met the criterion, or None
    print(result.summary())
    result.write_report("outputs/tune")   # trials.json + trials.png (local: they hold forget-set statistics)

Privacy: outcomes hold numbers only (steps, costs, NLLs, AUCs), never text or token ids. The forget-set numbers
(its NLL, the AUCs) belong in the local report; the chosen configuration (`hf-unlearn tune`'s YAML) holds
hyperparameters only.

Needs the optional extra `tune` (optuna): `pip install 'hf_unlearn[tune]'`. One process (no multi-GPU search).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from .callbacks import RETAIN, EvalRecord, StoppingCriteria, UnlearningEvalCallback
from .precompute import weights_fingerprint

# A trial's status: the criterion met, or why not.
MET = "met"
OVER_UNLEARNED = "over-unlearned"
RETAIN_OVER = "retain NLL over tolerance"
NON_FINITE = "non-finite"
NOT_FORGOTTEN = "not forgotten"  # the schedule ended before an evaluation met the criterion
PRUNED = "pruned"  # hopeless: its cost passed the cheapest setting found without meeting the criterion
BUDGET = "stopped: wall-time budget"
SAMPLERS = ("tpe", "random", "grid")
TUNED_FIELDS = ("learning_rate", "max_steps")


def require_optuna():
    """optuna, or an ImportError that says how to install it."""
    try:
        import optuna
    except ImportError:
        raise ImportError("Tuning needs optuna: pip install 'hf_unlearn[tune]' (or pip install optuna).") from None
    return optuna


# ------------------------------------------------------------------ the search space


@dataclass(frozen=True)
class SearchSpace:
    r"""
    What a trial may set: the learning rate and the number of optimizer steps (the stopping rule picks the step
    within a trial, so `max_steps` bounds a trial's cost and sets the schedule's length).

    Parameters:
        learning_rate (`tuple[float, float]` or `None`): a range `(low, high)` searched log-uniformly.
        learning_rates (`tuple[float, ...]`): or a list of values to choose from (a grid); exactly one of the two.
        max_steps (`tuple[int, ...]`): values of `max_steps` to choose from (each at least 1).
    """

    learning_rate: tuple[float, float] | None = None
    learning_rates: tuple[float, ...] = ()
    max_steps: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "learning_rates", tuple(self.learning_rates))
        object.__setattr__(self, "max_steps", tuple(self.max_steps))
        if (self.learning_rate is None) == (not self.learning_rates):
            raise ValueError(
                "The search space needs learning rates: give a range learning_rate=(low, high) or a list "
                "learning_rates=(a, b, ...), one of the two (`--tune_learning_rates 1e-5:1e-3` or `1e-5,1e-4`)."
            )
        if self.learning_rate is not None:
            low, high = self.learning_rate
            if not (0 < low <= high and math.isfinite(high)):
                raise ValueError(
                    f"learning_rate range {self.learning_rate} is empty or not positive; give 0 < low <= "
                    "high (e.g. 1e-5:1e-3)."
                )
        bad = [value for value in self.learning_rates if not (value > 0 and math.isfinite(value))]
        if bad:
            raise ValueError(f"learning_rates {list(self.learning_rates)} holds {bad[0]}; give positive finite values.")
        if not self.max_steps:
            raise ValueError("The search space has no max_steps values; give at least one (e.g. --tune_max_steps 20).")
        bad_steps = [value for value in self.max_steps if not (isinstance(value, int) and value >= 1)]
        if bad_steps:
            raise ValueError(f"max_steps {list(self.max_steps)} holds {bad_steps[0]!r}; give whole numbers >= 1.")

    @classmethod
    def from_strings(cls, learning_rates: str, max_steps: str) -> SearchSpace:
        """From the command line: learning rates "LOW:HIGH" (log-uniform) or "A,B,C"; max steps "A,B,C"."""
        text = learning_rates.strip()
        try:
            if ":" in text:
                low, high = (float(part) for part in text.split(":"))
                space = {"learning_rate": (low, high)}
            else:
                space = {"learning_rates": tuple(float(part) for part in text.split(",") if part.strip())}
        except ValueError:
            raise ValueError(
                f"--tune_learning_rates {learning_rates!r} is not LOW:HIGH or a comma-separated list of "
                "numbers (e.g. 1e-5:1e-3 or 1e-5,3e-5,1e-4)."
            ) from None
        try:
            steps = tuple(int(part) for part in max_steps.split(",") if part.strip())
        except ValueError:
            raise ValueError(
                f"--tune_max_steps {max_steps!r} is not a comma-separated list of whole numbers (e.g. 10,20)."
            ) from None
        return cls(**space, max_steps=steps)

    def suggest(self, trial) -> dict[str, float | int]:
        """The trial's values (optuna's `suggest_*`), as `Trainer.hyperparameter_search`'s `hp_space` returns them."""
        if self.learning_rate is not None:
            lr = trial.suggest_float("learning_rate", *self.learning_rate, log=True)
        else:
            lr = trial.suggest_categorical("learning_rate", list(self.learning_rates))
        return {"learning_rate": lr, "max_steps": trial.suggest_categorical("max_steps", list(self.max_steps))}

    def grid(self) -> dict[str, list]:
        """Every value of each field, for optuna's `GridSampler` (a list of learning rates only)."""
        if self.learning_rate is not None:
            raise ValueError("sampler=grid needs a list of learning rates (e.g. 1e-5,3e-5,1e-4), not a range.")
        return {"learning_rate": list(self.learning_rates), "max_steps": list(self.max_steps)}

    def describe(self) -> dict[str, Any]:
        lr = {"log_uniform": list(self.learning_rate)} if self.learning_rate is not None else list(self.learning_rates)
        return {"learning_rate": lr, "max_steps": list(self.max_steps)}


# ------------------------------------------------------------------ the criterion


@dataclass(frozen=True)
class TuningCriterion:
    r"""
    When a setting counts as unlearned (see the module docstring).

    Parameters:
        retain_tolerance (`float`, defaults to `0.1`): the retain NLL may rise by at most this share of its value on
            the original model (0.1 = 10 percent).
    """

    retain_tolerance: float = 0.1

    def __post_init__(self):
        if not (self.retain_tolerance >= 0 and math.isfinite(self.retain_tolerance)):
            raise ValueError(f"retain_tolerance={self.retain_tolerance} must be a finite share >= 0 (e.g. 0.1).")

    def stopping_criteria(self) -> StoppingCriteria:
        """The stopping rule of a trial: `hf-unlearn train`'s worst case over attacks with this retain guard."""
        return StoppingCriteria(
            stop_at_target=False, max_retain_nll_increase=self.retain_tolerance, worst_case_attacks=True
        )

    def status(self, record: EvalRecord, start: EvalRecord) -> str | None:
        """`MET`, or why the record can never be chosen (`NON_FINITE`, `RETAIN_OVER`, `OVER_UNLEARNED`), or None
        while an attack still separates the forget set (an interval entirely above 0.5)."""
        if RETAIN not in start.nll or not record.attacks:
            raise ValueError(
                "The tuning criterion needs a 'retain' split and per-attack AUC intervals (an "
                "'approximate' split, attacks and n_resamples >= 1)."
            )
        if record.non_finite():
            return NON_FINITE
        if self.stopping_criteria().failure(record, start) is not None:
            return RETAIN_OVER
        intervals = record.attacks.values()
        if any(v["auc_high"] < 0.5 for v in intervals):
            return OVER_UNLEARNED
        return MET if all(v["auc_low"] <= 0.5 for v in intervals) else None

    def distance(self, record: EvalRecord, start: EvalRecord) -> float:
        """How far `record` is from meeting the criterion (0 when it does): the largest gap between an AUC interval
        and 0.5, plus the retain NLL's excess over its limit relative to the limit. Guides the sampler only."""
        if record.non_finite():
            return 10.0
        gaps = [max(v["auc_low"] - 0.5, 0.5 - v["auc_high"], 0.0) for v in record.attacks.values()]
        limit = self.stopping_criteria().retain_limit(start)
        return max(gaps) + max(record.nll[RETAIN] / limit - 1, 0.0)


def strongest(record: EvalRecord) -> dict[str, Any]:
    """The attack with the largest |AUC - 0.5| (LOSS first among ties): `{"attack", "auc", "auc_low", "auc_high"}`."""
    names = sorted(record.attacks, key=lambda name: name != "loss")
    name = max(names, key=lambda n: abs(record.attacks[n]["auc"] - 0.5))
    return {"attack": name, **record.attacks[name]}


# ------------------------------------------------------------------ outcomes


@dataclass
class TrialOutcome:
    """One trial: its setting, its status, the evaluation it ended on (the first that met the criterion, else the
    last) and every evaluation's strongest attack and retain NLL (`trajectory`). Numbers only."""

    number: int
    method: str
    params: dict[str, float | int]
    status: str
    step: int
    cost_tokens: int
    strongest: dict[str, Any]
    nll: dict[str, float]
    retain_limit: float
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def met(self) -> bool:
        return self.status == MET

    def sort_key(self) -> tuple:
        """Cheapest first; then the lower retain NLL, the strongest AUC closer to 0.5, the earlier trial."""
        return (self.cost_tokens, self.nll[RETAIN], abs(self.strongest["auc"] - 0.5), self.number)


@dataclass
class TuningResult:
    """Every trial of a search (several `tune_trainer` calls may add to one result, e.g. one per method)."""

    criterion: TuningCriterion
    trials: list[TrialOutcome] = field(default_factory=list)
    spaces: dict[str, dict] = field(default_factory=dict)  # method -> SearchSpace.describe()
    wall_time_s: float = 0.0
    start_retain_nll: float | None = None
    # Which unseen data the attacks' non-members were: "approximate" (the split a run's own verdict scores too, so
    # that verdict is in-sample) or "unseen" (a split disjoint from it: the verdict is out-of-sample).
    selected_on: str = "approximate"
    _starts: dict = field(default_factory=dict, repr=False)  # shared start evaluations, by weights and settings

    @property
    def chosen(self) -> TrialOutcome | None:
        """The cheapest trial that met the criterion, or None when none did."""
        met = [trial for trial in self.trials if trial.met]
        return min(met, key=TrialOutcome.sort_key) if met else None

    def best_cost(self) -> int | None:
        chosen = self.chosen
        return None if chosen is None else chosen.cost_tokens

    def advice(self) -> str:
        """What to change when no trial met the criterion, from how the trials failed."""
        counts = {
            status: sum(t.status == status for t in self.trials)
            for status in (OVER_UNLEARNED, RETAIN_OVER, NON_FINITE, NOT_FORGOTTEN, BUDGET, PRUNED)
        }
        hints = []
        if counts[NOT_FORGOTTEN]:
            hints.append(
                f"{counts[NOT_FORGOTTEN]} ended still separated by an attack: raise the learning rates or max_steps"
            )
        if counts[OVER_UNLEARNED]:
            hints.append(
                f"{counts[OVER_UNLEARNED]} over-unlearned: lower the learning rates or evaluate more often "
                "(eval_every_steps)"
            )
        if counts[RETAIN_OVER] or counts[NON_FINITE]:
            hints.append(
                f"{counts[RETAIN_OVER] + counts[NON_FINITE]} damaged the retain set: lower the learning rates, "
                "use a method with a retain term (ga_descent), or allow a larger --tune_retain_tolerance"
            )
        if counts[BUDGET]:
            hints.append(f"{counts[BUDGET]} stopped by the wall-time budget: raise --tune_timeout")
        return "; ".join(hints) or "give more trials"

    def summary(self) -> str:
        """A table of every trial and the choice (local output: it shows forget-set AUCs)."""
        chosen = self.chosen
        lines = [
            f"{'trial':>5} {'method':<12} {'lr':>9} {'max':>4} {'step':>4} {'tokens':>9} {'strongest AUC [95%]':>26} "
            f"{'retain':>7}  status"
        ]
        for t in self.trials:
            s = t.strongest
            interval = f"{s['auc']:.3f} [{s['auc_low']:.3f}, {s['auc_high']:.3f}]"
            mark = "  <- chosen" if chosen is not None and t is chosen else ""
            lines.append(
                f"{t.number:>5} {t.method:<12} {t.params['learning_rate']:>9.2e} {t.params['max_steps']:>4} "
                f"{t.step:>4} {t.cost_tokens:>9} {interval:>26} {t.nll[RETAIN]:>7.3f}  {t.status}{mark}"
            )
        limit = f"{self.trials[0].retain_limit:.3f}" if self.trials else "-"
        lines.append(
            f"criterion: every attack's AUC interval (forget vs the {self.selected_on} split) contains 0.5, retain "
            f"NLL <= {limit} (+{self.criterion.retain_tolerance:g} of the original); the cheapest (tokens trained "
            "on) wins."
        )
        if chosen is not None:
            lines.append(
                f"chosen: trial {chosen.number} ({chosen.method}, learning_rate {chosen.params['learning_rate']:.3g}, "
                f"max_steps {chosen.params['max_steps']}): met at step {chosen.step}."
            )
        else:
            lines.append(
                f"no setting in the search space met the criterion ({len(self.trials)} trials): {self.advice()}."
            )
        return "\n".join(lines)

    def report(self) -> dict[str, Any]:
        """Everything as plain numbers and names (for trials.json)."""
        chosen = self.chosen
        return {
            "criterion": {
                "every_attack_interval_contains": 0.5,
                "non_members": self.selected_on,
                "retain_tolerance": self.criterion.retain_tolerance,
                "start_retain_nll": self.start_retain_nll,
                "cost": "tokens trained on until the step",
            },
            "search_space": self.spaces,
            "wall_time_s": round(self.wall_time_s, 1),
            "chosen_trial": None if chosen is None else chosen.number,
            "trials": [asdict(trial) for trial in self.trials],
        }

    def write_report(self, folder: str) -> dict[str, str]:
        """Write `trials.json` and, with matplotlib, `trials.png` into `folder` (each atomically); their paths."""
        os.makedirs(folder, exist_ok=True)
        paths = {"trials": os.path.join(folder, "trials.json")}
        _write_atomically(paths["trials"], json.dumps(self.report(), indent=2))
        plot = plot_trials(self, os.path.join(folder, "trials.png"))
        if plot is not None:
            paths["plot"] = plot
        return paths


def _write_atomically(path: str, text: str) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


STATUS_STYLE = {  # marker, colour
    MET: ("o", "tab:green"),
    OVER_UNLEARNED: ("v", "tab:red"),
    RETAIN_OVER: ("^", "tab:orange"),
    NON_FINITE: ("X", "black"),
    NOT_FORGOTTEN: ("s", "tab:blue"),
    PRUNED: ("x", "tab:gray"),
    BUDGET: ("d", "tab:purple"),
}


def plot_trials(result: TuningResult, path: str) -> str | None:
    """Every trial in the plane strongest attack AUC (forget vs unseen) x retain NLL: its path over evaluations (a
    thin line), where it ended (a marker by status, the AUC's interval as a bar), the chosen one starred, the
    criterion's region (AUC 0.5, the retain limit) drawn. None without trials or matplotlib."""
    if not result.trials:
        return None
    try:
        from .evaluation.plots import _pyplot

        plt = _pyplot()
    except ImportError:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for trial in result.trials:
        axis.plot(
            [p["auc"] for p in trial.trajectory],
            [p["retain_nll"] for p in trial.trajectory],
            color="lightgray",
            linewidth=0.8,
            zorder=1,
        )
    for status, (marker, colour) in STATUS_STYLE.items():
        trials = [t for t in result.trials if t.status == status]
        if not trials:
            continue
        x = [t.strongest["auc"] for t in trials]
        errors = [
            [t.strongest["auc"] - t.strongest["auc_low"] for t in trials],
            [t.strongest["auc_high"] - t.strongest["auc"] for t in trials],
        ]
        axis.errorbar(
            x,
            [t.nll[RETAIN] for t in trials],
            xerr=errors,
            fmt=marker,
            color=colour,
            ecolor=colour,
            elinewidth=0.6,
            capsize=2,
            label=f"{status} ({len(trials)})",
            zorder=2,
        )
    chosen = result.chosen
    if chosen is not None:
        axis.scatter(
            [chosen.strongest["auc"]],
            [chosen.nll[RETAIN]],
            marker="*",
            s=250,
            color="gold",
            edgecolors="black",
            zorder=3,
            label=f"chosen: trial {chosen.number}",
        )
    axis.axvline(0.5, color="black", linewidth=0.8, linestyle=":")
    axis.axhline(
        result.trials[0].retain_limit,
        color="tab:orange",
        linewidth=0.8,
        linestyle="--",
        label=f"retain limit (+{result.criterion.retain_tolerance:g})",
    )
    axis.set_xlabel("strongest attack AUC, forget vs unseen (0.5 = indistinguishable; bar: 95% interval)")
    axis.set_ylabel("retain NLL")
    axis.set_title(f"hf-unlearn tune: {len(result.trials)} trials")
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


# ------------------------------------------------------------------ running a search


class SharedStartEvalCallback(UnlearningEvalCallback):
    """`UnlearningEvalCallback` whose start evaluation (step 0, the original model) is computed once per distinct
    model weights (`weights_fingerprint`) and evaluation settings, and reused by every later trial."""

    def __init__(self, splits: Mapping[str, Any], *args, starts: dict, **kwargs):
        super().__init__(splits, *args, **kwargs)
        self.starts = starts
        self.settings = (
            tuple((name, id(data)) for name, data in splits.items()),
            kwargs.get("max_examples"),
            self.attacks,
            self.n_resamples,
            self.confidence,
            self.seed,
        )

    def evaluate(self, step: int) -> EvalRecord:
        if step != 0:
            return super().evaluate(step)
        key = (weights_fingerprint(self.trainer.accelerator.unwrap_model(self.trainer.model)), self.settings)
        if key not in self.starts:
            self.starts[key] = super().evaluate(step)
        return self.starts[key]


def cost_bound_pruner(bound: Callable[[], float | None]):
    """An optuna pruner that prunes a trial once its last reported cost is at or above `bound()` (the cheapest
    setting that met the criterion so far; None: nothing to compare with). A trial reports its cost only while it
    has not met the criterion, so a pruned trial could only meet it at a higher cost."""
    optuna = require_optuna()

    class CostBoundPruner(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            step, limit = trial.last_step, bound()
            return step is not None and limit is not None and trial.intermediate_values[step] >= limit

    return CostBoundPruner()


def tokens_per_step(trainer) -> int:
    """Tokens one optimizer step trains on: examples per step (per-device batch x accumulation x processes) x the
    mean tokens of a forget example, plus of a retain example when the method trains on retain data."""
    args = trainer.args
    examples = args.train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
    streams = [trainer.forget_dataset]
    if (
        trainer.retain_objective is not None
        and trainer.retain_objective.active()
        and trainer.retain_dataset is not None
    ):
        streams.append(trainer.retain_dataset)
    mean = sum(sum(len(example["input_ids"]) for example in data) / max(len(data), 1) for data in streams)
    return round(examples * mean)


class _TrialMonitor(TrainerCallback):
    """Turns each evaluation of the eval callback into the trial's outcome: reports the cost to optuna while the
    criterion is not met (pruning when hopeless), stops at the wall-time budget, records the outcome at the end."""

    def __init__(self, search: _Search):
        self.search = search
        self.trajectory: list[dict[str, Any]] = []
        self.began = 0.0
        self.out_of_time = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.trajectory, self.began, self.out_of_time = [], time.monotonic(), False
        self._add(self.search.monitor.start)

    def _add(self, record: EvalRecord) -> None:
        self.trajectory.append({"step": record.step, **strongest(record), "retain_nll": record.nll[RETAIN]})

    def on_step_end(self, args, state, control, **kwargs):
        search, monitor = self.search, self.search.monitor
        record = monitor.history[-1]
        if record.step == state.global_step and record is not monitor.start:
            self._add(record)
            search.progress_step(state.global_step)
            if search.criterion.status(record, monitor.start) is None:
                trial = search.trial
                trial.report(record.step * search.tokens_per_step, record.step)
                if trial.should_prune():
                    self.finish(PRUNED)
                    raise require_optuna().TrialPruned()
        if search.deadline is not None and time.monotonic() > search.deadline and not control.should_training_stop:
            self.out_of_time = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.finish(None)

    def finish(self, forced: str | None) -> None:
        search, monitor = self.search, self.search.monitor
        last = monitor.history[-1]
        status = (
            forced or search.criterion.status(last, monitor.start) or (BUDGET if self.out_of_time else NOT_FORGOTTEN)
        )
        outcome = TrialOutcome(
            number=len(search.result.trials),
            method=search.method,
            params=dict(search.params),
            status=status,
            step=last.step,
            cost_tokens=last.step * search.tokens_per_step,
            strongest=strongest(last),
            nll=dict(last.nll),
            retain_limit=search.criterion.stopping_criteria().retain_limit(monitor.start),
            trajectory=list(self.trajectory),
            wall_time_s=round(time.monotonic() - self.began, 1),
        )
        search.result.trials.append(outcome)
        search.result.start_retain_nll = monitor.start.nll[RETAIN]
        worst = search.max_cost * (2 + search.criterion.distance(last, monitor.start))
        search.trainer.objective = float(outcome.cost_tokens if outcome.met else worst)
        search.progress_trial(outcome)


@dataclass
class _Search:
    """The state one `tune_trainer` call shares between its callbacks and optuna's objective."""

    trainer: Any
    method: str
    criterion: TuningCriterion
    result: TuningResult
    monitor: UnlearningEvalCallback
    tokens_per_step: int
    max_cost: int
    deadline: float | None
    bar: Any = None
    trial: Any = None
    params: dict = field(default_factory=dict)

    def hp_space(self, space: SearchSpace):
        def suggest(trial):
            self.trial = trial
            self.params = space.suggest(trial)
            trial.set_user_attr("method", self.method)
            return self.params

        return suggest

    def progress_step(self, step: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"trial {len(self.result.trials)}: step {step}/{self.params['max_steps']}{self._best()}", refresh=True
            )

    def progress_trial(self, outcome: TrialOutcome) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"trial {outcome.number}: {outcome.status} at step {outcome.step}{self._best()}")

    def _best(self) -> str:
        chosen = self.result.chosen
        return "" if chosen is None else f"; best: trial {chosen.number}, {chosen.cost_tokens} tokens"


def _sampler(sampler, space: SearchSpace, seed: int):
    optuna = require_optuna()
    if not isinstance(sampler, str):
        return sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is unknown; use one of {list(SAMPLERS)} or an optuna sampler.")
    if sampler == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def check_budget(n_trials: int, timeout: float | None) -> None:
    """One-line errors for a budget of nothing."""
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials={n_trials!r}: the budget must allow at least 1 trial (e.g. --tune_trials 8).")
    if timeout is not None and not (timeout > 0):
        raise ValueError(f"timeout={timeout!r} seconds: the wall-time budget must be positive, or None for no limit.")


def tune_trainer(
    trainer,
    eval_splits: Mapping[str, Any],
    space: SearchSpace,
    criterion: TuningCriterion | None = None,
    n_trials: int = 8,
    timeout: float | None = None,
    sampler: str | Any = "tpe",
    pruner: Any = None,
    eval_steps: int = 1,
    eval_batch_size: int = 8,
    eval_max_examples: int | None = None,
    attacks: Sequence[str] | str = "all",
    n_resamples: int = 1000,
    progress: bool = True,
    result: TuningResult | None = None,
    method: str | None = None,
) -> TuningResult:
    """Search `space` for the cheapest setting of `trainer` (built with `model_init`) that meets `criterion`.

    Args:
        trainer: an `UnlearningTrainer` (any method) built with `model_init=` (a fresh model per trial, as
            `Trainer.hyperparameter_search` needs) and its forget (and retain) data.
        eval_splits: "forget", "approximate" (unseen, same domain: the attacks' non-members) and "retain" (the
            retain NLL the criterion bounds), as `UnlearningEvalCallback` takes them.
        space, criterion: the `SearchSpace` and the `TuningCriterion` (default: retain tolerance 10 percent).
        n_trials, timeout: the budget: at most `n_trials` trials and `timeout` seconds of wall time.
        sampler: "tpe" (default), "random", "grid" (every combination of a list of learning rates) or an optuna
            sampler; seeded with `trainer.args.seed`.
        pruner: an optuna pruner; default `cost_bound_pruner` (prune once a trial is costlier than the best so far).
        eval_steps, eval_batch_size, eval_max_examples, attacks, n_resamples: the evaluation of every trial (see
            `UnlearningEvalCallback`); `hf-unlearn train` with the same values reproduces a trial.
        progress: show a progress bar over the trials.
        result, method: add the trials to an earlier `TuningResult` (one search per method), under this name
            (default: `trainer.method_name`).

    Returns the `TuningResult` (`chosen`: the cheapest trial that met the criterion, or None). The trainer's
    arguments are restored afterwards; its model is the last trial's (or released).
    """
    optuna = require_optuna()
    check_budget(n_trials, timeout)
    criterion = criterion or TuningCriterion()
    missing = [name for name in ("forget", "approximate", "retain") if name not in eval_splits]
    if missing:
        raise ValueError(
            f"Tuning needs eval_splits {missing}: 'approximate' is unseen same-domain data (the attacks' "
            "non-members), 'retain' the data whose NLL must stay within the tolerance."
        )
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples}: the criterion needs AUC intervals; use at least 1 (e.g. 1000).")
    if trainer.model_init is None:
        raise ValueError(
            "Tuning needs a trainer built with model_init= (a function returning a fresh original model "
            "for every trial), as Trainer.hyperparameter_search does."
        )
    if trainer.args.world_size > 1:
        raise ValueError(
            f"Tuning runs in one process; this run has {trainer.args.world_size}. Launch it with plain "
            "python (or hf-unlearn tune without a launcher)."
        )
    method = method or trainer.method_name
    result = result if result is not None else TuningResult(criterion=criterion)
    result.spaces[method] = space.describe()
    trainer.prepare_streams()  # once: every trial trains on the same prepared streams (precomputed values included)
    per_step = tokens_per_step(trainer)
    began = time.monotonic()
    search = _Search(
        trainer=trainer,
        method=method,
        criterion=criterion,
        result=result,
        monitor=None,
        tokens_per_step=per_step,
        max_cost=max(space.max_steps) * per_step,
        deadline=None if timeout is None else began + timeout,
    )
    search.monitor = SharedStartEvalCallback(
        eval_splits,
        eval_steps=eval_steps,
        criteria=criterion.stopping_criteria(),
        batch_size=eval_batch_size,
        max_examples=eval_max_examples,
        attacks=attacks,
        n_resamples=n_resamples,
        seed=0,
        starts=result._starts,
    ).attach(trainer)
    trial_monitor = _TrialMonitor(search)
    trainer.add_callback(trial_monitor)

    # During the search: no checkpoints, nothing pushed, no per-step printing (the progress bar instead).
    args = trainer.args
    saved = {name: getattr(args, name) for name in (*TUNED_FIELDS, "save_strategy", "push_to_hub", "disable_tqdm")}
    from transformers.trainer_utils import SaveStrategy

    args.save_strategy, args.push_to_hub, args.disable_tqdm = SaveStrategy.NO, False, True
    printers = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, (PrinterCallback, ProgressCallback))]
    for callback in printers:
        trainer.remove_callback(callback)
    original_init = trainer.model_init
    trainer.model_init = _configured_model_init(trainer, original_init)
    quiet = [logging.getLogger(name) for name in ("hf_unlearn.callbacks", "optuna")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from tqdm.auto import tqdm

    search.bar = tqdm(total=n_trials, desc=f"tuning {method}", unit="trial", disable=not progress)
    try:
        trainer.hyperparameter_search(
            hp_space=search.hp_space(space),
            n_trials=n_trials,
            direction="minimize",
            backend="optuna",
            compute_objective=lambda metrics: trainer.objective,
            timeout=timeout,
            sampler=_sampler(sampler, space, args.seed),
            pruner=pruner if pruner is not None else cost_bound_pruner(result.best_cost),
            study_name=f"hf-unlearn-tune-{method}",
        )
    finally:
        search.bar.close()
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
        optuna.logging.set_verbosity(verbosity)
        trainer.model_init = original_init
        trainer.remove_callback(trial_monitor)
        trainer.remove_callback(search.monitor)
        for callback in printers:
            trainer.add_callback(callback)
        for name, value in saved.items():
            setattr(args, name, value)
        result.wall_time_s += time.monotonic() - began
    return result


def _configured_model_init(trainer, model_init):
    """`model_init` whose fresh model also gets each objective's `configure_model` (e.g. RMU's trainable subset),
    as the trainer's constructor does for its first model."""
    from transformers.trainer_utils import number_of_arguments

    takes_trial = number_of_arguments(model_init) == 1

    def configured(trial=None):
        model = model_init(trial) if takes_trial else model_init()
        for objective in trainer.objectives:
            objective.configure_model(model)
        return model

    return configured


__all__ = [
    "SearchSpace",
    "TrialOutcome",
    "TuningCriterion",
    "TuningResult",
    "cost_bound_pruner",
    "plot_trials",
    "tune_trainer",
]
