"""Model cards for unlearned models (huggingface_hub's ModelCard).

The card records what was done without revealing what was forgotten: base model (a Hub id only, never a local
path), method (paper name and citation), hyperparameters, the number of forget / retain examples and tokens,
evaluation results when available, and the hf_unlearn version. It never contains text from the data, nor anything
computed from its content: an unsalted hash of the forget token ids let anyone confirm a guessed secret (a short
phone number was recovered from the card alone in 174 guesses), so there is none. Counts only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CITATION = """@inproceedings{yao2024machine,
  title     = {Machine Unlearning of Pre-trained Large Language Models},
  author    = {Yao, Jin and Chien, Eli and Du, Minxin and Niu, Xinyao and Wang, Tianhao and Cheng, Zezhou and Yue, Xiang},
  booktitle = {Proceedings of the 62nd Annual Meeting of the Association for Computational Linguistics (ACL)},
  year      = {2024},
  url       = {https://arxiv.org/abs/2402.15159}
}"""

# Hyperparameters worth a reader's attention; everything else stays in training_args.bin.
CARD_HYPERPARAMETERS = (
    "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "world_size", "max_length", "forget_weight",
    "retain_weight", "pairing_seed", "seed", "bf16",
)


@dataclass
class DataSummary:
    """Size of a dataset of token ids: counts only, nothing derived from its content."""

    examples: int
    tokens: int


def summarize_dataset(dataset) -> DataSummary:
    """Count the examples and tokens of a dataset with `input_ids`."""
    column = dataset["input_ids"] if hasattr(dataset, "column_names") else [row["input_ids"] for row in dataset]
    return DataSummary(examples=len(column), tokens=sum(int(np.asarray(ids).size) for ids in column))


def build_model_card(
    *,
    method: str,
    paper_name: str,
    base_model: str | None,
    hyperparameters: dict[str, Any],
    forget: DataSummary,
    retain: DataSummary | None,
    results: dict[str, dict[str, float]] | None,
    version: str,
    model_name: str | None = None,
):
    """A `huggingface_hub.ModelCard` for an unlearned model."""
    from huggingface_hub import ModelCard, ModelCardData

    hub_id = base_model if base_model and _is_hub_id(base_model) else None
    data = ModelCardData(
        base_model=hub_id,
        library_name="transformers",
        tags=["unlearning", "hf_unlearn", method],
        pipeline_tag="text-generation",
    )
    rows = [f"| {key} | {value} |" for key, value in hyperparameters.items()]
    data_rows = [f"| forget | {forget.examples} | {forget.tokens} |"]
    if retain is not None:
        data_rows.append(f"| retain | {retain.examples} | {retain.tokens} |")
    sections = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# {model_name or 'Unlearned model'}",
        "",
        f"This model is {f'`{hub_id}`' if hub_id else 'a local model'} after machine unlearning with **{paper_name}** "
        f"(`method: {method}`) using [hf_unlearn](https://github.com/) {version}, following Yao et al., "
        "*Machine Unlearning of Pre-trained Large Language Models* (ACL 2024).",
        "",
        "Unlearning is approximate: the forgotten data's influence is reduced, not provably removed. Check the "
        "evaluation below (forget vs. unseen data, membership inference) before relying on it.",
        "",
        "## Data",
        "",
        "The forgotten text is not reproduced here, nor anything computed from it. Counts are of chunks / tokens "
        "after tokenization.",
        "",
        "| set | examples | tokens |",
        "|---|---|---|",
        *data_rows,
        "",
        "## Hyperparameters",
        "",
        "| name | value |",
        "|---|---|",
        *rows,
        "",
        "## Evaluation",
        "",
        *_results_table(results),
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return ModelCard("\n".join(sections))


def _is_hub_id(name: str) -> bool:
    """A Hub model id ("org/name"), not a local path (absolute, relative, or existing on this machine)."""
    import os

    return name.count("/") == 1 and not name.startswith(("/", ".", "~")) and not os.path.exists(name)


def _results_table(results: dict[str, dict[str, float]] | None) -> list[str]:
    if not results:
        return ["No evaluation was recorded with this model."]
    stages = list(results)
    metrics = sorted({name for values in results.values() for name in values})
    lines = ["| metric | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
    for metric in metrics:
        cells = [_format(results[stage].get(metric)) for stage in stages]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return lines


def _format(value) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
