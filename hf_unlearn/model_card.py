"""Model cards for unlearned models (huggingface_hub's ModelCard).

The card records what was done without revealing what was forgotten: base model (a Hub id only, never a local
path), method (paper name and citation), hyperparameters, the number of forget / retain examples and tokens,
evaluation results when available, and the hf_unlearn version. It never contains text from the data, nor anything
computed from its content: an unsalted hash of the forget token ids let anyone confirm a guessed secret (a short
phone number was recovered from the card alone in 174 guesses), so there is none. Counts only.

It follows `Trainer.create_model_card`'s conventions: `license`, `tags`, `language`, `finetuned_from` (as
`base_model`, when a Hub id) and dataset names (only those the user passes) go into the metadata, `Trainer.evaluate`
results into the evaluation table, hyperparameters are printed by value (`linear`, not `SchedulerType.LINEAR`),
`max_length` only when the data was cut at it (the longest example is always listed), and an adapter's card keeps
peft's metadata (`library_name: peft`, its tags, the PEFT version). No local path reaches the card.
"""

from __future__ import annotations

import enum
import math
import numbers
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

PROJECT_URL = "https://pypi.org/project/hf-unlearn/"

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
    longest: int = 0  # tokens of the longest example (what the data was chunked / truncated at, at most)


def summarize_dataset(dataset) -> DataSummary:
    """Count the examples and tokens of a dataset with `input_ids` (and the length of the longest example)."""
    column = dataset["input_ids"] if hasattr(dataset, "column_names") else [row["input_ids"] for row in dataset]
    lengths = [int(np.asarray(ids).size) for ids in column]
    return DataSummary(examples=len(lengths), tokens=sum(lengths), longest=max(lengths, default=0))


