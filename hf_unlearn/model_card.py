"""Model cards for unlearned models (huggingface_hub's ModelCard).

The card records what was done without revealing what was forgotten: base model (a Hub id only, never a local
path), method (paper name and citation), hyperparameters, the number of forget examples, the retain set's size,
how the retain / unseen side moved, and the hf_unlearn version.

Nothing on the card is computed from the forget set's content, because anyone who downloads the model can compute
the same value for each candidate text and keep the one that matches: an exact forget NLL (to 4 digits) picks the
true 8-digit PIN out of 2,001 candidates, an exact token count gives a secret's length, an unsalted hash confirms a
guess outright. So the card has no forget NLL, no membership-attack AUC (forget against unseen data), no forget
token count or longest forget example, and `max_length` is not chosen by the forget data. The one forget-side
fact it states is coarse and documented: a membership verdict word per evaluation (`MEMBERSHIP_VERDICTS`), from
the attacks' AUC intervals, when they were computed. Those metrics stay in the local reports and logs.

It follows `Trainer.create_model_card`'s conventions: `license`, `tags`, `language`, `finetuned_from` (as
`base_model`, when a Hub id) and dataset names (only those the user passes) go into the metadata, `Trainer.evaluate`
results into the evaluation table (not those of an evaluation on the forget set), hyperparameters are printed by
value (`linear`, not `SchedulerType.LINEAR`), `max_length` when the trainer tokenised the data at it or the retain
set was cut at it, and an adapter's card keeps peft's metadata (`library_name: peft`, its tags, the PEFT version).
No local path reaches the card.
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
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "world_size",
    "max_length",
    "forget_weight",
    "retain_weight",
    "pairing_seed",
    "seed",
    "bf16",
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


def card_hyperparameters(
    args, retain: DataSummary | None = None, tokenised_at_max_length: bool = False
) -> dict[str, Any]:
    """`CARD_HYPERPARAMETERS` of `args`, readable. `max_length` is kept when it describes the data: the trainer
    tokenised raw data at it (`tokenised_at_max_length`), or the longest retain example has exactly `max_length`
    tokens. Data chunked at 128 and passed tokenised is not described by the config's default 4096. The forget
    data never decides it (whether a forget example reaches `max_length` tells a secret's length)."""
    values = {name: readable(getattr(args, name)) for name in CARD_HYPERPARAMETERS if hasattr(args, name)}
    if "max_length" in values:
        cut = retain is not None and retain.longest == values["max_length"]
        if values["max_length"] is None or not (tokenised_at_max_length or cut):
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
    objectives = (
        f"forget_loss `{forget_loss}` + retain_loss `{retain_loss}`"
        if retain_loss != NO_RETAIN
        else (f"forget_loss `{forget_loss}`, no retain loss")
    )
    for name in list_methods():
        preset = get_method(name)
        if (preset.forget_loss, preset.retain_loss) == (forget_loss, retain_loss) and preset.paper_name:
            return f"{preset.paper_name} ({objectives})"
    return objectives


# Metrics computed from the forget set (its NLL, membership attacks of it against unseen data): local reports only.
FORGET_SIDE = ("forget", "mia_auc")

# The membership verdict, the card's one forget-side fact: one of three words per evaluation, from the bootstrap
# AUC intervals of every attack (forget against unseen data).
MEMBERSHIP_VERDICTS = {
    "indistinguishable": "every attack's AUC interval contains 0.5",
    "separable": "an attack's AUC interval lies above 0.5 (the forget set still looks like training data)",
    "over-unlearned": "an attack's AUC interval lies below 0.5 (the forget set looks less likely than unseen data)",
}


def is_forget_side(name: str) -> bool:
    """Whether a metric name is computed from the forget set (`eval_forget_nll`, `eval_mia_auc_min_k_20`, ...)."""
    return any(part in name for part in FORGET_SIDE)


def membership_verdict(metrics: dict[str, Any]) -> str | None:
    """A word of `MEMBERSHIP_VERDICTS` from the `*mia_auc_<attack>_low` / `_high` entries of `metrics`; None when
    no interval was computed (or one is not finite)."""
    lows = {
        name[: -len("_low")]: value for name, value in metrics.items() if "mia_auc_" in name and name.endswith("_low")
    }
    intervals = [(low, metrics.get(f"{name}_high")) for name, low in lows.items()]
    if not intervals or not all(isinstance(v, numbers.Number) and math.isfinite(v) for pair in intervals for v in pair):
        return None
    if any(high < 0.5 for _, high in intervals):
        return "over-unlearned"
    if all(low <= 0.5 for low, _ in intervals):
        return "indistinguishable"
    return "separable"


def public_results(results: dict[str, dict[str, Any]], numbers_only: bool = False) -> dict[str, dict[str, Any]]:
    """The results a card may publish: every metric not computed from the forget set, plus the membership verdict
    (a word, `membership`) where attack intervals were computed. `numbers_only`: the numbers alone (no verdict, no
    timing entries), as the run manifest records them."""
    out = {}
    for stage, metrics in results.items():
        source = numeric_results(metrics) if numbers_only else metrics
        public = {name: value for name, value in source.items() if not is_forget_side(name)}
        verdict = None if numbers_only else membership_verdict(metrics)
        if verdict is not None:
            public["membership"] = verdict
        if public:
            out[stage] = public
    return out


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
    ledger: dict[str, Any] | None = None,
):
    """A `huggingface_hub.ModelCard` for an unlearned model.

    `license`, `tags` (added to the card's own), `language` and `datasets` (names the user chose to publish) are
    the metadata `Trainer.create_model_card` takes. `base_model` is written only when it is a Hub id; a tag that
    holds a local path is dropped, so no local path reaches the card. `library_name="peft"` (with the PEFT version
    in `framework_versions`) describes an adapter folder. `ledger` (`hf_unlearn.ledger`) lists the model's
    unlearning requests (counts and dates) and links the manifest and the ledger files.
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
    data_rows = [f"| forget | {forget.examples} | – | – |"]  # its token counts tell a secret's length
    if retain is not None:
        data_rows.append(f"| retain | {retain.examples} | {retain.tokens} | {retain.longest} |")
    license_line = (
        f"License: `{license}`."
        if license
        else "License: none was given when this card was written (pass `license=` to `create_model_card` / "
        "`push_to_hub`); the base model's license terms apply."
    )
    named = (
        [f"Datasets, as named by the uploader: {', '.join(f'`{name}`' for name in dataset_names)}.", ""]
        if dataset_names
        else []
    )
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
        "The forgotten text is not reproduced here, nor anything computed from it (no forget-set NLL, token count or "
        "membership AUC: each would let a reader test a guessed text); those stay in the local reports. Counts are "
        "of chunks / tokens after tokenization; `longest` is the longest example in tokens.",
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
        *_results_table(public_results(results or {})),
        *(
            [
                "",
                "`membership`: "
                + "; ".join(f"*{word}*: {meaning}" for word, meaning in MEMBERSHIP_VERDICTS.items())
                + ".",
            ]
            if any("membership" in values for values in public_results(results or {}).values())
            else []
        ),
        "",
        *(_requests_section(ledger) if ledger else []),
        *(["### Framework versions", "", *versions, ""] if versions else []),
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return ModelCard("\n".join(sections))


def _requests_section(ledger: dict[str, Any]) -> list[str]:
    """The card's "Unlearning requests" section: each request of the ledger as counts and dates, the original
    stopping target, and links to the manifest and the ledger."""
    from .ledger import LEDGER_FILE, utc_date
    from .manifest import MANIFEST_FILE

    requests = ledger.get("requests") or []
    rows = [
        f"| {r.get('request')} | {utc_date(r.get('date'))} | {r.get('method')} | {_format(r.get('forget_examples'))} | "
        f"{_format(r.get('retain_examples'))} | {_format(r.get('steps'))} | {r.get('stop')} |"
        for r in requests
    ]
    original = ledger.get("original_unseen_nll")
    target = (
        f"Stopping target of every request: the unseen data's NLL on the original model, {_format(original)} "
        f"({ledger.get('original_unseen_nll_source')})."
        if original is not None
        else "Stopping target: the original model's unseen-data NLL is not known to this ledger (pass "
        "`--original_unseen_nll` to the next request)."
    )
    return [
        "## Unlearning requests",
        "",
        f"This model went through {len(requests)} unlearning request(s) with hf_unlearn, one after another (counts "
        "and dates only: what each request forgot is not recorded).",
        "",
        "| request | date | method | forget examples | retain examples | steps | stop |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        target,
        "",
        f"How this model was made: [`{MANIFEST_FILE}`]({MANIFEST_FILE}) (library versions, engine, batch, seeds, the "
        "full configuration; `hf-unlearn train --from_manifest` reruns it); every request with its manifest, chained "
        f"by SHA-256: [`{LEDGER_FILE}`]({LEDGER_FILE}).",
        "",
    ]


def _is_hub_id(name: str) -> bool:
    """A Hub model id ("org/name"), not a local path (absolute, relative, or existing on this machine)."""
    import os

    return name.count("/") == 1 and not name.startswith(("/", ".", "~")) and not os.path.exists(name)


def _looks_local(name: str) -> bool:
    """A local path (absolute, relative, home-relative, Windows, or existing here) rather than a name or Hub id."""
    import os

    return (
        name.startswith(("/", ".", "~"))
        or "\\" in name
        or name.count("/") > 1
        or ("/" in name and os.path.exists(name))
    )


def _safe_tag(tag: str) -> bool:
    """A tag (or dataset name) that names no local path (peft's `base_model:adapter:<path>` does when the base
    was loaded from a folder)."""
    if tag.startswith("base_model:"):
        return _is_hub_id(tag.rsplit(":", 1)[-1])
    return not _looks_local(tag)


def _results_table(results: dict[str, dict[str, float]] | None) -> list[str]:
    if not results:
        return ["No evaluation of the retain or unseen data was recorded with this model."]
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
