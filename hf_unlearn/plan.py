"""What a run trains on: `run_plan(config, method_class)`, a pure function of the arguments and the method.

The trainer (which objectives it builds, whether it keeps retain data, loads a reference), the recipe (whether it
asks for retain data and passes it), `hf-unlearn methods` and the tests all read the same `RunPlan`, so a recipe
that composes objectives (`method: ga, retain_loss: nll`) gets the run it describes. The method class gives the
default objectives (`forget_loss` / `retain_loss` class attributes) and the config class whose defaults apply
(`hf_unlearn.config.resolve_unlearning_field`); the arguments' `forget_loss` / `retain_loss` override them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import resolve_unlearning_field
from .objectives import NO_RETAIN, Objective, get_objective

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
