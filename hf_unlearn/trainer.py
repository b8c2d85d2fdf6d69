"""`UnlearningTrainer`: the `transformers.Trainer` subclass every method builds on.

It is a drop-in replacement: same constructor (plus two keyword-only arguments, `retain_dataset` and
`ref_model`), same `TrainingArguments`, callbacks, logging, checkpoints and `push_to_hub`. The forget set is the
`train_dataset`. A method subclass only says which loss terms it has (`unlearning_terms`); this base class turns
them into one loss that does not depend on gradient accumulation or on the number of processes:

    loss = sum_terms  weight * (sum of the term over the term's tokens in the *global* batch)
                             / (number of those tokens in the global batch)

The global batch is every micro-batch of one optimizer step on every process. Each process returns its share,
`weight * local_sum / global_count * num_processes`, because DDP and DeepSpeed average gradients over processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainingArguments

from .config import UnlearningConfig
from .hub import HubMixin
from .data import RETAIN_PREFIX, ForgetRetainDataset, UnlearningCollator, check_tokenizer
from .losses import count_targets, nll_sum, substitute_nll_sums


@dataclass
class LossTerm:
    """One term of an unlearning loss.

    Attributes:
        value: sum of the term over the valid tokens of this micro-batch (a scalar tensor).
        count: number of those tokens in this micro-batch.
        tokens: which global token count normalizes the term: "forget" or "retain".
        weight: multiplier in the total loss; 0 means the term is only logged.
    """

    value: torch.Tensor
    count: torch.Tensor
    tokens: str
    weight: float


class UnlearningTrainer(HubMixin, Trainer):
    """Base class of the unlearning methods; see the module docstring.

    Args (beyond `transformers.Trainer`'s):
        retain_dataset: examples to keep (methods that use retain data). Paired with the forget examples by
            `ForgetRetainDataset` (seeded by `args.pairing_seed`).
        ref_model: the frozen original model, for methods that need one: a loaded model (used as is, never
            copied) or a path / Hub id. `None` loads it from the policy's own checkpoint (`model.name_or_path`),
            except for a PEFT model, whose base with the adapter disabled is the original model (no second copy).
            Methods that do not need it never load it.
        peft_config: a `peft.PeftConfig` (e.g. `LoraConfig`) to wrap `model` in an adapter, as trl does; or pass
            a `PeftModel` as `model` directly.
    """

    method_name: ClassVar[str] = "base"
    paper_name: ClassVar[str] = ""
    config_class: ClassVar[type[UnlearningConfig]] = UnlearningConfig
    needs_retain: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    target_columns: ClassVar[tuple[str, ...]] = ()
    # compute_loss already divides by the token count of the whole accumulated batch.
    loss_is_scaled_for_ga = True

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
        ref_model: PreTrainedModel | nn.Module | str | None = None,
        peft_config=None,
    ):
        args = self._as_config(args)
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        self._check_inputs(train_dataset, retain_dataset, processing_class, compute_loss_func)
        collator = UnlearningCollator(
            pad_token_id=self._pad_token_id(processing_class, model, data_collator),
            base_collator=data_collator,
            padding_side=getattr(processing_class, "padding_side", "right") or "right",
            target_columns=self.target_columns,
        )
        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
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
        # The model must not normalize its own loss with num_items_in_batch: the terms are ours.
        self.model_accepts_loss_kwargs = False
        self._global_token_counts: dict[str, torch.Tensor] | None = None
        self._logged_terms: dict[str, torch.Tensor] = {}
        self.ref_model = None
        if self.needs_reference and not self.adapter_is_reference(ref_model):
            self.ref_model = self.load_reference_model(ref_model)
        self.train_dataset = self.forget_dataset = self.prepare_forget_dataset(self.train_dataset, ref_model)
        self.retain_dataset = retain_dataset
        # Evaluation results by stage (e.g. {"before": {...}, "after": {...}}), written into the model card.
        self.evaluation_results: dict[str, dict[str, float]] = {}
        if retain_dataset is not None:
            self.train_dataset = ForgetRetainDataset(self.train_dataset, retain_dataset, args.pairing_seed)

    # ------------------------------------------------------------------ set-up

    def _as_config(self, args: TrainingArguments | None) -> UnlearningConfig:
        """Accept plain `TrainingArguments` (drop-in use) by lifting them into the method's config class."""
        config_class = self.config_class
        if args is None:
            return config_class(output_dir="outputs/unlearned")
        if isinstance(args, config_class):
            return args
        values = {k: v for k, v in args.to_dict().items() if not k.startswith("_")}
        values["hub_token"] = args.hub_token  # to_dict() redacts it
        known = set(config_class.__dataclass_fields__)
        return config_class(**{k: v for k, v in values.items() if k in known and config_class.__dataclass_fields__[k].init})

    def _check_inputs(self, train_dataset, retain_dataset, processing_class, compute_loss_func) -> None:
        name = self.method_name
        if train_dataset is None:
            raise ValueError(f"{type(self).__name__} needs the forget set as `train_dataset`.")
        if hasattr(train_dataset, "__len__") and len(train_dataset) == 0:
            raise ValueError("The forget set (`train_dataset`) is empty; pass at least one example to unlearn.")
        if self.needs_retain and retain_dataset is None:
            raise ValueError(
                f"Method {name!r} needs retain data: pass `retain_dataset=` (in-distribution or general text), "
                "or choose a method without a retain term (ga, random_label, adversarial)."
            )
        if processing_class is not None and hasattr(processing_class, "pad_token_id"):
            check_tokenizer(processing_class)
        if compute_loss_func is not None:
            raise ValueError(
                f"`compute_loss_func` is not supported by {type(self).__name__}: the unlearning method defines the "
                "loss. Register your own method instead (see hf_unlearn.register_method)."
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

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        base = list(self._signature_columns) + list(self.target_columns)
        self._signature_columns = list(dict.fromkeys(base + [RETAIN_PREFIX + c for c in base]))

    def load_reference_model(self, ref_model: PreTrainedModel | nn.Module | str | None) -> nn.Module:
        """The frozen original model, prepared like the policy (never a deep copy of it)."""
        from .reference import load_reference_model

        return load_reference_model(self, ref_model)

    def adapter_is_reference(self, ref_model) -> bool:
        """True when no reference was given and the policy is a PEFT model: its adapter-free base is theta0."""
        try:
            from peft import PeftModel
        except ImportError:  # peft is an optional extra
            return False
        return ref_model is None and isinstance(self.accelerator.unwrap_model(self.model), PeftModel)

    @torch.no_grad()
    def reference_logits(self, batch: dict[str, torch.Tensor], ref_model: nn.Module | None = None) -> torch.Tensor:
        """Logits of the original model: `ref_model`, else `self.ref_model`, else the policy without its adapter."""
        ref_model = ref_model if ref_model is not None else self.ref_model
        if ref_model is not None:
            return self.logits(ref_model, batch)
        policy = self.accelerator.unwrap_model(self.model)
        with policy.disable_adapter():
            return self.logits(policy, batch)

    def prepare_forget_dataset(self, dataset, ref_model):
        """Hook for methods that precompute per-example targets (random or adversarial labels)."""
        return dataset

    # ------------------------------------------------------------------ loss

    def unlearning_terms(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        """The method's loss terms for one micro-batch; implemented by each method."""
        raise NotImplementedError

    @staticmethod
    def split_inputs(inputs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Separate the forget part and the (prefix-stripped) retain part of a paired batch."""
        forget = {k: v for k, v in inputs.items() if not k.startswith(RETAIN_PREFIX)}
        retain = {k[len(RETAIN_PREFIX) :]: v for k, v in inputs.items() if k.startswith(RETAIN_PREFIX)}
        return forget, retain

    @staticmethod
    def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward pass without labels (the loss is computed by the method)."""
        return model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits

    @staticmethod
    def token_counts(batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """[forget, retain] next-token target counts over a list of (paired) batches."""
        key = RETAIN_PREFIX + "labels"
        forget = sum(int(count_targets(b["labels"])) for b in batches)
        retain = sum(int(count_targets(b[key])) for b in batches if key in b)
        return torch.tensor([forget, retain])

    def ascent_terms(self, model: nn.Module, forget: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        """Gradient ascent on the forget part, -NLL(f) (methods 1 and 4-7), plus `forget_nll` for the logs."""
        total, count = nll_sum(self.logits(model, forget), forget["labels"])
        return {
            "forget_loss": LossTerm(-total, count, "forget", self.args.forget_weight),
            "forget_nll": LossTerm(total.detach(), count, "forget", 0.0),
        }

    def target_terms(self, model: nn.Module, forget: dict[str, torch.Tensor], column: str) -> dict[str, LossTerm]:
        """Descent towards substitute targets `forget[column]` (methods 2 and 3), plus the true `forget_nll`."""
        logits = self.logits(model, forget)
        total, count, true_total, true_count = substitute_nll_sums(logits, forget[column], forget["labels"])
        return {
            "forget_loss": LossTerm(total, count, "forget", self.args.forget_weight),
            "forget_nll": LossTerm(true_total, true_count, "forget", 0.0),
        }

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Also count forget and retain target tokens over the whole global batch (all micro-batches, processes)."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts = self.token_counts(batch_samples).to(device)
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        self._global_token_counts = {"forget": counts[0], "retain": counts[1]}
        return batch_samples, num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Unlearning loss while training; the ordinary language-modelling loss in evaluation."""
        if not model.training or return_outputs:
            # Evaluation: the plain language-modelling loss on the forget (or evaluation) tokens alone.
            lm_inputs = {k: v for k, v in inputs.items() if k not in self.target_columns and not k.startswith(RETAIN_PREFIX)}
            return super().compute_loss(model, lm_inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        terms = self.unlearning_terms(model, inputs)
        if self._global_token_counts is not None:
            counts, scale = self._global_token_counts, self.accelerator.num_processes
        else:  # called outside the training loop: normalize by this micro-batch alone
            local = self.token_counts([inputs])
            counts, scale = {"forget": local[0], "retain": local[1]}, 1
        loss = None
        for term in terms.values():
            if term.weight == 0:
                continue
            part = term.weight * term.value / counts[term.tokens].to(term.value.device).clamp(min=1)
            loss = part if loss is None else loss + part
        if loss is None:
            raise ValueError("Every loss term has weight 0; set forget_weight and/or retain_weight above 0.")
        self._record_terms(terms)
        return loss * scale

    # ------------------------------------------------------------------ logging

    def _record_terms(self, terms: dict[str, LossTerm]) -> None:
        for name, term in terms.items():
            stat = torch.stack([term.value.detach().float(), term.count.float()])
            self._logged_terms[name] = self._logged_terms.get(name, 0) + stat

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add each loss term's token-weighted mean since the last log (over all processes) to training logs."""
        if "loss" in logs and self._logged_terms:
            names = sorted(self._logged_terms)
            stats = torch.stack([self._logged_terms[n].to(self.args.device) for n in names])
            if self.accelerator.num_processes > 1:
                stats = self.accelerator.reduce(stats, reduction="sum")
            for name, (total, count) in zip(names, stats.tolist()):
                logs[name] = total / max(count, 1.0)
            self._logged_terms = {}
        super().log(logs, start_time)
