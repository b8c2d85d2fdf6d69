"""Measuring unlearning: per-example scores computed in batches without gradients, sharded over processes.

- `scores`: per-example NLL sums, token counts, correct tokens (and token log-probs for Min-K% / Min-K%++);
- `metrics`: pure functions (arrays in, numbers out): perplexity, accuracy, attack scores, AUC, TPR@FPR,
  ROUGE-L, TOFU truth ratio / forget quality / model utility;
- `membership`: attack scores from `ExampleScores` (examples without target tokens left out) and their summaries;
- `uncertainty`: seeded bootstrap intervals (AUC, TPR@FPR, mean NLL) and which FPRs the non-members can resolve;
- `generation`: greedy continuations (verbatim memorization) and answers;
- `attacks`: robustness attacks (weight-only RTN quantisation, relearning) re-measuring any metric before / after;
- `tofu`: the TOFU benchmark; `harness`: lm-evaluation-harness on an in-memory model;
- `report` / `plots`: one model's full evaluation, Markdown tables, PNG plots;
- `metrics_modules`: these metrics as `evaluate` modules, loaded offline by path:
  `evaluate.load(metric_path("mia_auc"))` (also "tofu_truth_ratio", "verbatim_rouge").

Heavy optional dependencies (scikit-learn, scipy, rouge-score, matplotlib, lm-eval) are imported inside the
functions that use them.
"""

from .attacks import quantization_attack, quantize_weights, relearn, relearning_attack
from .harness import EXAMPLE_TASK, run_lm_eval
from .membership import (
    DEFAULT_FPRS,
    DEFAULT_MIN_K,
    attack_scores,
    loss_auc,
    scored_mask,
    summarize_attacks,
    target_texts,
)
from .metrics import roc_auc, tpr_at_fpr
from .metrics_modules import METRIC_MODULES, metric_path
from .report import ModelEvaluation, evaluate_model, markdown_report
from .scores import ExampleScores, mean_nll, score_examples
from .tofu import evaluate_tofu
from .uncertainty import bootstrap_auc, bootstrap_mean_nll, bootstrap_tpr_at_fpr, interval, tpr_unresolved_reason

__all__ = [
    "DEFAULT_FPRS",
    "DEFAULT_MIN_K",
    "EXAMPLE_TASK",
    "ExampleScores",
    "METRIC_MODULES",
    "ModelEvaluation",
    "attack_scores",
    "bootstrap_auc",
    "bootstrap_mean_nll",
    "bootstrap_tpr_at_fpr",
    "evaluate_model",
    "evaluate_tofu",
    "interval",
    "loss_auc",
    "markdown_report",
    "mean_nll",
    "quantization_attack",
    "quantize_weights",
    "relearn",
    "relearning_attack",
    "metric_path",
    "roc_auc",
    "run_lm_eval",
    "score_examples",
    "scored_mask",
    "summarize_attacks",
    "target_texts",
    "tpr_at_fpr",
    "tpr_unresolved_reason",
]
