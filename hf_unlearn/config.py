"""Configuration shared by every unlearning method.

`UnlearningConfig` extends `transformers.TrainingArguments`, so everything a `Trainer` user already sets
(output_dir, batch sizes, DeepSpeed, report_to, push_to_hub, ...) keeps working. Only the defaults that the
paper changes are overridden here. A method's hyperparameters live with its objectives (`params` of each file in
`hf_unlearn/objectives/`); a method's config class (`get_method(name).config_class`, `compose_config`) is this
class plus the fields of its objectives, with the method's defaults.

Defaults follow the released settings of Yao et al. 2024 ("Machine Unlearning of Pre-trained Large Language
Models", ACL 2024, github.com/yaojin17/Unlearning_LLM): lr 2e-5, cosine schedule, 3% warmup, no weight decay,
1 epoch, 4096-token chunks.
"""

from __future__ import annotations

import math
import os
from dataclasses import MISSING, Field, dataclass, field, fields, make_dataclass
from typing import Any, Callable, ClassVar

from transformers import TrainingArguments


def default_cache_dir(configured: str | None = None) -> str:
    """hf_unlearn's cache folder: `configured`, else $HF_UNLEARN_CACHE, else ~/.cache/hf_unlearn."""
    return (
        configured
        or os.environ.get("HF_UNLEARN_CACHE")
        or os.path.join(os.path.expanduser("~"), ".cache", "hf_unlearn")
    )


