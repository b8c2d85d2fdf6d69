"""One model's evaluation on forget / approximate / retain / general splits, and its Markdown report.

`evaluate_model` runs the model-dependent parts (sharded scoring, optional reference model, verbatim
continuations) and returns a `ModelEvaluation`: JSON-ready metrics plus the per-example attack scores that the
plots need. `markdown_report` turns the metrics of one or more models (e.g. before and after unlearning) into
tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transformers.utils import logging

from .generation import verbatim_memorization
from .membership import (
    DEFAULT_FPRS,
    DEFAULT_MIN_K,
    attack_scores,
    scored_mask,
    summarize_attacks,
    target_texts,
    unresolved_fprs,
)
from .scores import ExampleScores, score_examples
from .uncertainty import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, bootstrap_mean_nll, interval
from .verdict import Verdict, conclude, report_attacks

logger = logging.get_logger(__name__)

MIA_ORIENTATION = (
    "Scores are oriented so that higher = more likely a member. AUC of members (forget) against non-members "
    "(approximate, never seen): 0.5 = indistinguishable from unseen data (the unlearning target), above 0.5 = "
    "not forgotten, below 0.5 = over-unlearned (the forget set now looks less likely than unseen data)."
)


@dataclass
class ModelEvaluation:
    """Metrics of one model (JSON-ready) and the per-example attack scores of the member / non-member splits."""

    metrics: dict[str, Any]
    attack_scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def evaluate_model(
    model,
    tokenizer,
    splits: Mapping[str, Any],
    members: str = "forget",
    nonmembers: str = "approximate",
    reference_model=None,
    min_k: Sequence[float] = DEFAULT_MIN_K,
    fprs: Sequence[float] = DEFAULT_FPRS,
    batch_size: int = 8,
    verbatim_prefix_tokens: int | None = 32,
    verbatim_continuation_tokens: int = 32,
    verbatim_max_examples: int | None = 64,
    accelerator: Any | None = None,
    progress: bool = False,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> ModelEvaluation:
    """Language-modelling metrics of every split, membership inference and verbatim memorization.

    Args:
        splits: name -> examples (`hf_unlearn.data` format), e.g. forget, approximate, retain, general.
        members, nonmembers: the splits the membership-inference attacks separate (skipped if one is missing).
        reference_model: a model that never saw the members, for the reference-model attack (optional).
        min_k: fractions K of the Min-K% and Min-K%++ attacks.
        verbatim_prefix_tokens: prefix length of the verbatim-memorization test on members and non-members;
            None skips it.
        accelerator: shards every forward pass over processes; every process gets the same result.
        n_resamples, confidence, seed: seeded bootstrap intervals (`nll_ci` of every split, `auc_ci` and
            `tpr@...%fpr_ci` of every attack; see `uncertainty.py`); `n_resamples=0` leaves them out.
    """
    pad = tokenizer.pad_token_id
    mia = members in splits and nonmembers in splits
    scores: dict[str, ExampleScores] = {}
    for name, dataset in splits.items():
        wants_tokens = mia and name in (members, nonmembers)
        scores[name] = score_examples(
            model, dataset, pad, batch_size, progress, accelerator=accelerator, token_scores=wants_tokens
        )
    bootstrap = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    metrics: dict[str, Any] = {"splits": {name: split_summary(split, **bootstrap) for name, split in scores.items()}}
    evaluation = ModelEvaluation(metrics)
    if not mia:
        return evaluation

    for name in (members, nonmembers):
        reference = None
        if reference_model is not None:
            reference = score_examples(reference_model, splits[name], pad, batch_size, accelerator=accelerator)
        texts = target_texts(splits[name], tokenizer)
        evaluation.attack_scores[name] = attack_scores(scores[name], texts, reference, min_k)
    without_targets = {name: int((~scored_mask(scores[name])).sum()) for name in (members, nonmembers)}
    if any(without_targets.values()):
        logger.warning(
            f"Examples without any target token are left out of membership inference: {without_targets} "
            "(all labels -100, or a single token; they have no NLL)."
        )
    metrics["membership_inference"] = {
        "members": members,
        "nonmembers": nonmembers,
        "orientation": MIA_ORIENTATION,
        "examples_without_targets": without_targets,
        "confidence": confidence,
        "attacks": summarize_attacks(
            evaluation.attack_scores[members], evaluation.attack_scores[nonmembers], fprs, **bootstrap
        ),
    }
    unresolved = unresolved_fprs(len(evaluation.attack_scores[nonmembers]["loss"]), fprs)
    if unresolved:
        metrics["membership_inference"]["unresolved_tpr"] = unresolved
    if verbatim_prefix_tokens is not None:
        metrics["verbatim_memorization"] = {
            name: verbatim_memorization(
                model,
                splits[name],
                tokenizer,
                verbatim_prefix_tokens,
                verbatim_continuation_tokens,
                verbatim_max_examples,
                batch_size,
                accelerator,
            )
            for name in (members, nonmembers)
        }
    return evaluation


def split_summary(scores: ExampleScores, n_resamples: int, confidence: float, seed: int) -> dict[str, Any]:
    """`scores.summary()` plus, with `n_resamples`, the bootstrap interval of the mean NLL (`nll_ci`) over the
    examples with target tokens."""
    summary: dict[str, Any] = scores.summary()
    if n_resamples:
        keep = scored_mask(scores)
        values = (scores.nll_sum.numpy()[keep], scores.tokens.numpy()[keep])
        bootstrap = dict(confidence=confidence, n_resamples=n_resamples, seed=seed)
        summary["nll_ci"] = list(interval(bootstrap_mean_nll, *values, **bootstrap)) if keep.any() else None
    return summary


# ---------------------------------------------------------------------------- Markdown


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(cell(item) for item in value) + "]"
        if value is None:
            return "n/a"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _get(metrics: Mapping[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(metrics, Mapping) or key not in metrics:
            return "-"
        metrics = metrics[key]
    return metrics


def model_verdicts(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Verdict]:
    """The verdict (`verdict.conclude`) of every model with membership inference, keyed by its label. The first
    model is the original one: its LOSS interval establishes the forget/unseen gap (for itself and the others)."""
    labels = list(results)
    start = report_attacks(results[labels[0]]) if labels else {}
    verdicts = {}
    for label in labels:
        found = conclude(report_attacks(results[label]), start)
        if found is not None:
            verdicts[label] = found
    return verdicts


def markdown_report(results: Mapping[str, Mapping[str, Any]], title: str = "Unlearning evaluation") -> str:
    """Markdown tables comparing the metrics (`ModelEvaluation.metrics`, plus optional "lm_eval" and "tofu"
    entries) of one or more models, keyed by a label such as "before" / "after"; it leads with each model's
    verdict (`model_verdicts`)."""
    labels = list(results)
    parts = [f"# {title}", "", "Models: " + ", ".join(f"`{label}`" for label in labels), ""]
    verdicts = model_verdicts(results)
    if verdicts:
        parts += [
            "## Verdict",
            "",
            *(f"- `{label}`: **{v.label}**: {v.reason}" for label, v in verdicts.items()),
            "",
            "From the membership-inference AUC intervals (forget vs unseen data); the first model is the "
            "original, which establishes the gap. Details below.",
            "",
        ]

    split_names = list(dict.fromkeys(name for metrics in results.values() for name in metrics.get("splits", {})))
    if split_names:
        parts += [
            "## Language modelling",
            "",
            "Mean next-token NLL (nats, with its bootstrap interval), perplexity and next-token accuracy.",
            "",
        ]
        columns = ("nll", "nll_ci", "perplexity", "accuracy", "examples")
        rows = [
            [name, label, *(_get(results[label], "splits", name, column) for column in columns)]
            for name in split_names
            for label in labels
        ]
        parts += [_table(["split", "model", "NLL", "NLL interval", "perplexity", "accuracy", "examples"], rows), ""]

    mia = [label for label in labels if "membership_inference" in results[label]]
    if mia:
        info = results[mia[0]]["membership_inference"]
        attacks = list(
            dict.fromkeys(name for label in mia for name in results[label]["membership_inference"]["attacks"])
        )
        measures = list(next(iter(info["attacks"].values())))
        parts += [
            "## Membership inference",
            "",
            f"Members: `{info['members']}`; non-members: `{info['nonmembers']}`. {info['orientation']}",
            "",
        ]
        rows = [
            [attack, label, *(_get(results[label], "membership_inference", "attacks", attack, m) for m in measures)]
            for attack in attacks
            for label in mia
        ]
        parts += [_table(["attack", "model", *measures], rows), ""]
        if "confidence" in info:
            parts += [
                f"`_ci` columns: {100 * info['confidence']:g}% seeded bootstrap intervals (members and "
                "non-members resampled separately).",
                "",
            ]
        notes = dict.fromkeys(
            note for label in mia for note in results[label]["membership_inference"].get("unresolved_tpr", {}).values()
        )
        parts += [*(f"- n/a: {note}" for note in notes), *([""] if notes else [])]

    verbatim = [label for label in labels if "verbatim_memorization" in results[label]]
    if verbatim:
        parts += [
            "## Verbatim memorization",
            "",
            "Greedy continuation of a prefix against the true continuation: ROUGE-L F-measure, leading tokens "
            "reproduced exactly, share reproduced in full. Compare the forget set with the unseen set.",
            "",
        ]
        rows = [
            [split, label, *(values[k] for k in ("rouge_l", "exact_match_tokens", "exact_match_rate", "examples"))]
            for label in verbatim
            for split, values in results[label]["verbatim_memorization"].items()
        ]
        parts += [_table(["split", "model", "ROUGE-L", "exact-match tokens", "exact-match rate", "examples"], rows), ""]

    for section, heading in (("tofu", "TOFU"), ("lm_eval", "Downstream tasks (lm-evaluation-harness)")):
        present = [label for label in labels if section in results[label]]
        if not present:
            continue
        rows = []
        for label in present:
            for group, values in results[label][section].items():
                if isinstance(values, Mapping):
                    rows += [[group, name, label, value] for name, value in values.items()]
                else:
                    rows.append([group, "", label, values])
        parts += [f"## {heading}", "", _table(["set / task", "metric", "model", "value"], rows), ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------- files


def save_evaluation(
    evaluations: Mapping[str, ModelEvaluation],
    output_dir: str,
    log_history: Sequence[Mapping[str, Any]] | None = None,
    plot_attacks: Sequence[str] = ("loss",),
    extra: Mapping[str, Any] | None = None,
) -> list[str]:
    """Write `evaluation.json`, `report.md` and the PNG plots of one or more models; returns the written paths.

    Args:
        evaluations: label (e.g. "before", "after") -> `ModelEvaluation`.
        log_history: a training run's `log_history` (see `plots.read_log_history`) for the training curves.
        plot_attacks: attacks to draw member/non-member histograms and ROC curves for.
        extra: more JSON-ready entries for `evaluation.json` (e.g. the checkpoint paths).
    """
    import json
    import os

    from .plots import plot_roc_curves, plot_score_histograms, plot_training_curves

    os.makedirs(output_dir, exist_ok=True)
    results = {label: evaluation.metrics for label, evaluation in evaluations.items()}
    written = [os.path.join(output_dir, "evaluation.json"), os.path.join(output_dir, "report.md")]
    with open(written[0], "w") as handle:
        verdicts = {label: {"verdict": v.label, "reason": v.reason} for label, v in model_verdicts(results).items()}
        json.dump({"models": results, "verdicts": verdicts, **(extra or {})}, handle, indent=2)
    with open(written[1], "w") as handle:
        handle.write(markdown_report(results) + "\n")
    for attack in plot_attacks:
        if not all(attack in scores for ev in evaluations.values() for scores in ev.attack_scores.values()):
            raise ValueError(f"No {attack!r} attack scores to plot; pick one of the attacks in evaluation.json.")
        written.append(
            plot_score_histograms(evaluations, os.path.join(output_dir, f"mia_histograms_{attack}.png"), attack)
        )
        written.append(plot_roc_curves(evaluations, os.path.join(output_dir, f"roc_{attack}.png"), attack))
    if log_history is not None:
        written.append(plot_training_curves(log_history, os.path.join(output_dir, "training_curves.png")))
    return [path for path in written if path is not None]
