"""Model cards for unlearned models (huggingface_hub's ModelCard).

The card records what was done without revealing what was forgotten: base model, method (paper name and
citation), hyperparameters, the number of forget / retain examples and tokens with a SHA-256 of their token ids
(so a reader can check which set was used if they hold it, but cannot recover it), evaluation results when
available, and the hf_unlearn version. It never contains text from the data.
"""

from __future__ import annotations

import hashlib
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
    """Size and fingerprint of a dataset of token ids: never its content."""

    examples: int
    tokens: int
    sha256: str


def summarize_dataset(dataset) -> DataSummary:
    """Count examples and tokens and hash the token ids (in order) of a dataset with `input_ids`."""
    digest = hashlib.sha256()
    tokens = 0
    column = dataset["input_ids"] if hasattr(dataset, "column_names") else [row["input_ids"] for row in dataset]
    for ids in column:
        array = np.asarray(ids, dtype=np.int64)
        digest.update(array.tobytes())
        digest.update(b"|")
        tokens += array.size
    return DataSummary(examples=len(column), tokens=tokens, sha256=digest.hexdigest())


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

    data = ModelCardData(
        base_model=base_model if base_model and "/" in base_model and not base_model.startswith(("/", ".")) else None,
        library_name="transformers",
        tags=["unlearning", "hf_unlearn", method],
        pipeline_tag="text-generation",
    )
    rows = [f"| {key} | {value} |" for key, value in hyperparameters.items()]
    data_rows = [f"| forget | {forget.examples} | {forget.tokens} | `{forget.sha256}` |"]
    if retain is not None:
        data_rows.append(f"| retain | {retain.examples} | {retain.tokens} | `{retain.sha256}` |")
    sections = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# {model_name or 'Unlearned model'}",
        "",
        f"This model is `{base_model or 'a local model'}` after machine unlearning with **{paper_name}** "
        f"(`method: {method}`) using [hf_unlearn](https://github.com/) {version}, following Yao et al., "
        "*Machine Unlearning of Pre-trained Large Language Models* (ACL 2024).",
        "",
        "Unlearning is approximate: the forgotten data's influence is reduced, not provably removed. Check the "
        "evaluation below (forget vs. unseen data, membership inference) before relying on it.",
        "",
        "## Data",
        "",
        "The forgotten text is not reproduced here. Counts are of chunks / tokens after tokenization; the hash is "
        "SHA-256 over the token ids in order.",
        "",
        "| set | examples | tokens | sha256 of token ids |",
        "|---|---|---|---|",
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
