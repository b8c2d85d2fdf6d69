"""`UnlearningTrainer`: the `transformers.Trainer` subclass every method is.

It is a drop-in replacement: same constructor (plus keyword-only `retain_dataset`, `ref_model`, `peft_config`),
same `TrainingArguments`, callbacks, logging, checkpoints and `push_to_hub`. The forget set is the
`train_dataset`. A method is a forget objective plus a retain objective (`hf_unlearn.objectives`); the paper's
methods are presets (`hf_unlearn.methods`), and `UnlearningConfig.forget_loss` / `retain_loss` compose others.

One optimizer step's loss is

    loss = sum_terms  weight * (sum of the term over the global batch) / (its normaliser's global count)

where the global batch is every micro-batch of the step on every process, and a normaliser is a count such as the
forget stream's target tokens or the retain stream's sequences. `get_batch_samples` counts every declared
normaliser over the step's micro-batches and all-reduces them once; the counts travel to `compute_loss` as its
`num_items_in_batch` argument, so nothing survives the step. Each process returns its share,
`weight * local_sum / global_count * num_processes`, because DDP and DeepSpeed average gradients over processes.
The result does not depend on gradient accumulation, the number of processes, or the padding side.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
import transformers
from accelerate.utils.memory import clear_device_cache
from packaging import version
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments

from .config import UnlearningArguments, UnlearningConfig
from .data import check_examples_fit_model, check_tokenizer, tokenize_if_raw
from .forward import ForwardOutput, forward
from .hub import HubMixin
from .losses import count_positions, count_sequences, count_targets, nll_sum
from .objectives import NO_RETAIN, POLICY, LossTerm, Objective, Outputs
from .plan import RunPlan, run_plan
from .reference import OriginalModel
from .streams import FORGET, RETAIN, StreamDataset, UnlearningCollator, is_stream_example

logger = logging.getLogger(__name__)

# `Trainer.loss_is_scaled_for_ga` (a loss already divided for gradient accumulation is not divided again) is honoured
# from this release on; before it, every unlearning loss would be divided by the accumulation steps a second time.
MIN_TRANSFORMERS = "5.19.0"


def check_transformers_version(installed: str = transformers.__version__) -> None:
    """Fail with the fix when transformers is older than `MIN_TRANSFORMERS`."""
    if version.parse(installed) < version.parse(MIN_TRANSFORMERS):
        raise ImportError(
            f"hf_unlearn needs transformers>={MIN_TRANSFORMERS} (found {installed}): older releases divide the "
            f"unlearning loss by the gradient-accumulation steps twice. Run `pip install -U 'transformers>={MIN_TRANSFORMERS}'`."
        )


check_transformers_version()


# How a normaliser "<stream>_<unit>" counts one stream's batch: next-token targets, sequences with at least one
# target, or labelled real positions (representation losses).
NORMALISER_UNITS = {"tokens": count_targets, "sequences": count_sequences, "positions": count_positions}


@dataclass(frozen=True)
class LossRoute:
    """How the policy's losses are computed and differentiated (`UnlearningTrainer.loss_route`).

    Attributes:
        chunk_size: positions per chunk of the token-level losses (final hidden states + output head); 0: full
            logits, kept for backward.
        gradient_in_forward: summed chunked token losses compute each chunk's gradient in the forward pass (else
            backward recomputes the chunk's logits; per-sequence terms such as NPO's always recompute).
        backward_per_objective: the forget objective's backward runs before the retain objective's forward pass
            (else one backward per micro-batch).
    """

    chunk_size: int
    gradient_in_forward: bool
    backward_per_objective: bool

    def describe(self) -> str:
        if self.chunk_size > 0:
            logits = f"chunked logits ({self.chunk_size} positions per chunk)"
            gradient = "gradient in the forward pass" if self.gradient_in_forward else "gradient recomputed in backward"
        else:
            logits, gradient = "full logits", "logits kept for backward"
        backward = "one backward per objective" if self.backward_per_objective else "one backward per micro-batch"
        return f"{logits}, {gradient}, {backward}"


class StepCounts(dict):
    """The normalisers' global counts for one optimizer step (name -> scalar tensor), passed as `num_items_in_batch`."""


