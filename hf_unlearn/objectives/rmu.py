"""Representation Misdirection for Unlearning (RMU; Li et al. 2024, "The WMDP Benchmark"), both terms:

    forget_loss = mean_t || h_l(f)_t - c * u ||^2 / d        retain_loss = mean_t || h_l(r)_t - h_l^ref(r)_t ||^2 / d

h_l the output of decoder layer l (0-based, as WMDP and open-unlearning number them: `model.layers[l]`, read by a
forward hook on that layer, `hf_unlearn.forward`; the last layer's output too, not the final norm's), u a fixed random unit vector
(seeded by `rmu_seed`), c the steering coefficient, d the hidden size; means over the stream's labelled real
positions (labels != -100, as open-unlearning masks them), token-weighted over the global batch (open-unlearning
averages per sequence first). Only the parameters matching `rmu_trainable_params` train; the others are frozen
before the optimizer and DeepSpeed exist (`configure_model`). The retain term needs the original model's hidden
states during training (a reference model, or the adapter-free base of a PEFT policy).

Defaults follow WMDP's Zephyr-7B run: layer 7, parameters `layers.(5|6|7).mlp.down_proj.weight`, c 6.5,
retain weight (alpha) 1200. open-unlearning's TOFU defaults differ (c 2, alpha 1); set them in the config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ..losses import activation_mse_sum
from .base import REFERENCE, LossTerm, Objective, Pass, register_objective


@dataclass
class RMUParams:
    """RMU's hyperparameters, read by both of its objectives (rmu, rmu_retain).

    Parameters:
        rmu_layer (`int`, *optional*, defaults to `7`):
            0-based decoder layer l whose output is steered (forget) and matched (retain).
        rmu_steering_coeff (`float`, *optional*, defaults to `6.5`):
            Length c of the steering vector c * u.
        rmu_trainable_params (`str`, *optional*, defaults to `"layers\\.(5|6|7)\\.mlp\\.down_proj\\.weight"`):
            Regular expression over parameter names; only matching parameters train.
        rmu_seed (`int`, *optional*, defaults to `0`):
            Seed of the random direction u.
    """

    rmu_layer: int = field(default=7, metadata={"help": "RMU: 0-based decoder layer whose output is steered."})
    rmu_steering_coeff: float = field(default=6.5, metadata={"help": "RMU: length c of the steering vector c*u."})
    rmu_trainable_params: str = field(
        default=r"layers\.(5|6|7)\.mlp\.down_proj\.weight",
        metadata={"help": "RMU: regular expression over parameter names; only matching parameters train."},
    )
    rmu_seed: int = field(default=0, metadata={"help": "RMU: seed of the random direction u."})


def labelled_positions(batch) -> torch.Tensor:
    positions = batch["labels"] != -100
    if batch.get("attention_mask") is not None:
        positions &= batch["attention_mask"].bool()
    return positions


def freeze_all_but(model: torch.nn.Module, pattern: str) -> list[str]:
    """Set requires_grad False on every parameter whose name does not match `pattern`; the names left trainable."""
    regex = re.compile(pattern)
    trainable = []
    for name, parameter in model.named_parameters():
        keep = bool(regex.search(name))
        parameter.requires_grad_(keep)
        if keep:
            trainable.append(name)
    if not trainable:
        raise ValueError(
            f"rmu_trainable_params={pattern!r} matches no parameter of the model (e.g. {next(iter(dict(model.named_parameters())))!r}); "
            "give a regular expression over parameter names such as 'layers\\.(5|6|7)\\.mlp\\.down_proj\\.weight'."
        )
    return trainable


@register_objective("rmu")
class RepresentationMisdirection(Objective):
    params = RMUParams
    kind = stream = "forget"
    terms = ("forget_loss",)
    normalisers = ("forget_positions",)

    def __init__(self, setup):
        super().__init__(setup)
        config = setup.policy_config()
        layers, hidden = config.num_hidden_layers, config.hidden_size
        if not 0 <= self.args.rmu_layer < layers:
            raise ValueError(
                f"rmu_layer={self.args.rmu_layer}, but the model has {layers} decoder layers; choose 0..{layers - 1}."
            )
        generator = torch.Generator().manual_seed(self.args.rmu_seed)
        direction = torch.rand(hidden, generator=generator)
        self.control = self.args.rmu_steering_coeff * direction / direction.norm()

    def configure_model(self, model):
        self.trainable = freeze_all_but(model, self.args.rmu_trainable_params)

    def passes(self):
        return {"hidden": Pass("forget", layer=self.args.rmu_layer)}

    def loss_terms(self, batch, outputs):
        hidden = outputs["hidden"]
        total, count = activation_mse_sum(hidden, self.control.to(hidden.device), labelled_positions(batch))
        return {"forget_loss": LossTerm(total, count, "forget_positions", self.args.forget_weight)}


@register_objective("rmu_retain")
class RepresentationRetain(Objective):
    params = RMUParams
    kind = stream = "retain"
    terms = ("retain_loss",)
    normalisers = ("retain_positions",)
    needs_reference = True

    def passes(self):
        layer = self.args.rmu_layer
        return {"target": Pass("retain", REFERENCE, layer), "hidden": Pass("retain", layer=layer)}

    def loss_terms(self, batch, outputs):
        total, count = activation_mse_sum(outputs["hidden"], outputs["target"], labelled_positions(batch))
        return {"retain_loss": LossTerm(total, count, "retain_positions", self.args.retain_weight)}