def readable(value):
    """A hyperparameter value as a reader expects it: enums by their value (`SchedulerType.LINEAR` -> `linear`)."""
    if isinstance(value, enum.Enum):
        return readable(value.value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def card_hyperparameters(args, forget: DataSummary, retain: DataSummary | None = None) -> dict[str, Any]:
    """`CARD_HYPERPARAMETERS` of `args`, readable. `max_length` is kept only when the data was cut at it (its
    longest forget or retain example has exactly `max_length` tokens): data chunked at 128 and passed tokenised is
    not described by the config's default 4096. The longest example is in the data table either way."""
    values = {name: readable(getattr(args, name)) for name in CARD_HYPERPARAMETERS if hasattr(args, name)}
    if "max_length" in values:
        longest = max(forget.longest, retain.longest if retain is not None else 0)
        if values["max_length"] is None or longest != values["max_length"]:
            del values["max_length"]
    return values


def method_description(trainer_class, forget_loss: str, retain_loss: str) -> str:
    """What the card says the model was unlearned with, from the objectives that ran (`forget_loss`, `retain_loss`,
    "none" for no retain objective): the method's paper name when they are the method's own; the paper name of
    the registered method with exactly these objectives, plus the objectives, when a config composed them on
    another method; else the two objectives by name (e.g. "forget_loss `npo` + retain_loss `kl`")."""
    from .objectives import NO_RETAIN
    from .registry import get_method, list_methods

    own = (trainer_class.forget_loss, trainer_class.retain_loss)
    if (forget_loss, retain_loss) == own:
        return trainer_class.paper_name or trainer_class.method_name
    objectives = f"forget_loss `{forget_loss}` + retain_loss `{retain_loss}`" if retain_loss != NO_RETAIN else (
        f"forget_loss `{forget_loss}`, no retain loss"
    )
    for name in list_methods():
        preset = get_method(name)
        if (preset.forget_loss, preset.retain_loss) == (forget_loss, retain_loss) and preset.paper_name:
            return f"{preset.paper_name} ({objectives})"
    return objectives


def numeric_results(metrics: dict[str, Any] | None) -> dict[str, float]:
    """The numbers of a metrics dict (as `Trainer.evaluate` returns), without timing entries."""
    skip = ("_runtime", "_samples_per_second", "_steps_per_second", "_preparation_time")
    out = {}
    for name, value in (metrics or {}).items():
        if isinstance(value, bool) or not isinstance(value, numbers.Number) or name.endswith(skip) or name == "epoch":
            continue
        out[name] = value.item() if isinstance(value, np.generic) else value
    return out


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(item) for item in value]


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
    license: str | None = None,
    tags: str | list[str] | None = None,
    language: str | list[str] | None = None,
    datasets: str | list[str] | None = None,
    library_name: str = "transformers",
    framework_versions: dict[str, str] | None = None,
):
    """A `huggingface_hub.ModelCard` for an unlearned model.

    `license`, `tags` (added to the card's own), `language` and `datasets` (names the user chose to publish) are
    the metadata `Trainer.create_model_card` takes. `base_model` is written only when it is a Hub id; a tag that
    holds a local path is dropped, so no local path reaches the card. `library_name="peft"` (with the PEFT version
    in `framework_versions`) describes an adapter folder.
    """
    from huggingface_hub import ModelCard, ModelCardData

    hub_id = base_model if base_model and _is_hub_id(base_model) else None
    all_tags = list(dict.fromkeys(["unlearning", "hf_unlearn", method] + [t for t in _as_list(tags) if _safe_tag(t)]))
    dataset_names = [name for name in _as_list(datasets) if _safe_tag(name)]
    if model_name and _looks_local(model_name):
        model_name = model_name.rstrip("/\\").replace("\\", "/").split("/")[-1]
    data = ModelCardData(
        base_model=hub_id,
        library_name=library_name,
        license=license,
        language=_as_list(language) or None,
        datasets=dataset_names or None,
        tags=all_tags,
        pipeline_tag="text-generation",
    )
    rows = [f"| {key} | {readable(value)} |" for key, value in hyperparameters.items()]  # exact, not rounded
    data_rows = [f"| forget | {forget.examples} | {forget.tokens} | {forget.longest} |"]
    if retain is not None:
        data_rows.append(f"| retain | {retain.examples} | {retain.tokens} | {retain.longest} |")
    license_line = (f"License: `{license}`." if license else
                    "License: none was given when this card was written (pass `license=` to `create_model_card` / "
                    "`push_to_hub`); the base model's license terms apply.")
    named = [f"Datasets, as named by the uploader: {', '.join(f'`{name}`' for name in dataset_names)}.", ""] if dataset_names else []
    versions = [f"- {name} {value}" for name, value in (framework_versions or {}).items()]
    sections = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# {model_name or 'Unlearned model'}",
        "",
        f"This model is {f'`{hub_id}`' if hub_id else 'a local model'} after machine unlearning with **{paper_name}** "
        f"(`method: {method}`) using [hf_unlearn]({PROJECT_URL}) {version}, following Yao et al., "
        "*Machine Unlearning of Pre-trained Large Language Models* (ACL 2024).",
        "",
        "Unlearning is approximate: the forgotten data's influence is reduced, not provably removed. Check the "
        "evaluation below (forget vs. unseen data, membership inference) before relying on it.",
        "",
        license_line,
        "",
        "## Data",
        "",
        "The forgotten text is not reproduced here, nor anything computed from it. Counts are of chunks / tokens "
        "after tokenization; `longest` is the longest example in tokens (the length the data was chunked at, at most).",
        "",
        *named,
        "| set | examples | tokens | longest |",
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
        *(["### Framework versions", "", *versions, ""] if versions else []),
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


def _looks_local(name: str) -> bool:
    """A local path (absolute, relative, home-relative, Windows, or existing here) rather than a name or Hub id."""
    import os

    return (name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1
            or ("/" in name and os.path.exists(name)))


def _safe_tag(tag: str) -> bool:
    """A tag (or dataset name) that names no local path (peft's `base_model:adapter:<path>` does when the base
    was loaded from a folder)."""
    if tag.startswith("base_model:"):
        return _is_hub_id(tag.rsplit(":", 1)[-1])
    return not _looks_local(tag)


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
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)
