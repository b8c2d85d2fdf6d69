"""What an objective is: one part of an unlearning loss, reading one stream, returning named loss terms.

A method is a forget objective plus a retain objective (`UnlearningConfig.forget_loss` / `retain_loss`), the way
trl's `loss_type` picks a loss. Each objective declares up front what the trainer needs to know before training:

- `stream`: which stream of the batch it reads ("forget", "retain", later "idk", ...);
- `terms`: the names of the loss terms it returns (logged as token- or sequence-weighted means);
- `normalisers`: the counts its terms are divided by ("<stream>_tokens" or "<stream>_sequences"), which the
  trainer counts over the global batch (all micro-batches of an optimizer step, all processes);
- `token_columns` / `example_columns`: per-token columns (e.g. `random_labels`, padded by the collator) and
  per-example numbers (e.g. a reference log-probability) it adds to its stream's examples;
- `needs_reference`: whether it runs the frozen original model during training;
- `passes()`: the forward passes it reads (`Pass`: which model, on which stream, logits or a decoder layer's
  output), which the trainer runs and hands to `loss_terms` as tensors;
- `params`: its hyperparameters, a dataclass defined next to its formula (e.g. `NPOParams(npo_beta=0.1)`): each
  field is a typed, documented argument of every method config that runs the objective (`hf_unlearn.config_for`),
  read as `self.args.<field>`; arguments that lack the field give the dataclass's default.

`prepare` may add those columns before training (precomputed once, see `hf_unlearn.precompute`); `loss_terms`
computes the terms of one micro-batch from the stream's batch and the outputs of its passes: a pure function of
tensors, which a test can call with any model's outputs (in training, `UnlearningTrainer.run_passes` computes them).
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, fields
from typing import Any, ClassVar, Protocol

import torch

from ..losses import TokenLogits
from ..reference import OriginalModel


class RunSetup(Protocol):
    """What an objective may read while a run is prepared (`UnlearningTrainer` provides it): in `__init__`,
    `prepare`, `aligned_streams` and `configure_model`. A training step reads none of it: `loss_terms` gets tensors.
    """

    unlearning_args: Any  # the method's settings (`UnlearningArguments`)
    args: Any  # the `TrainingArguments` (device, the config's class for messages)
    processing_class: Any  # the tokenizer
    accelerator: Any  # processes, for sharded precomputation
    original: OriginalModel  # the frozen original model, for one-off precomputations
    pad_token_id: int
    unseen_dataset: Any
    retain_dataset: Any

    def policy_config(self) -> Any:
        """The policy's text config (vocabulary size, layers, hidden size)."""


POLICY = "policy"
REFERENCE = "reference"


@dataclass(frozen=True)
class Pass:
    """One forward pass an objective reads; the trainer runs it and hands its output to `loss_terms`.

    Attributes:
        stream: the stream of the micro-batch it runs on ("forget", "retain", "idk", ...).
        model: "policy" (the model being unlearned, with gradients) or "reference" (the frozen original model,
            without gradients).
        layer: None for the token logits (a `TokenLogits`: full logits, or the final hidden states with the output
            head when the losses are chunked); a 0-based decoder layer index for that layer's output
            `[batch, seq, hidden]`.
    """

    stream: str
    model: str = POLICY
    layer: int | None = None

    def __post_init__(self):
        if self.model not in (POLICY, REFERENCE):
            raise ValueError(f"Pass.model must be {POLICY!r} or {REFERENCE!r}, not {self.model!r}.")


Outputs = dict[str, TokenLogits | torch.Tensor]  # a pass's name -> its output


@dataclass
class LossTerm:
    """One term of an unlearning loss.

    Attributes:
        value: sum of the term over this micro-batch's units (tokens or sequences), a scalar tensor.
        count: number of those units in this micro-batch (for the logged mean).
        normaliser: the global count that divides the term in the loss, e.g. "forget_tokens" or "retain_sequences"
            ("forget" and "retain" are accepted as short for "<stream>_tokens").
        weight: multiplier in the total loss; 0 means the term is only logged.
    """

    value: torch.Tensor
    count: torch.Tensor
    normaliser: str
    weight: float

    def __post_init__(self):
        if self.normaliser in ("forget", "retain"):
            self.normaliser = f"{self.normaliser}_tokens"


