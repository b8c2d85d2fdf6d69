"""The stopping policy: when unlearning stops, what is a blow-up, and which evaluation is best.

`StoppingCriteria` decides from the numbers of one evaluation (`EvalRecord`: each split's mean NLL and the
membership attacks' AUCs) and the evaluation at the start alone; pure functions, no model. The rules are listed in
`hf_unlearn.callbacks`' module docstring; `UnlearningEvalCallback` applies them during training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FORGET, APPROXIMATE, RETAIN = "forget", "approximate", "retain"


@dataclass
class EvalRecord:
    """One evaluation: optimizer step, mean NLL of each split, LOSS-attack AUC (forget vs approximate)."""

    step: int
    nll: dict[str, float]
    mia_auc: float | None = None
    # With several attacks: {attack: {"auc": ..., "auc_low": ..., "auc_high": ...}} (bootstrap interval bounds).
    attacks: dict[str, dict[str, float]] | None = None
    # Earlier forget sets' attack intervals against the approximate split, by split (`hf_unlearn.earlier`).
    earlier_attacks: dict[str, dict[str, dict[str, float]]] | None = None

    def logs(self, prefix: str = "eval") -> dict[str, float]:
        logs = {f"{prefix}_{split}_nll": value for split, value in self.nll.items()}
        if self.mia_auc is not None:
            logs[f"{prefix}_mia_auc"] = self.mia_auc
        for attack, values in (self.attacks or {}).items():  # each AUC with its bootstrap interval
            logs[f"{prefix}_mia_auc_{attack}"] = values["auc"]
            logs[f"{prefix}_mia_auc_{attack}_low"] = values["auc_low"]
            logs[f"{prefix}_mia_auc_{attack}_high"] = values["auc_high"]
        for split, attacks in (self.earlier_attacks or {}).items():
            for attack, values in attacks.items():
                logs[f"{prefix}_{split}_mia_auc_{attack}"] = values["auc"]
        return logs

    def non_finite(self) -> dict[str, float]:
        """The values of this record that are nan or inf (empty when all are finite), by name."""
        values = {f"{split} NLL": value for split, value in self.nll.items()}
        if self.mia_auc is not None:
            values["MIA AUC"] = self.mia_auc
        values.update({f"{attack} AUC": summary["auc"] for attack, summary in (self.attacks or {}).items()})
        for split, attacks in (self.earlier_attacks or {}).items():
            values.update({f"{split} {attack} AUC": summary["auc"] for attack, summary in attacks.items()})
        return {name: value for name, value in values.items() if not math.isfinite(value)}


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
        loss_auc_tolerance (`float` or `None`, defaults to `None`):
            Also stop once |AUC - 0.5| <= loss_auc_tolerance for the LOSS attack only (forget vs approximate): the
            paper's single-attack view; another attack may still separate the forget set.
        max_forget_nll (`float` or `None`, defaults to `None`):
            Blow-up guard: stop once the forget NLL exceeds this (nats); also bounds the best evaluation.
        max_retain_nll_increase (`float` or `None`, defaults to `None`):
            Blow-up guard: stop once the retain NLL exceeds (1 + this) x its value at the start (0.1 = +10%);
            also bounds the best evaluation.
        worst_case_attacks (`bool`, defaults to `False`):
            Also stop once every attack of the callback (`attacks`; by default LOSS, Min-K% and Min-K%++ at
            K = 10%..100%) has an AUC interval containing 0.5; stop as over-unlearning once an interval lies
            entirely below 0.5. Combine with `stop_at_target=False` to stop on attacks only.
        min_retain_nll_increase (`float`, defaults to `0.05`):
            Absolute floor of the retain guard (nats): the retain NLL may always rise this much, whatever
            `max_retain_nll_increase` allows relatively. On a memorised retain set (NLL 0.006) a relative limit
            alone calls +0.003 nats a blow-up; 0.05 nats is a 5% change of per-token perplexity.
        max_target_ratio (`float` or `None`, defaults to `10.0`):
            Blow-up guard: a forget NLL above this many times the target (or the start's forget NLL, when higher)
            is a destroyed model, not a target reached (gradient ascent at a huge learning rate jumps from 1.9 to
            2,394 nats against a 5.15 target).
        max_approximate_nll_ratio (`float` or `None`, defaults to `10.0`):
            Blow-up guard: the approximate (unseen) split's NLL above this many times its value at the start.
        max_earlier_nll_drop (`float` or `None`, defaults to `0.05`):
            Guard of earlier requests: an earlier forget set (splits `earlier_forget_<k>`) whose NLL falls below
            (1 - this) x its start, or that an attack separates again, came back (`hf_unlearn.earlier`): a failure.
        stop_at_step (`int` or `None`, defaults to `None`):
            Stop at the first evaluation at or after this optimizer step, and by no other rule than the guards:
            the target and the attacks do not decide (a step chosen on other data, e.g. by `hf-unlearn tune` on
            an unseen split, keeps this run's own evaluation out of the choice).
    """

    target_nll: float | None = None
    stop_at_target: bool = True
    loss_auc_tolerance: float | None = None
    max_forget_nll: float | None = None
    max_retain_nll_increase: float | None = None
    worst_case_attacks: bool = False  # then the newer fields: positional arguments keep their meaning
    min_retain_nll_increase: float = 0.05
    max_target_ratio: float | None = 10.0
    max_approximate_nll_ratio: float | None = 10.0
    max_earlier_nll_drop: float | None = 0.05
    stop_at_step: int | None = None

    def __post_init__(self):
        if self.stop_at_step is not None and self.stop_at_step < 1:
            raise ValueError(f"stop_at_step={self.stop_at_step} must be at least 1, or None for no fixed step.")
        for name in ("max_target_ratio", "max_approximate_nll_ratio"):
            value = getattr(self, name)
            if value is not None and not value > 1:
                raise ValueError(
                    f"{name}={value} must be above 1 (a ratio to the start / target) or None to disable it."
                )
        for name in ("loss_auc_tolerance", "max_retain_nll_increase", "min_retain_nll_increase"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name}={value} is negative; pass a value >= 0 or None to disable it.")

    def retain_limit(self, start: EvalRecord) -> float | None:
        """Highest retain NLL allowed, from its value at the start: (1 + `max_retain_nll_increase`) x start, at
        least start + `min_retain_nll_increase`; None without a limit or a retain split."""
        if self.max_retain_nll_increase is None or RETAIN not in start.nll:
            return None
        base = start.nll[RETAIN]
        return max((1 + self.max_retain_nll_increase) * base, base + self.min_retain_nll_increase)

    def failure(self, record: EvalRecord, start: EvalRecord, target: float | None = None) -> str | None:
        """Why `record` is a blow-up ("blow-up: ..."), or None: a non-finite value (an NLL or the AUC), the forget
        NLL above `max_forget_nll` or above `max_target_ratio` x `target`, the approximate NLL above
        `max_approximate_nll_ratio` x its start, or the retain NLL above its limit."""
        non_finite = record.non_finite()
        if non_finite:
            values = ", ".join(f"{name} {value}" for name, value in non_finite.items())
            return f"blow-up: non-finite values at step {record.step} ({values})"
        forget = record.nll[FORGET]
        if self.max_forget_nll is not None and forget > self.max_forget_nll:
            return f"blow-up: forget NLL {forget:.4f} > max_forget_nll {self.max_forget_nll}"
        if self.max_target_ratio is not None and target is not None:
            reference = max(target, start.nll[FORGET])  # a target below the start (e.g. 0: "stop at once") is no scale
            if forget > self.max_target_ratio * reference:
                return (
                    f"blow-up: forget NLL {forget:.4f} > {self.max_target_ratio} x {reference:.4f} (the target, or "
                    "the start's forget NLL when higher): a destroyed model, not a target reached"
                )
        ratio = self.max_approximate_nll_ratio
        if ratio is not None and APPROXIMATE in start.nll and APPROXIMATE in record.nll:
            if record.nll[APPROXIMATE] > ratio * start.nll[APPROXIMATE]:
                return (
                    f"blow-up: approximate (unseen) NLL {record.nll[APPROXIMATE]:.4f} > {ratio} x its start "
                    f"{start.nll[APPROXIMATE]:.4f}"
                )
        from .earlier import earlier_return

        came_back = earlier_return(record, start, self.max_earlier_nll_drop)
        if came_back is not None:
            return came_back
        limit = self.retain_limit(start)
        if limit is not None and record.nll[RETAIN] > limit:
            return (
                f"blow-up: retain NLL {record.nll[RETAIN]:.4f} > {limit:.4f} "
                f"(start {start.nll[RETAIN]:.4f} x (1 + {self.max_retain_nll_increase}))"
            )
        return None

    def within_limits(self, record: EvalRecord, start: EvalRecord, target: float | None = None) -> bool:
        """No `failure`: finite, and every NLL within its limit."""
        return self.failure(record, start, target) is None

    def stop_reason(self, record: EvalRecord, start: EvalRecord, target: float | None) -> str | None:
        """Why training should stop after `record` (None: keep going). Guard first (`failure`), then the target."""
        failure = self.failure(record, start, target)
        if failure is not None:
            return failure
        if self.stop_at_step is not None:
            if record.step >= self.stop_at_step:
                return f"fixed step reached: step {record.step} (stop_at_step {self.stop_at_step})"
            return None
        forget = record.nll[FORGET]
        if self.stop_at_target and target is not None and forget >= target:
            return f"target reached: forget NLL {forget:.4f} >= target {target:.4f}"
        tolerance = self.loss_auc_tolerance
        if tolerance is not None and record.mia_auc is not None and abs(record.mia_auc - 0.5) <= tolerance:
            return f"target reached (LOSS attack only): MIA AUC {record.mia_auc:.4f} within {tolerance} of 0.5"
        if self.worst_case_attacks:
            return worst_case_reason(record)
        return None

    def is_better(self, record: EvalRecord, best: EvalRecord | None, start: EvalRecord, target: float) -> bool:
        """Whether `record` beats `best`: after the start, within the limits and strictly closer to the target
        forget NLL. The start (the model before any update) is never better: saving it would ship the original."""
        if record is start or record.step <= start.step or not self.within_limits(record, start, target):
            return False
        return best is None or abs(record.nll[FORGET] - target) < abs(best.nll[FORGET] - target)


def worst_case_reason(record: EvalRecord) -> str | None:
    """The worst case over attacks: "over-unlearning: ..." when an attack's AUC interval lies entirely below 0.5,
    "target reached (every attack): ..." when every interval contains 0.5, None while one still lies above."""
    if not record.attacks:
        raise ValueError(
            f"The worst-case rule needs per-attack AUC intervals, but the record of step {record.step} has none: "
            "evaluate with an approximate split and UnlearningEvalCallback(attacks=...)."
        )
    below = {name: v for name, v in record.attacks.items() if v["auc_high"] < 0.5}
    if below:
        worst = min(below, key=lambda name: below[name]["auc_high"])
        return (
            f"over-unlearning: {len(below)} attack(s) with an AUC interval below 0.5, e.g. {worst} "
            f"[{below[worst]['auc_low']:.4f}, {below[worst]['auc_high']:.4f}] "
            "(the forget set looks less likely than unseen data)"
        )
    if all(v["auc_low"] <= 0.5 for v in record.attacks.values()):
        return f"target reached (every attack): all {len(record.attacks)} AUC intervals contain 0.5"
    return None