@dataclass
class UnlearningConfig(TrainingArguments):
    r"""
    Arguments shared by every unlearning method, on top of [`~transformers.TrainingArguments`].

    Method fields: the objectives' hyperparameters (e.g. `npo_beta`, `rmu_layer`) are not fields of this class but
    of each method's config class, which adds the fields of the method's objectives (`hf_unlearn.config_for(method,
    forget_loss=..., retain_loss=...)` for a composed run). Arguments that lack such a field give the objective's
    default.

    Method defaults: a method's own config class (`get_method(name).config_class`, e.g. `SimNPOConfig` with
    forget_weight 0.125, `RMUConfig` with retain_weight 1200) changes some of these defaults. A trainer given
    arguments of another class (a plain `TrainingArguments` or a subclass of it, this base class, another
    method's config) takes each field below that they lack, or that holds this base class's default, from its own
    method's config class (`resolve_unlearning_field`): `SimNPOTrainer(args=UnlearningConfig(...))` trains with
    forget_weight 0.125, like `SimNPOTrainer(args=SimNPOConfig(...))`. A value equal to this base class's default
    therefore means "the method's default" outside the method's config class; to train SimNPO with forget_weight
    1.0, pass `SimNPOConfig(forget_weight=1.0)`. The trainer keeps the arguments object it is given
    (`trainer.args`) and reads these fields from it when they are used (`trainer.unlearning_args`).

    Parameters:
        method (`str`, *optional*, defaults to `"ga"`):
            Name of the unlearning method (see `hf_unlearn.list_methods()`). Used by the recipes to pick the
            trainer; a trainer class built directly ignores it.
        forget_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the forget term in the total loss. The term itself is a token-weighted mean over the
            global (all processes, all accumulation steps) batch.
        retain_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the retain term (methods that use retain data). The paper weights forget and retain 1:1.
        max_length (`int`, *optional*, defaults to `4096`):
            Chunk length in tokens when documents are tokenized by `hf_unlearn.data` (the paper uses 4096).
        pairing_seed (`int`, *optional*, defaults to `0`):
            Seed of the permutation that pairs every forget example with a retain example. The pairing is a
            function of the forget example's global index, so it is deterministic, differs between processes
            (they hold different forget examples) and does not depend on the number of processes.
        cache_dir (`str` or `None`, *optional*, defaults to `None`):
            Folder in which per-example values precomputed from the original model (adversarial targets) are
            cached across runs, keyed by the weights and the data. `None` (default) writes nothing: the values are
            derived from the forget set, so they stay in memory for the run. `hf-unlearn traces` lists entries.
        forget_loss (`str` or `None`, *optional*, defaults to `None`):
            Forget objective (`hf_unlearn.objectives`): ga, random_label, adversarial, npo, simnpo, idk, idk_dpo,
            wga, satimp, undial, rmu, unseen_match. `None`: the method's.
        retain_loss (`str` or `None`, *optional*, defaults to `None`):
            Retain objective: none, nll, kl, rmu_retain. `None`: the method's. Every method is a preset of these two
            (e.g. ga_kl = ga + kl, npo = npo + nll).
        precompute_batch_size (`int`, *optional*, defaults to `8`):
            Batch size of the original model's forward passes that precompute per-example values (adversarial
            targets, reference log-probabilities) before training.
        loss_chunk_size (`int`, *optional*, defaults to `512`):
            Positions per chunk of the token-level losses (NLL, substitute targets, KL to the reference, UNDIAL,
            NPO's sequence log-probabilities, the precomputations): the model returns its final hidden states,
            the LM head runs on `loss_chunk_size` target positions at a time and backward recomputes each chunk's
            logits, so `[batch, seq, vocab]` logits never exist (peak: one chunk's, 512 x 128k x 4 B = 0.27 GB
            of float32 plus its softmax temporaries). Prompt and padding positions are never computed. `0`: full
            logits, kept for backward. Same results either way (up to float32 summation order). 512: on CPU
            (1 thread, 2 x 1024 positions, fwd + bwd of the NLL) chunks of 256-1024 cost 1.09-1.37x the full-logits
            loss at vocab 32k / hidden 256 and 0.74x at vocab 128k / hidden 64; see `docs/memory_plan.md`.
        backward_per_objective (`bool`, *optional*, defaults to `True`):
            In a single process without DeepSpeed / FSDP, run the forget term's backward pass before the retain
            term's forward pass within each micro-batch (methods with a retain term: ga_descent, ga_kl, npo, ...),
            so that the two streams' graphs are never alive together. The gradient is the same sum; multi-process
            and DeepSpeed runs keep one backward per micro-batch (their engines require it).
        loss_gradient_in_forward (`bool`, *optional*, defaults to `True`):
            With `loss_chunk_size > 0`, in one process or under DDP, without DeepSpeed / FSDP / DataParallel /
            LOMO: the summed token losses (NLL, substitute targets, KL to the reference, UNDIAL, WGA / SatImp)
            compute each chunk's gradient with respect to the final hidden states and the LM head's weights right
            after its logits, so backward does not recompute them (the head's forward matmul runs once per chunk
            instead of twice). The gradient buffers (the size of the hidden states and of the trainable LM head)
            become the gradients autograd accumulates in backward; with `backward_per_objective` off they stay
            alive during the retain stream's forward pass. Same gradient either way (up to float32 summation
            order). NPO, SimNPO and IdkDPO's per-sequence terms always recompute (a token's weight depends on its
            whole sequence).
    """

    method: str = field(
        default="ga",
        metadata={"help": "Unlearning method name, e.g. ga, random_label, adversarial, ga_descent, ga_kl."},
    )
    forget_weight: float = field(
        default=1.0, metadata={"help": "Weight of the forget term (token-weighted mean over the global batch)."}
    )
    retain_weight: float = field(
        default=1.0, metadata={"help": "Weight of the retain term; the paper weights forget and retain 1:1."}
    )
    max_length: int = field(default=4096, metadata={"help": "Chunk length in tokens (paper: 4096)."})
    pairing_seed: int = field(default=0, metadata={"help": "Seed of the forget/retain pairing permutation."})
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Cache folder for values precomputed from the original model; None writes nothing."},
    )
    forget_loss: str | None = field(
        default=None, metadata={"help": "Forget objective (hf-unlearn methods lists them); None = the method's."}
    )
    retain_loss: str | None = field(
        default=None, metadata={"help": "Retain objective: none, nll, kl or rmu_retain; None = the method's."}
    )
    precompute_batch_size: int = field(
        default=8, metadata={"help": "Batch size of the original model when precomputing per-example values."}
    )
    loss_chunk_size: int = field(
        default=512,
        metadata={
            "help": "Positions per chunk of the token-level losses (logits never materialised); 0 = full logits."
        },
    )
    backward_per_objective: bool = field(
        default=True,
        metadata={"help": "Single process: backward of the forget term before the retain term's forward pass."},
    )
    loss_gradient_in_forward: bool = field(
        default=True,
        metadata={"help": "Chunked, one process or DDP: summed losses compute their gradient in the forward pass."},
    )
    adversarial_batch_size: int | None = field(
        default=None, metadata={"help": "Alias of precompute_batch_size, read when that is not set."}
    )

    # The `params` dataclasses of the objectives whose fields this class carries (validated by `__post_init__`).
    params_classes: ClassVar[tuple[type, ...]] = ()

    # Paper defaults (released code): lr 2e-5, cosine, 3% warmup, no weight decay, one epoch.
    learning_rate: float = field(default=2e-5, metadata={"help": "Initial learning rate (paper: 2e-5)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "LR schedule (paper: cosine)."})
    warmup_steps: float = field(default=0.03, metadata={"help": "Warmup as a ratio of total steps (paper: 0.03)."})
    weight_decay: float = field(default=0.0, metadata={"help": "Weight decay (paper: none)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the forget set (paper: 1)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N optimizer steps."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpoint strategy: no, steps or epoch."})

    def __post_init__(self):
        if self.output_dir is None:
            self.output_dir = "outputs/unlearned"
        super().__post_init__()
        for name in ("forget_weight", "retain_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"{name}={value!r} is not a finite number >= 0; use a weight such as 1.0 (the sign is part of the method)."
                )
        if self.label_smoothing_factor:
            raise ValueError(
                f"label_smoothing_factor={self.label_smoothing_factor}: the unlearning losses do not smooth labels (it "
                "would change the objective silently); set it to 0."
            )
        if self.adversarial_batch_size is not None:
            self.precompute_batch_size = self.adversarial_batch_size
        if self.precompute_batch_size < 1:
            raise ValueError(f"precompute_batch_size={self.precompute_batch_size} must be at least 1.")
        if self.loss_chunk_size < 0:
            raise ValueError(f"loss_chunk_size={self.loss_chunk_size} must be >= 0 (0: full logits).")
        if self.max_length < 2:
            raise ValueError(f"max_length={self.max_length} is too small; a chunk needs at least 2 tokens.")
        for params in self.params_classes:  # each objective checks its own values
            params(**{f.name: getattr(self, f.name) for f in fields(params)})
        check_training_schedule(self)


def check_training_schedule(args) -> None:
    """One-line errors for a schedule that cannot train, or trains nothing and would save the untouched model as
    the unlearned result: batch sizes and accumulation below 1, a negative learning rate, `max_steps` 0, and
    `num_train_epochs` <= 0 when it decides the length (`max_steps` -1)."""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        value = getattr(args, name)
        if isinstance(value, int) and value < 1:
            raise ValueError(f"{name}={value} must be at least 1; use e.g. --{name} 1.")
    if isinstance(args.learning_rate, (int, float)) and args.learning_rate < 0:
        raise ValueError(
            f"learning_rate={args.learning_rate} is negative; use a learning rate >= 0 such as 1e-5 (the direction "
            "of each term is part of the method)."
        )
    if args.max_steps == 0:
        raise ValueError(
            "max_steps=0 trains nothing (the untouched model would be saved as the result); use a positive number "
            "of steps, or -1 to train num_train_epochs epochs."
        )
    if args.max_steps < 0 and isinstance(args.num_train_epochs, (int, float)) and not args.num_train_epochs > 0:
        raise ValueError(
            f"num_train_epochs={args.num_train_epochs} trains nothing (the untouched model would be saved as the "
            "result); use a positive number of epochs such as 1, or a positive max_steps."
        )


def compose_config(
    class_name: str,
    base: type[UnlearningConfig],
    params_classes: tuple[type, ...],
    defaults: dict[str, Any],
    doc: str,
) -> type[UnlearningConfig]:
    """A dataclass subclass of `base` with the fields of `params_classes` (the objectives' hyperparameters, each
    field once, fields `base` has already skipped) and the given fields' defaults changed (`method` among them)."""
    known = base.__dataclass_fields__
    added: list[tuple[str, Any, Field]] = []
    for params in params_classes:
        for definition in fields(params):
            if definition.name in known or any(name == definition.name for name, _, _ in added):
                continue
            added.append(
                (definition.name, definition.type, field(default=_default(definition), metadata=definition.metadata))
            )
    for name, value in defaults.items():
        definition = known.get(name) or next(f for n, _, f in added if n == name)
        help_text = definition.metadata.get("help", "")
        added = [item for item in added if item[0] != name]
        added.append(
            (
                name,
                type(value) if value is not None else definition.type,
                field(default=value, metadata={"help": help_text}),
            )
        )
    classes = tuple(dict.fromkeys((*base.params_classes, *params_classes)))
    cls = make_dataclass(class_name, added, bases=(base,), namespace={"params_classes": classes})
    cls.__doc__ = doc
    cls.__module__ = "hf_unlearn.methods"
    return cls


def _default(definition: Field) -> Any:
    if definition.default is not MISSING:
        return definition.default
    if definition.default_factory is not MISSING:
        return definition.default_factory()
    return None


def unlearning_fields(config_class: type[UnlearningConfig] = UnlearningConfig) -> dict[str, Field]:
    """The fields `config_class` adds to `TrainingArguments` (the unlearning fields), by name."""
    base = TrainingArguments.__dataclass_fields__
    return {name: f for name, f in config_class.__dataclass_fields__.items() if f.init and name not in base}


def resolve_unlearning_field(args: TrainingArguments | None, config_class: type[UnlearningConfig], name: str) -> Any:
    """The value of the unlearning field `name` for a method whose config class is `config_class`, given `args`.

    `args` an instance of `config_class`: its value. Otherwise (see `UnlearningConfig`'s "Method defaults"):
    `config_class`'s default where `args` lacks the field, or holds `UnlearningConfig`'s default for a field whose
    default `config_class` changes; else `args`'s value."""
    if args is not None and isinstance(args, config_class):
        return getattr(args, name)
    definition = config_class.__dataclass_fields__[name]
    if args is None or not hasattr(args, name):
        return _default(definition)
    value = getattr(args, name)
    base = UnlearningConfig.__dataclass_fields__.get(name)
    if base is not None and name != "method" and _default(definition) != _default(base) and value == _default(base):
        return _default(definition)
    return value


class UnlearningArguments:
    """The arguments of a run as its method reads them: the unlearning fields resolved by
    `resolve_unlearning_field` for the method's config class, every other attribute read from the arguments
    object. Read through at each access, so edits to `trainer.args` (a callback, a hyperparameter-search trial)
    take effect; read-only (set fields on `trainer.args`)."""

    __slots__ = ("_source", "_config_class", "_fields")

    def __init__(self, source: Callable[[], TrainingArguments | None], config_class: type[UnlearningConfig]):
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "_config_class", config_class)
        object.__setattr__(self, "_fields", unlearning_fields(config_class))

    def __getattr__(self, name: str) -> Any:
        args = self._source()
        if name in self._fields:
            return resolve_unlearning_field(args, self._config_class, name)
        if not hasattr(args, name):
            from .objectives.base import PARAM_FIELDS, field_default

            if name in PARAM_FIELDS:  # an objective's hyperparameter the arguments lack: the objective's default
                return field_default(PARAM_FIELDS[name])
        return getattr(args, name)

    def declares(self, name: str) -> bool:
        """Whether the method's config class or the arguments object has the field `name`."""
        return name in self._fields or hasattr(self._source(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"UnlearningArguments are read-only; set `trainer.args.{name} = {value!r}` instead.")

    def values(self) -> dict[str, Any]:
        """Every unlearning field's resolved value, by name: the config class's and every registered objective's
        hyperparameters."""
        from .objectives.base import PARAM_FIELDS

        return {
            name: getattr(self, name) for name in (*self._fields, *(n for n in PARAM_FIELDS if n not in self._fields))
        }