class Objective:
    """Base class of forget and retain objectives; see the module docstring."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""  # "forget" or "retain"
    stream: ClassVar[str] = ""
    terms: ClassVar[tuple[str, ...]] = ()
    normalisers: ClassVar[tuple[str, ...]] = ()
    token_columns: ClassVar[tuple[str, ...]] = ()
    example_columns: ClassVar[tuple[str, ...]] = ()
    aligned: ClassVar[tuple[str, ...]] = ()  # names of the streams `aligned_streams` builds
    needs_reference: ClassVar[bool] = False
    reads_unseen: ClassVar[bool] = False  # takes target levels from the trainer's `unseen_dataset`
    precomputes: ClassVar[bool] = False  # runs the original model once before training (then releases it)
    params: ClassVar[type | None] = None  # the objective's hyperparameters (a dataclass), see the module docstring

    def __init__(self, setup: RunSetup):
        self.setup = setup
        self.args = setup.unlearning_args

    def prepare(self, dataset: Any) -> Any:
        """Add this objective's precomputed columns to its stream's dataset (default: nothing to add)."""
        return dataset

    def aligned_streams(self, forget: Any) -> dict[str, Any]:
        """Further streams built one-to-one from the (prepared) forget set, e.g. IDK answers (default: none)."""
        return {}

    def configure_model(self, model: torch.nn.Module) -> None:
        """Change the model before the optimizer exists, e.g. freeze parameters (default: nothing)."""

    def select(self, inputs: dict[str, dict[str, torch.Tensor]]) -> Any:
        """What `loss_terms` receives from the micro-batch `{stream: batch}`: by default its own stream's batch."""
        return inputs[self.stream]

    def passes(self) -> dict[str, Pass]:
        """The forward passes `loss_terms` reads, by the name it reads each under, in the order they run. Default:
        the policy's token logits on its own stream ("logits"), after the original model's ("reference") when
        `needs_reference`."""
        passes = {"reference": Pass(self.stream, REFERENCE)} if self.needs_reference else {}
        passes["logits"] = Pass(self.stream)
        return passes

    def loss_terms(self, batch: Any, outputs: Outputs) -> dict[str, LossTerm]:
        """The terms of one micro-batch: `batch` is what `select` gives, `outputs` the outputs of `passes()`."""
        raise NotImplementedError

    @property
    def chunk_size(self) -> int:
        """Positions per chunk of the token-level losses (`UnlearningConfig.loss_chunk_size`; 0: full logits)."""
        return getattr(self.args, "loss_chunk_size", 0)

    @classmethod
    def runs_with(cls, retain_weight: float) -> bool:
        """Whether the objective runs at this retain_weight: a retain objective with retain_weight 0 does not (forget
        objectives always run: their logged terms show what happens to the forget set even at forget_weight 0)."""
        return cls.kind == "forget" or retain_weight > 0

    def active(self) -> bool:
        """Whether the objective runs this step (`runs_with` the current retain_weight)."""
        return self.runs_with(self.args.retain_weight)

    def uses_reference_in_training(self) -> bool:
        """Whether the frozen model runs during training (not when the objective is inactive)."""
        return self.needs_reference and self.active()


FORGET_OBJECTIVES: dict[str, type[Objective]] = {}
RETAIN_OBJECTIVES: dict[str, type[Objective]] = {}
NO_RETAIN = "none"


def register_objective(name: str):
    """Class decorator registering a forget or retain objective (by its `kind`) under `name`."""

    def decorator(cls: type[Objective]) -> type[Objective]:
        registry = {"forget": FORGET_OBJECTIVES, "retain": RETAIN_OBJECTIVES}[cls.kind]
        if name in registry or name == NO_RETAIN:
            raise ValueError(f"A {cls.kind} objective named {name!r} is already registered; choose another name.")
        for definition in param_fields(cls).values():
            known = PARAM_FIELDS.get(definition.name)
            if known is not None and field_default(known) != field_default(definition):
                raise ValueError(
                    f"Objective {name!r} declares `{definition.name}` with default {field_default(definition)!r}, "
                    f"which another objective declares with {field_default(known)!r}; rename the field."
                )
        cls.name = name
        registry[name] = cls
        PARAM_FIELDS.update(param_fields(cls))
        return cls

    return decorator


PARAM_FIELDS: dict[str, Field] = {}  # every registered objective's hyperparameter fields, by name


def field_default(definition: Field) -> Any:
    """A dataclass field's default value (its factory's value; None without either)."""
    if definition.default is not MISSING:
        return definition.default
    if definition.default_factory is not MISSING:
        return definition.default_factory()
    return None


def param_fields(objective: type[Objective] | None) -> dict[str, Field]:
    """The hyperparameter fields of `objective` (its `params` dataclass), by name; {} without one."""
    if objective is None or objective.params is None:
        return {}
    return {f.name: f for f in fields(objective.params)}


def objectives_taking(name: str) -> list[str]:
    """The names of the registered objectives whose `params` have the field `name`."""
    return [
        objective.name
        for registry in (FORGET_OBJECTIVES, RETAIN_OBJECTIVES)
        for objective in registry.values()
        if name in param_fields(objective)
    ]


def get_objective(kind: str, name: str) -> type[Objective] | None:
    """The objective class of `kind` ("forget" / "retain") named `name`; None for retain "none"."""
    registry = {"forget": FORGET_OBJECTIVES, "retain": RETAIN_OBJECTIVES}[kind]
    if kind == "retain" and name == NO_RETAIN:
        return None
    if name not in registry:
        choices = list(registry) + ([NO_RETAIN] if kind == "retain" else [])
        raise ValueError(f"Unknown {kind}_loss {name!r}; choose one of {', '.join(choices)}.")
    return registry[name]
