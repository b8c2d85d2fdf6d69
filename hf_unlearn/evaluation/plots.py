"""PNG plots of an evaluation (matplotlib, Agg backend: no display needed).

- `plot_score_histograms`: member vs non-member attack scores, one panel per model;
- `plot_roc_curves`: ROC curves of one attack, one line per model, with the chance diagonal;
- `plot_training_curves`: forget / retain / approximate NLL over training steps from a `trainer_state.json`'s
  `log_history` (the `eval_*_nll` values of `UnlearningEvalCallback` and the trainer's own `forget_nll`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .metrics import roc_auc, roc_points
from .report import ModelEvaluation


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_score_histograms(evaluations: Mapping[str, ModelEvaluation], path: str, attack: str = "loss") -> str | None:
    """Histograms of one attack's scores on members and non-members, one panel per model; None if no scores."""
    panels = [(label, ev) for label, ev in evaluations.items() if ev.attack_scores]
    if not panels:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for axis, (label, evaluation) in zip(axes[0], panels):
        info = evaluation.metrics["membership_inference"]
        member, nonmember = (evaluation.attack_scores[info[key]][attack] for key in ("members", "nonmembers"))
        bins = np.histogram_bin_edges(np.concatenate([member, nonmember]), bins=30)
        axis.hist(nonmember, bins=bins, alpha=0.6, label=f"{info['nonmembers']} (non-members)")
        axis.hist(member, bins=bins, alpha=0.6, label=f"{info['members']} (members)")
        axis.set_title(f"{label}: {attack}, AUC {roc_auc(member, nonmember):.3f}")
        axis.set_xlabel("score (higher = more likely member)")
        axis.legend(fontsize=8)
    axes[0][0].set_ylabel("examples")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_roc_curves(evaluations: Mapping[str, ModelEvaluation], path: str, attack: str = "loss") -> str | None:
    """ROC curves (members = positives) of one attack for every model; None if no scores."""
    curves = [(label, ev) for label, ev in evaluations.items() if ev.attack_scores]
    if not curves:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    for label, evaluation in curves:
        info = evaluation.metrics["membership_inference"]
        member, nonmember = (evaluation.attack_scores[info[key]][attack] for key in ("members", "nonmembers"))
        fpr, tpr = roc_points(member, nonmember)
        axis.plot(fpr, tpr, label=f"{label} (AUC {roc_auc(member, nonmember):.3f})")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance (unseen-like)")
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.set_title(f"ROC, {attack} attack")
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


TRAINING_CURVE_KEYS = ("eval_forget_nll", "eval_approximate_nll", "eval_retain_nll", "forget_nll", "retain_loss")


def read_log_history(trainer_state: str | Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `log_history` of a `trainer_state.json` path or of an already loaded state."""
    if isinstance(trainer_state, str):
        with open(trainer_state) as handle:
            trainer_state = json.load(handle)
    if "log_history" not in trainer_state:
        raise ValueError("The trainer state has no 'log_history'; pass the trainer_state.json of a training run.")
    return list(trainer_state["log_history"])


def plot_training_curves(
    log_history: Sequence[Mapping[str, Any]], path: str, keys: Sequence[str] = TRAINING_CURVE_KEYS
) -> str | None:
    """NLL curves over optimizer steps for each key present in the log history; None if none is present."""
    series = {}
    for key in keys:
        entries = [entry for entry in log_history if key in entry]
        if entries:
            series[key] = ([entry["step"] for entry in entries], [entry[key] for entry in entries])
    if not series:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for key, (steps, values) in series.items():
        axis.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=key)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("mean next-token NLL (nats)")
    axis.set_title("NLL during unlearning")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
