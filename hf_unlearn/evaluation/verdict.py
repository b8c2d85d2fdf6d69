"""Whether the forget set is forgotten, from membership-inference AUC intervals (forget vs unseen data).

Every function takes attacks as `{attack: {"auc", "auc_low", "auc_high"}}` (the interval ends of a bootstrap, nan
when none was computed), as `EvalRecord.attacks` holds them; `report_attacks` reads them from an evaluation's
metrics (`membership_inference.attacks`, whose intervals are `auc_ci` pairs). An attack without a finite interval
decides nothing.

- over-unlearned: an attack's interval lies entirely below 0.5 (the forget set now looks *less* likely than
  unseen data, itself a detectable signal: not a success);
- not forgotten: an attack's interval lies entirely above 0.5 (it still separates forget from unseen data);
- forgotten: every interval contains 0.5, and the starting model's LOSS interval did not (the gap was there);
- cannot tell: every interval contains 0.5 but the gap was never established (the starting model's LOSS
  interval contains 0.5, or there is no starting model to compare with).

When intervals lie on both sides, the one farthest from 0.5 decides the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FORGOTTEN, NOT_FORGOTTEN, OVER_UNLEARNED, CANNOT_TELL = "forgotten", "not forgotten", "over-unlearned", "cannot tell"

Attacks = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class Verdict:
    """One of `FORGOTTEN`, `NOT_FORGOTTEN`, `OVER_UNLEARNED`, `CANNOT_TELL`, with its reason in one sentence."""

    label: str
    reason: str

    def __str__(self) -> str:
        return f"{self.label.upper()}: {self.reason}"


def format_auc(summary: Mapping[str, float]) -> str:
    """ "0.801 [0.640, 0.930]" (the AUC alone when the interval was not computed)."""
    low, high = summary.get("auc_low", math.nan), summary.get("auc_high", math.nan)
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{summary['auc']:.3f}"
    return f"{summary['auc']:.3f} [{low:.3f}, {high:.3f}]"


def strongest_attack(attacks: Attacks | None) -> str | None:
    """Name of the attack with the largest |AUC - 0.5| (None without attacks); LOSS wins ties."""
    if not attacks:
        return None
    names = sorted(attacks, key=lambda name: name != "loss")  # stable: LOSS first, then the given order
    return max(names, key=lambda name: abs(attacks[name]["auc"] - 0.5))


def _with_intervals(attacks: Attacks | None) -> dict[str, Mapping[str, float]]:
    return {
        name: v
        for name, v in (attacks or {}).items()
        if math.isfinite(v.get("auc_low", math.nan)) and math.isfinite(v.get("auc_high", math.nan))
    }


def gap_established(start: Attacks | None) -> bool | None:
    """Whether the starting model's LOSS interval excludes 0.5 (the forget/unseen gap is there to remove); None
    when it was not measured."""
    loss = _with_intervals(start).get("loss")
    if loss is None:
        return None
    return not loss["auc_low"] <= 0.5 <= loss["auc_high"]


def gap_warning(start: Attacks | None) -> str | None:
    """The plain warning when the starting LOSS AUC interval contains 0.5 (the forget/unseen gap is not
    established, so a stopping rule has nothing to measure); None when the gap is established or unmeasured."""
    if gap_established(start) is not False:
        return None
    loss = start["loss"]
    return (
        f"WARNING: before unlearning, the LOSS attack's AUC interval [{loss['auc_low']:.3f}, {loss['auc_high']:.3f}] "
        "contains 0.5: the forget/unseen gap is not established on this data, so the stopping rule has nothing to "
        "measure and 'forgotten' below means little. Use more forget and unseen (approximate) examples."
    )


def _over_unlearned(below: Attacks, total: int) -> str:
    name = min(below, key=lambda n: below[n]["auc_high"])
    return (
        f"{len(below)} of {total} attacks have an AUC interval entirely below 0.5 (e.g. {name} "
        f"{format_auc(below[name])}): the forget set now looks less likely than unseen data, which is itself a "
        "detectable signal."
    )


def _not_forgotten(above: Attacks, total: int) -> str:
    name = max(above, key=lambda n: above[n]["auc_low"])
    return (
        f"{len(above)} of {total} attacks still separate forget from unseen data (AUC interval entirely above 0.5, "
        f"e.g. {name} {format_auc(above[name])})."
    )


def _indistinguishable(total: int) -> str:
    return f"All {total} attacks' AUC intervals contain 0.5: indistinguishable from unseen data at this sample size."


def verdict_lines(attacks: Attacks | None) -> str | None:
    """What the attacks say after unlearning, one line per finding: over-unlearned (an interval entirely below 0.5,
    not a success), still separated (an interval entirely above 0.5), or indistinguishable (every interval
    contains 0.5). None without intervals."""
    attacks = _with_intervals(attacks)
    if not attacks:
        return None
    below = {name: v for name, v in attacks.items() if v["auc_high"] < 0.5}
    above = {name: v for name, v in attacks.items() if v["auc_low"] > 0.5}
    lines = []
    if below:
        lines.append(f"OVER-UNLEARNED (not a success): {_over_unlearned(below, len(attacks))}")
    if above:
        lines.append(f"NOT FORGOTTEN by every attack: {_not_forgotten(above, len(attacks))}")
    if not lines:
        lines.append(_indistinguishable(len(attacks)))
    return "\n".join(lines)


def conclude(attacks: Attacks | None, start: Attacks | None = None) -> Verdict | None:
    """The verdict of `attacks` (see the module docstring); `start`: the attacks on the model before unlearning,
    which establish the gap (None: no such model, so 'every interval contains 0.5' cannot tell). None without
    intervals."""
    attacks = _with_intervals(attacks)
    if not attacks:
        return None
    below = {name: v for name, v in attacks.items() if v["auc_high"] < 0.5}
    above = {name: v for name, v in attacks.items() if v["auc_low"] > 0.5}
    if below or above:
        margin_below = max((0.5 - v["auc_high"] for v in below.values()), default=-1.0)
        margin_above = max((v["auc_low"] - 0.5 for v in above.values()), default=-1.0)
        if margin_below > margin_above:
            return Verdict(OVER_UNLEARNED, _over_unlearned(below, len(attacks)))
        return Verdict(NOT_FORGOTTEN, _not_forgotten(above, len(attacks)))
    established = gap_established(start)
    if established:
        return Verdict(FORGOTTEN, _indistinguishable(len(attacks)))
    if established is False:
        loss = start["loss"]
        return Verdict(
            CANNOT_TELL,
            (
                f"every AUC interval contains 0.5, but so does the original model's LOSS interval [{loss['auc_low']:.3f}, "
                f"{loss['auc_high']:.3f}]: the forget/unseen gap was never established; use more forget and unseen examples."
            ),
        )
    return Verdict(
        CANNOT_TELL,
        "every AUC interval contains 0.5, but no original model was evaluated to show a "
        "forget/unseen gap to remove; evaluate the original model too (first).",
    )


def report_attacks(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """`{attack: {"auc", "auc_low", "auc_high"}}` of an evaluation's metrics (`ModelEvaluation.metrics`); empty
    without membership inference."""
    out = {}
    for name, row in metrics.get("membership_inference", {}).get("attacks", {}).items():
        low, high = row.get("auc_ci") or (math.nan, math.nan)
        out[name] = {"auc": row["auc"], "auc_low": low, "auc_high": high}
    return out


def missed_window(history: list[tuple[int, Attacks | None]]) -> str | None:
    """Why a run that ends over-unlearned never was forgotten by every attack, from `(step, attacks)` of each
    evaluation in order: when no evaluation had every interval containing 0.5 and the last one before the first
    over-unlearned evaluation still had an interval above 0.5, the attacks disagree on this data (one family still
    separates while another already finds the forget set less likely than unseen data), said with both attacks'
    numbers. None when the run was forgotten at some evaluation, never over-unlearned, or has no intervals."""
    checked = [(step, _with_intervals(attacks)) for step, attacks in history]
    checked = [(step, attacks) for step, attacks in checked if attacks]
    if any(all(v["auc_low"] <= 0.5 <= v["auc_high"] for v in attacks.values()) for _, attacks in checked):
        return None
    first_below = next(
        (i for i, (_, attacks) in enumerate(checked) if any(v["auc_high"] < 0.5 for v in attacks.values())), None
    )
    if not first_below:  # never over-unlearned, or already at the first evaluation
        return None
    step_above, above = checked[first_below - 1]
    step_below, below = checked[first_below]
    still = {name: v for name, v in above.items() if v["auc_low"] > 0.5}
    if not still:
        return None
    name_above = max(still, key=lambda n: still[n]["auc_low"])
    name_below = min((n for n in below if below[n]["auc_high"] < 0.5), key=lambda n: below[n]["auc_high"])
    return (
        f"No evaluation was forgotten by every attack: at step {step_above} {name_above} still separated the sets "
        f"({format_auc(still[name_above])}), at step {step_below} {name_below} already put the forget set below unseen "
        f"data ({format_auc(below[name_below])}). The attacks disagree on this data, so it cannot support a "
        "'forgotten by every attack' verdict at this sample size; more forget and unseen examples narrow the intervals."
    )