class _AdvanceStreams(TrainerCallback):
    """Moves the forget/retain pairing on at every epoch (resumed runs included)."""

    def __init__(self, trainer: UnlearningTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        dataset = self.trainer.train_dataset
        if isinstance(dataset, StreamDataset):
            dataset.set_epoch(math.floor(state.epoch + 1e-6))


class UnlearningTrainer(HubMixin, Trainer):
    """Base class of the unlearning methods; see the module docstring.

    Args (beyond `transformers.Trainer`'s):
        args: a `TrainingArguments`, `UnlearningConfig` or a subclass of either, kept as `trainer.args`; the
            unlearning fields are read from it when used (`unlearning_args`), the method's defaults standing in for
            those it lacks or leaves at `UnlearningConfig`'s defaults (see `UnlearningConfig`). `None`: the method's
            `config_class()`.
        retain_dataset: examples to keep, for a retain objective (nll, kl). Paired with the forget examples by a
            seeded permutation that advances every epoch (`args.pairing_seed`). Unused, with a warning, when the
            run has no retain objective (`run_plan`).
        ref_model: the frozen original model, for objectives that need one: a loaded model (used as is, never
            copied) or a path / Hub id. `None` loads it from the policy's own checkpoint (`model.name_or_path`),
            except for a PEFT model, whose base with the adapter disabled is the original model (no second copy).
            It is loaded only when an active objective needs it.
        unseen_dataset: same-domain examples the original model never saw (the paper's "approximate" data), for
            objectives that take their target levels from it (`unseen_match`); tokenised or raw like the forget set.
            Used only before training, to compute those targets; unused, with a warning, by other objectives.
        peft_config: a `peft.PeftConfig` (e.g. `LoraConfig`) to wrap `model` (or every model `model_init`
            returns) in an adapter, as trl does; or pass a `PeftModel` as `model` directly.

    What a run trains on (objectives, retain data, reference) is `hf_unlearn.plan.run_plan(args, type(trainer))`,
    resolved again when `train()` starts (after a hyperparameter-search trial has set its arguments and `model_init`
    has built its model), so `forget_loss` / `retain_loss` / weights set then take effect and a new model is
    configured by the objectives (e.g. RMU's trainable parameters).

    Datasets (forget, retain, evaluation and test sets) may be tokenised (`input_ids`, optional `attention_mask` /
    `labels`) or raw, as trl's trainers take them: a `text` column (chunked into `max_length` tokens), `prompt` +
    `completion` or `question` + `answer` (the prompt is masked), or chat data (`messages`, or conversational
    `prompt` + `completion`: the tokenizer's chat template, the assistant's turns the only targets); raw data needs
    `processing_class`.
    """

    method_name: ClassVar[str] = "custom"
    paper_name: ClassVar[str] = ""
    # `register_method` builds the method's config class from its objectives' fields and these defaults.
    config_class: ClassVar[type[UnlearningConfig]] = UnlearningConfig
    config_defaults: ClassVar[dict[str, Any]] = {}
    # The method's objectives (the arguments' forget_loss / retain_loss override them; see `run_plan`).
    forget_loss: ClassVar[str] = "ga"
    retain_loss: ClassVar[str] = NO_RETAIN
    # compute_loss already divides by the normalisers of the whole accumulated batch.
    loss_is_scaled_for_ga = True
    # Unlearning fields whose change between `train()` calls leaves the prepared streams valid (loss-only settings).
    LOSS_ONLY_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"method", "forget_weight", "retain_weight", "backward_per_objective", "loss_gradient_in_forward"}
    )

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | None = None,
        args: TrainingArguments | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        model_init=None,
        compute_loss_func=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        optimizer_cls_and_kwargs=None,
        preprocess_logits_for_metrics=None,
        *,
        retain_dataset=None,
        unseen_dataset=None,
        ref_model: PreTrainedModel | nn.Module | str | None = None,
        peft_config=None,
    ):
        if args is None:
            args = self.config_class(output_dir="outputs/unlearned")
        model, model_init = self._with_adapter(model, model_init, peft_config)
        if compute_loss_func is not None:
            raise ValueError(
                f"`compute_loss_func` is not supported by {type(self).__name__}: the unlearning method defines the "
                "loss. Register your own objective or method instead (see hf_unlearn.register_method)."
            )
        if processing_class is not None and hasattr(processing_class, "pad_token_id"):
            check_tokenizer(processing_class)
        # The unlearning fields as the method reads them, from whatever `self.args` is when they are read.
        self.unlearning_args = UnlearningArguments(lambda: self.args, self.config_class)
        plan = run_plan(args, type(self))
        self.pad_token_id = self._pad_token_id(processing_class, model, data_collator)
        self._base_collator = data_collator
        self._padding_side = getattr(processing_class, "padding_side", "right") or "right"
        super().__init__(
            model=model,
            args=args,
            data_collator=self._collator(plan),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            model_init=model_init,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        # The model must not normalise its own loss with num_items_in_batch: the terms are ours.
        self.model_accepts_loss_kwargs = False
        self.original = OriginalModel(self, ref_model)
        # The datasets as given; `prepare_streams` builds the training streams from them for the current plan.
        self._forget_source, self._retain_source = self.train_dataset, retain_dataset
        self._streams_key: tuple | None = None
        if unseen_dataset is not None and hasattr(unseen_dataset, "__len__") and len(unseen_dataset) == 0:
            raise ValueError("unseen_dataset is empty; pass unseen same-domain examples or leave it out.")
        self.unseen_dataset = unseen_dataset
        self.apply_plan()
        if unseen_dataset is not None and not any(o.reads_unseen for o in self.plan.objectives):
            logger.warning("unseen_dataset is ignored: no objective of method %r reads it.", self.method_name)
        if retain_dataset is not None and not self.plan.uses_retain_data:
            logger.warning(
                "retain_dataset is ignored: method %r has no retain objective (retain_loss=%r).",
                self.method_name,
                self.plan.retain_loss,
            )
        self.retain_dataset = retain_dataset if self.plan.uses_retain_data else None
        self.forget_dataset = None
        # Evaluation results by stage (e.g. {"before": {...}, "after": {...}}), written into the model card.
        self.evaluation_results: dict[str, dict[str, float]] = {}
        self.add_callback(_AdvanceStreams(self))
        if self.train_dataset is not None:
            self.prepare_streams()

    # ------------------------------------------------------------------ set-up

    def create_accelerator_and_postprocess(self) -> None:
        """`Trainer`'s accelerator, with FSDP2 sharding the model on CPU processes too (`fsdp_on_cpu`)."""
        from .distributed import fsdp_on_cpu

        with fsdp_on_cpu(self.args):
            super().create_accelerator_and_postprocess()

    @staticmethod
    def _with_adapter(model, model_init, peft_config):
        """`model` and `model_init` wrapped in the `peft_config` adapter (each model `model_init` returns gets a
        fresh one); unchanged without `peft_config`."""
        if peft_config is None:
            return model, model_init
        from peft import get_peft_model
        from transformers.trainer_utils import number_of_arguments

        if model is not None:
            model = get_peft_model(model, peft_config)
        if model_init is not None:
            build, takes_trial = model_init, number_of_arguments(model_init) == 1

            def model_init(trial=None):
                return get_peft_model(build(trial) if takes_trial else build(), copy.deepcopy(peft_config))

        return model, model_init

    def _collator(self, plan: RunPlan) -> UnlearningCollator:
        """The collator of `plan`'s objectives' columns."""
        return UnlearningCollator(
            pad_token_id=self.pad_token_id,
            base_collator=self._base_collator,
            padding_side=self._padding_side,
            token_columns=[column for c in plan.objectives for column in c.token_columns],
            example_columns=[column for c in plan.objectives for column in c.example_columns],
        )

    def apply_plan(self) -> RunPlan:
        """Build the objectives of `run_plan(self.args, type(self))` for the current model: collator, logged terms,
        normalisers, `configure_model` on the model (e.g. RMU's trainable parameters), the reference model where an
        objective needs one. Runs at construction and when `train()` starts (see the class docstring)."""
        plan = self.plan = run_plan(self.args, type(self))
        self.forget_objective: Objective = plan.forget_objective(self)
        self.retain_objective: Objective | None = plan.retain_objective(self) if plan.retain_objective else None
        self.objectives = [o for o in (self.forget_objective, self.retain_objective) if o is not None]
        self.term_names = [name for objective in self.objectives for name in objective.terms]
        self.normaliser_names = list(dict.fromkeys(n for objective in self.objectives for n in objective.normalisers))
        self._term_stats: torch.Tensor | None = None  # [terms, 2]: sums and counts since the last log
        self._signature_columns = None
        self.data_collator = self._collator(plan)
        for objective in self.objectives:
            objective.configure_model(self.accelerator.unwrap_model(self.model))
        # The reference is loaded when an objective runs it in training with a weight > 0 (ga_kl with retain_weight 0
        # loads none), or when it is handed over as a model (nothing to load; a later weight change can use it).
        handed = self.original.is_handed_over and any(o.needs_reference for o in self.objectives)
        if plan.needs_reference or handed:
            self.original.ensure_loaded()
        return plan

    def _streams_key_now(self) -> tuple:
        """What the prepared streams depend on: the objectives, the retain data and the non-loss-only fields."""
        values = {k: v for k, v in self.unlearning_args.values().items() if k not in self.LOSS_ONLY_FIELDS}
        return (
            self.plan.forget_objective,
            self.plan.retain_objective,
            id(self._forget_source),
            id(self._retain_source),
            tuple(sorted(values.items())),
        )

    @staticmethod
    def _pad_token_id(processing_class, model, data_collator) -> int:
        pad = getattr(processing_class, "pad_token_id", None)
        if pad is None:
            pad = getattr(getattr(model, "config", None), "pad_token_id", None)
        if pad is None and data_collator is None:
            raise ValueError(
                "No pad token: pass `processing_class=tokenizer` with a pad token (e.g. "
                "`tokenizer.pad_token = tokenizer.eos_token`) or set `model.config.pad_token_id`."
            )
        return 0 if pad is None else pad

    def prepare_streams(self) -> None:
        """Tokenise raw data, let each objective add its precomputed columns, and pair the streams.

        Runs at construction when a forget set is given, and when `train()` starts (evaluation-only use needs
        no forget set); again only when the objectives or a field they prepare with changed (`LOSS_ONLY_FIELDS`
        do not count).
        """
        if self.train_dataset is not None and not isinstance(self.train_dataset, StreamDataset):
            self._forget_source = self.train_dataset  # a forget set given after construction
        key = self._streams_key_now()
        if isinstance(self.train_dataset, StreamDataset) and key == self._streams_key:
            return
        source = self._forget_source
        retain_source = self._retain_source if self.plan.uses_retain_data else None
        if source is None:
            raise ValueError(
                f"{type(self).__name__}.train() needs the forget set: pass it as `train_dataset=` (tokenised, or raw "
                "text / prompt-completion with `processing_class=`)."
            )
        if hasattr(source, "__len__") and len(source) == 0:
            raise ValueError("The forget set (`train_dataset`) is empty; pass at least one example to unlearn.")
        if retain_source is not None and hasattr(retain_source, "__len__") and len(retain_source) == 0:
            raise ValueError(
                "The retain dataset is empty; pass retain examples or choose a method without a retain objective."
            )
        if self.plan.needs_retain_data and retain_source is None:
            raise ValueError(
                f"Method {self.method_name!r} has a retain objective ({self.retain_objective.name}) and needs retain "
                "data: pass `retain_dataset=` (recipes: `retain_data:`), or choose a method without one "
                "(ga, random_label, adversarial), or set retain_weight: 0."
            )
        max_length = self.unlearning_args.max_length
        with self.args.main_process_first(desc="tokenising the unlearning data"):
            forget = tokenize_if_raw(source, self.processing_class, max_length, FORGET)
            retain = None
            if retain_source is not None:
                retain = tokenize_if_raw(retain_source, self.processing_class, max_length, RETAIN)
        streams = {FORGET: self.forget_objective.prepare(forget)}
        aligned = self.forget_objective.aligned_streams(streams[FORGET])
        streams.update(aligned)
        if retain is not None:
            streams[RETAIN] = self.retain_objective.prepare(retain)
        columns: dict[str, tuple[str, ...]] = {}
        for objective in self.objectives:
            for stream in (objective.stream, *aligned):
                columns[stream] = tuple(
                    dict.fromkeys(
                        columns.get(stream, ("input_ids", "attention_mask", "labels"))
                        + objective.token_columns
                        + objective.example_columns
                    )
                )
        config = getattr(self.accelerator.unwrap_model(self.model), "config", None)
        if config is not None:
            check_examples_fit_model(streams.values(), config, self.pad_token_id)
        self.forget_dataset, self.retain_dataset = streams[FORGET], streams.get(RETAIN)
        self.train_dataset = StreamDataset(
            streams, columns, seed=self.unlearning_args.pairing_seed, aligned=tuple(aligned)
        )
        self._streams_key = key

    def _hp_search_setup(self, trial) -> None:
        """When `train()` starts, after `model_init` built this run's model and a hyperparameter-search trial set its
        arguments: resolve the plan again, prepare the streams for it and log the loss route."""
        super()._hp_search_setup(trial)
        self.apply_plan()
        self.prepare_streams()
        logger.info(
            "%s (%s + %s): %s",
            self.method_name,
            self.plan.forget_loss,
            self.plan.retain_loss,
            self.loss_route().describe(),
        )

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        extra = ["labels", FORGET, RETAIN] + [
            c for o in self.objectives for c in o.aligned + o.token_columns + o.example_columns
        ]
        self._signature_columns = list(dict.fromkeys(list(self._signature_columns) + extra))

    # ------------------------------------------------------------------ models

    def policy_config(self):
        """The policy's text config (vocabulary size, layers, hidden size)."""
        return self.accelerator.unwrap_model(self.model).config.get_text_config()

    @property
    def ref_model(self) -> nn.Module | None:
        """The loaded original model (`original.module`; trl's name for it), None when none is held."""
        return self.original.module

    def policy_forward(
        self, model: nn.Module, batch: dict[str, torch.Tensor], chunk_size: int, layer: int | None = None
    ) -> ForwardOutput:
        """The policy's forward pass for the losses: final hidden states + output head when `chunk_size > 0` or a
        `layer`'s output is asked for (the model permitting), else full logits; its `token_logits` compute summed
        losses' gradients in the forward pass where `gradient_in_forward` allows it."""
        output = forward(model, batch, layer, full_logits=chunk_size <= 0 and layer is None)
        output.token_logits = replace(output.token_logits, gradient_in_forward=self.gradient_in_forward())
        return output

    def run_passes(self, model: nn.Module, objective: Objective, inputs: Mapping[str, dict]) -> Outputs:
        """The outputs of the forward passes `objective` declares (`Objective.passes`) on the micro-batch `inputs`,
        by name: token logits or a decoder layer's output, of the policy `model` (with gradients) or of the original
        model (without)."""
        chunk_size = self.unlearning_args.loss_chunk_size
        outputs: Outputs = {}
        for name, step in objective.passes().items():
            batch = inputs[step.stream]
            if step.model == POLICY:
                output = self.policy_forward(model, batch, chunk_size, step.layer)
            else:
                output = self.original.forward(
                    batch, layer=step.layer, full_logits=chunk_size <= 0 and step.layer is None
                )
            outputs[name] = output.token_logits if step.layer is None else output.hidden
        return outputs

    # ------------------------------------------------------------------ loss

    def unlearning_terms(
        self,
        model: nn.Module,
        inputs: Mapping[str, dict[str, torch.Tensor]],
        after_objective: Callable[[dict[str, LossTerm]], None] | None = None,
    ) -> dict[str, LossTerm]:
        """The loss terms of one micro-batch `{"forget": batch, "retain": batch, ...}`: every active objective's terms
        (a retain objective with retain_weight 0, or without retain data, runs no forward pass).

        `after_objective(terms)` is called with each objective's terms except the last one's, before the next
        objective's forward pass (`compute_loss` uses it to run that objective's backward early)."""
        terms: dict[str, LossTerm] = {}
        active = [o for o in self.objectives if o.active() and o.stream in inputs]
        for index, objective in enumerate(active):
            new = objective.loss_terms(objective.select(inputs), self.run_passes(model, objective, inputs))
            terms.update(new)
            if after_objective is not None and index < len(active) - 1:
                after_objective(new)
        return terms

    def loss_route(self) -> LossRoute:
        """How the losses are computed and differentiated, decided here alone (logged when training starts).

        - chunked or full logits: `UnlearningConfig.loss_chunk_size`.
        - gradient in the forward pass: summed token losses may compute each chunk's gradient in the forward pass
          instead of recomputing the chunk's logits in backward (`hf_unlearn.losses.sum_positions`) with
          `UnlearningConfig.loss_gradient_in_forward` on, where plain autograd delivers the gradients
          (`_plain_autograd`), in one process or under DDP (the gradients reach the parameters in backward, where
          DDP's hooks all-reduce them, as any other gradient).
        - backward per objective: `training_step` may run the forget objective's backward before the retain
          objective's forward pass, so that the two forward graphs are never alive together, where it is exactly
          the same computation: in a single process (DDP's reducer expects one backward per forward) where plain
          autograd delivers the gradients, with the built-in `unlearning_terms` and `compute_loss` (an override of
          either is called as `Trainer` calls it: `compute_loss`, then one backward), a retain objective that runs
          (it must leave a loss with gradient to return), and `UnlearningConfig.backward_per_objective` on.
        """
        settings = self.unlearning_args
        plain = self._plain_autograd()
        return LossRoute(
            chunk_size=settings.loss_chunk_size,
            gradient_in_forward=bool(settings.loss_gradient_in_forward) and plain,
            backward_per_objective=(
                bool(settings.backward_per_objective)
                and self.accelerator.num_processes == 1
                and plain
                and type(self).unlearning_terms is UnlearningTrainer.unlearning_terms
                and type(self).compute_loss is UnlearningTrainer.compute_loss
                and self.retain_objective is not None
                and self.retain_objective.active()
            ),
        )

    def gradient_in_forward(self) -> bool:
        """Whether summed token losses compute each chunk's gradient in the forward pass (`loss_route`)."""
        return self.loss_route().gradient_in_forward

    def _plain_autograd(self) -> bool:
        """Gradients reach the parameters through plain autograd: no DeepSpeed or FSDP (they partition parameters
        and gradients in hooks of their own), no DataParallel (replicas within one process) and no LOMO (its
        backward needs the learning rate and runs twice)."""
        return (
            not self.is_deepspeed_enabled
            and not self.is_fsdp_enabled
            and self.args.n_gpu <= 1
            and "lomo" not in str(self.args.optim).lower()
        )

    def count_normalisers(self, batches: list[Mapping[str, dict[str, torch.Tensor]]]) -> torch.Tensor:
        """Counts of every declared normaliser ("<stream>_<unit>", unit: tokens, sequences, positions) over `batches`."""
        counts = []
        for name in self.normaliser_names:
            stream, _, unit = name.rpartition("_")
            count = NORMALISER_UNITS[unit]
            counts.append(
                sum(int(count(b[stream]["labels"], b[stream].get("attention_mask"))) for b in batches if stream in b)
            )
        return torch.tensor(counts, dtype=torch.float64)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Also count every normaliser over the whole global batch (all micro-batches, all processes), once."""
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts = self.count_normalisers(batch_samples).to(device)
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        return batch_samples, StepCounts(zip(self.normaliser_names, counts))

    def step_counts(self, inputs, num_items_in_batch) -> tuple[StepCounts, int]:
        """The normalisers' counts for one micro-batch's loss and the factor its share is scaled by: the step's
        global counts from `get_batch_samples` (x the number of processes), else this micro-batch's own (x 1)."""
        if isinstance(num_items_in_batch, StepCounts):
            return num_items_in_batch, self.accelerator.num_processes
        # called outside the training loop: normalise by this micro-batch alone
        return StepCounts(zip(self.normaliser_names, self.count_normalisers([inputs]))), 1

    @staticmethod
    def weighted_term(term: LossTerm, counts: StepCounts) -> torch.Tensor:
        """`weight * sum / global count` of one term (a count of 0 divides by 1)."""
        return term.weight * term.value / counts[term.normaliser].to(term.value.device, term.value.dtype).clamp(min=1)

    def weighted_loss(
        self, terms: dict[str, LossTerm], counts: StepCounts, scale: int, detached: frozenset[str] = frozenset()
    ) -> torch.Tensor:
        """The micro-batch's loss: the sum of its weighted terms x `scale`; the terms named in `detached` (whose
        backward already ran) count in the value only."""
        loss = None
        for name, term in terms.items():
            if term.weight == 0:
                continue
            part = self.weighted_term(term, counts)
            part = part.detach() if name in detached else part
            loss = part if loss is None else loss + part
        if loss is None:
            raise ValueError("Every loss term has weight 0; set forget_weight and/or retain_weight above 0.")
        return loss * scale

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The unlearning loss while training; the language-modelling loss on the forget tokens in evaluation.

        It runs no backward (`Trainer`'s contract); `training_step` differentiates the loss."""
        if not model.training or return_outputs or not is_stream_example(inputs):
            return self.language_modelling_loss(model, inputs, return_outputs)
        counts, scale = self.step_counts(inputs, num_items_in_batch)
        terms = self.unlearning_terms(model, inputs)
        loss = self.weighted_loss(terms, counts, scale)
        self._record_terms(terms)
        return loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        """`Trainer.training_step` (`compute_loss`, then one backward of its loss), or, where `loss_route` says one
        backward per objective and the micro-batch has retain data: each objective's backward right after its
        forward pass (the last one's on the micro-batch's loss, which counts the earlier terms in its value only).
        Returns the detached loss, as `Trainer.training_step` does."""
        if not (
            is_stream_example(inputs)
            and self.retain_objective is not None
            and self.retain_objective.stream in inputs
            and self.loss_route().backward_per_objective
        ):
            return super().training_step(model, inputs, num_items_in_batch)
        # `Trainer.training_step`'s steps for a single process with plain autograd (the route's conditions): no
        # context parallelism, SageMaker, DataParallel or LOMO; the loss is scaled for accumulation already.
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        counts, scale = self.step_counts(inputs, num_items_in_batch)
        done: set[str] = set()  # terms whose backward already ran

        def backward_now(new_terms: dict[str, LossTerm]) -> None:
            parts = [
                self.weighted_term(term, counts)
                for term in new_terms.values()
                if term.weight != 0 and term.value.requires_grad
            ]
            if parts:
                self.accelerator.backward(torch.stack(parts).sum() * scale)
                done.update(name for name, term in new_terms.items() if term.weight != 0)

        with self.compute_loss_context_manager():
            terms = self.unlearning_terms(model, inputs, after_objective=backward_now)
            loss = self.weighted_loss(terms, counts, scale, frozenset(done))
        self._record_terms(terms)
        del inputs
        if (
            self.args.torch_empty_cache_steps is not None
            and self.state.global_step % self.args.torch_empty_cache_steps == 0
        ):
            clear_device_cache()
        self.accelerator.backward(loss)
        return loss.detach()

    def language_modelling_loss(self, model, inputs, return_outputs=False):
        """Mean next-token NLL of a flat batch (or of the forget stream of a paired one), padding-side independent."""
        batch = inputs[FORGET] if is_stream_example(inputs) else inputs
        chunk_size = 0 if return_outputs else self.unlearning_args.loss_chunk_size  # evaluation wants the logits back
        output = self.policy_forward(model, batch, chunk_size)
        total, count = nll_sum(output.token_logits, batch["labels"], batch.get("attention_mask"), chunk_size)
        loss = total / count.clamp(min=1)
        return (loss, {"logits": output.logits}) if return_outputs else loss

    # ------------------------------------------------------------------ logging

    def _record_terms(self, terms: dict[str, LossTerm]) -> None:
        """Add this micro-batch's term sums and counts to the running totals (same tensor shape on every rank)."""
        if self._term_stats is None:
            self._term_stats = torch.zeros(len(self.term_names), 2, dtype=torch.float64, device=self.args.device)
        for index, name in enumerate(self.term_names):
            if name in terms:
                term = terms[name]
                self._term_stats[index, 0] += term.value.detach().double().to(self._term_stats.device)
                self._term_stats[index, 1] += term.count.double().to(self._term_stats.device)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add each loss term's weighted mean since the last log (over all processes) to the training logs."""
        if "loss" in logs and self._term_stats is not None:
            stats = self._term_stats
            if self.accelerator.num_processes > 1:
                stats = self.accelerator.reduce(stats, reduction="sum")
            for name, (total, count) in zip(self.term_names, stats.tolist()):
                if count > 0:
                    logs[name] = total / count
            self._term_stats = None
        super().log(logs, start_time)

    def _finalize_training(self, *args, **kwargs):
        """Average the loss of the steps since the last log over processes before `train_loss` is computed from it
        (transformers adds rank 0's local remainder, which is P x its share here)."""
        if self.accelerator.num_processes > 1:
            self._tr_loss = self.accelerator.reduce(self._tr_loss.detach().clone(), reduction="mean")
        return super()._finalize_training(*args, **kwargs)

    # ------------------------------------------------------------------ sampling and token counts

    # Sampling strategies that read each example's length (`LengthGroupedSampler`, `BatchRebalanceSampler`).
    LENGTH_STRATEGIES: ClassVar[tuple[str, ...]] = ("group_by_length", "batch_rebalance")

    def _get_train_sampler(self, train_dataset=None):
        """`Trainer`'s sampler; the length-based strategies (`group_by_length`, `batch_rebalance`) order the paired
        examples by their forget example's length (`length_column_name` of the forget set when it has one): the
        forget set drives the epoch, paired item i being forget example i."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if isinstance(dataset, StreamDataset) and self.args.train_sampling_strategy in self.LENGTH_STRATEGIES:
            dataset = dataset.streams[FORGET]
        return super()._get_train_sampler(dataset)

    def _track_num_input_tokens(self, inputs):
        """`include_num_input_tokens_seen` counts the input tokens of every stream of a paired batch (forget + retain
        + aligned streams: every token a forward pass reads in training), as `Trainer` counts a flat batch's."""
        if not is_stream_example(inputs):
            return super()._track_num_input_tokens(inputs)
        for batch in inputs.values():
            super()._track_num_input_tokens(batch)

    # ------------------------------------------------------------------ evaluation data

    def get_eval_dataloader(self, eval_dataset=None):
        """`Trainer.get_eval_dataloader`, with raw evaluation data (a `text` column, `prompt` + `completion`,
        `question` + `answer` or chat `messages`) tokenised as the forget and retain sets are (`tokenize_if_raw`).

        The trainer's own `eval_dataset` (or each set of a dict of them) is tokenised once and kept tokenised."""
        if isinstance(eval_dataset, str):
            self.eval_dataset[eval_dataset] = self._tokenized_eval(self.eval_dataset[eval_dataset], repr(eval_dataset))
        elif eval_dataset is not None:
            eval_dataset = self._tokenized_eval(eval_dataset, "evaluation")
        elif self.eval_dataset is not None and not isinstance(self.eval_dataset, Mapping):
            self.eval_dataset = self._tokenized_eval(self.eval_dataset, "evaluation")
        return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset):
        """`Trainer.get_test_dataloader` (`predict`), raw test data tokenised as evaluation data is."""
        return super().get_test_dataloader(self._tokenized_eval(test_dataset, "test"))

    def _tokenized_eval(self, dataset, name: str):
        with self.args.main_process_first(desc="tokenising the evaluation data"):
            return tokenize_if_raw(dataset, self.processing_class, self.unlearning_args.max_length, name)
