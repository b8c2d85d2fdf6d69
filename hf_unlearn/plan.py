"""What a run trains on: `run_plan(config, method_class)`, a pure function of the arguments and the method.

The trainer (which objectives it builds, whether it keeps retain data, loads a reference), the recipe (whether it
asks for retain data and passes it), `hf-unlearn methods` and the tests all read the same `RunPlan`, so a recipe
that composes objectives (`method: ga, retain_loss: nll`) gets the run it describes. The method class gives the
default objectives (`forget_loss` / `retain_loss` class attributes) and the config class whose defaults apply
(`hf_unlearn.config.resolve_unlearning_field`); the arguments' `forget_loss` / `retain_loss` override them.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import UnlearningConfig, compose_config, resolve_unlearning_field
from .objectives import NO_RETAIN, Objective, get_objective
from .objectives.base import objectives_taking, param_fields

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from .trainer import UnlearningTrainer


@dataclass(frozen=True)
class RunPlan:
    """What one run trains on.

    Attributes:
        forget_loss / retain_loss: the objectives' names (`retain_loss` "none": no retain objective).
        forget_objective / retain_objective: their classes (None: no retain objective).
        uses_retain_data: the run pairs retain data with the forget set (it has a retain objective).
        needs_retain_data: training fails without retain data (a retain objective with retain_weight > 0).
        needs_reference: the frozen original model runs during training (an active objective reads it).
        precomputes_reference: the original model runs once before training, then is released.
    """

    forget_loss: str
    retain_loss: str
    forget_objective: type[Objective]
    retain_objective: type[Objective] | None
    uses_retain_data: bool
    needs_retain_data: bool
    needs_reference: bool
    precomputes_reference: bool

    @property
    def objectives(self) -> tuple[type[Objective], ...]:
        return tuple(o for o in (self.forget_objective, self.retain_objective) if o is not None)

    @property
    def reference(self) -> str:
        """How the run uses the original model: "yes" (during training), "once" (precomputed) or "no"."""
        return "yes" if self.needs_reference else ("once" if self.precomputes_reference else "no")


def run_plan(config: TrainingArguments | None, method_class: type[UnlearningTrainer]) -> RunPlan:
    """The `RunPlan` of `method_class` trained with `config` (None: the method's defaults); see the module docstring.

    Raises ValueError naming an unknown objective."""
    config_class = method_class.config_class

    def value(name: str):
        return resolve_unlearning_field(config, config_class, name)

    forget_loss = value("forget_loss") or method_class.forget_loss
    retain_loss = value("retain_loss") or method_class.retain_loss or NO_RETAIN
    forget = get_objective("forget", forget_loss)
    retain = get_objective("retain", retain_loss)
    weight = value("retain_weight")
    active = [o for o in (forget, retain) if o is not None and o.runs_with(weight)]
    return RunPlan(
        forget_loss=forget_loss,
        retain_loss=retain_loss,
        forget_objective=forget,
        retain_objective=retain,
        uses_retain_data=retain is not None,
        needs_retain_data=retain is not None and retain.runs_with(weight),
        needs_reference=any(o.needs_reference for o in active),
        precomputes_reference=any(o.precomputes for o in (forget, retain) if o is not None),
    )


def config_for(
    method: str | type[UnlearningTrainer], forget_loss: str | None = None, retain_loss: str | None = None
) -> type[UnlearningConfig]:
    """The config class of a run of `method` (a registered name or a trainer class) whose objectives `forget_loss`
    / `retain_loss` override the method's (None: the method's): the method's `config_class`, plus the fields of
    the overriding objectives it lacks (`method: ga_descent, forget_loss: npo` takes `npo_beta`). A subclass of the
    method's config class, so the method's defaults hold.

    Raises ValueError naming an unknown method or objective."""
    from .registry import get_method

    cls = get_method(method) if isinstance(method, str) else method
    plan = run_plan(None, cls)
    return _composed(cls, forget_loss or plan.forget_loss, retain_loss or plan.retain_loss)


@functools.cache
def _composed(cls: type[UnlearningTrainer], forget_loss: str, retain_loss: str) -> type[UnlearningConfig]:
    base = cls.config_class
    objectives = [get_objective("forget", forget_loss), get_objective("retain", retain_loss)]
    params = tuple(
        o.params for o in objectives if o is not None and set(param_fields(o)) - set(base.__dataclass_fields__)
    )
    if not params:
        return base
    name = f"{base.__name__}_{forget_loss}_{retain_loss}"
    composed = compose_config(
        name, base, params, {}, f"`{base.__name__}` with forget_loss {forget_loss!r} and retain_loss {retain_loss!r}."
    )
    setattr(sys.modules[composed.__module__], name, composed)  # found by name, like the methods' own classes
    return composed


def check_method_fields(names, config_class: type[UnlearningConfig]) -> None:
    """Raise ValueError, in one line, for the first of `names` that is an objective's hyperparameter but not a
    field of `config_class` (the run's objectives do not take it), naming the methods that take it."""
    from .registry import get_method, list_methods

    for name in names:
        owners = objectives_taking(name)
        if not owners or name in config_class.__dataclass_fields__:
            continue
        methods = [
            m for m in list_methods() if any(name in param_fields(o) for o in run_plan(None, get_method(m)).objectives)
        ]
        raise ValueError(
            f"{name} is a field of the objective(s) {', '.join(owners)} (method(s) {', '.join(methods) or 'none'}), "
            f"which this run does not train with ({config_class.__name__}); remove it or choose one of those "
            "methods (or forget_loss / retain_loss)."
        )
