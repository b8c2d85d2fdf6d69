"""Earlier requests stay forgotten: earlier forget sets evaluated alongside the new one.

A run may be given the forget sets of the model's earlier requests (the user keeps them, or a sample). They are
splits `earlier_forget_1`, `earlier_forget_2`, ... of `UnlearningEvalCallback`: scored at every evaluation with
the same interval and the same membership attacks (each earlier set against the unseen data) as the new forget
set. An earlier set **comes back** at an evaluation when

- its NLL falls below `(1 - max_earlier_nll_drop)` x its NLL at the start of this run (default 0.05: 5% below
  the level the earlier requests left it at), or
- an attack's AUC interval (earlier set against unseen data) lies entirely above 0.5 while none did at the start
  (it looks like training data again).

`StoppingCriteria.failure` treats a return as a failure of the run (the recipe then exits with status 3 and saves
nothing); `max_earlier_nll_drop=None` turns the rule off. Every number stays in the local logs; the card, the
manifest and the ledger carry none of them (the ledger counts the sets checked).
"""

from __future__ import annotations

EARLIER_PREFIX = "earlier_forget_"


def earlier_split(index: int) -> str:
    """The split name of the `index`-th (from 1) earlier forget set."""
    return f"{EARLIER_PREFIX}{index}"


def earlier_names(names) -> list[str]:
    """The earlier forget sets among split names, in order."""
    return sorted((n for n in names if n.startswith(EARLIER_PREFIX)), key=lambda n: int(n[len(EARLIER_PREFIX) :]))


def _separable(attacks: dict[str, dict[str, float]] | None) -> list[str]:
    return [name for name, values in (attacks or {}).items() if values["auc_low"] > 0.5]


def earlier_return(record, start, max_nll_drop: float | None) -> str | None:
    """Why an earlier forget set came back at `record` ("earlier forget set k came back: ..."), or None; see the
    module docstring. `record.earlier_attacks` holds each set's attack intervals (None without attacks)."""
    if max_nll_drop is None:
        return None
    for name in earlier_names(start.nll):
        if name not in record.nll:
            continue
        label = f"earlier forget set {name[len(EARLIER_PREFIX) :]}"
        floor = (1 - max_nll_drop) * start.nll[name]
        if record.nll[name] < floor:
            return (
                f"{label} came back: its NLL fell more than {max_nll_drop:.0%} below its level at the start of this "
                f"run (max_earlier_nll_drop={max_nll_drop})"
            )
        now = _separable((record.earlier_attacks or {}).get(name))
        if now and not _separable((start.earlier_attacks or {}).get(name)):
            return (
                f"{label} came back: the {now[0]} attack separates it from unseen data again (AUC interval above "
                "0.5, none was at the start of this run)"
            )
    return None


__all__ = ["EARLIER_PREFIX", "earlier_names", "earlier_return", "earlier_split"]
