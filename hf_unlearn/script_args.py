"""Arguments of the recipes (model and data), and parsing of a flat YAML config with command-line overrides.

A config is one flat YAML mapping whose keys are fields of `ScriptArguments` or of the chosen method's config
class (which extends `TrainingArguments`). `method` picks the class; command-line flags (`--learning_rate 1e-5`)
override the file. An unknown key is an error that names the key.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field, fields

import yaml

from .config import UnlearningConfig
from .distributed import check_deepspeed_file
from .registry import get_method


@dataclass
class ScriptArguments:
    r"""
    Model and data arguments of `recipes/unlearn.py`.

    Parameters:
        model_name_or_path (`str` or `None`, defaults to `None`):
            Model to unlearn from (local folder or Hub id). `None` runs the embedded default job.
        ref_model_name_or_path (`str` or `None`, defaults to `None`):
            Original model for methods that need one; `None` reloads `model_name_or_path`.
        forget_data (`str` or `None`): documents or QA records to forget (file, folder or Hub dataset id).
        retain_data (`str` or `None`): data to keep (in-distribution or general) for methods with a retain term.
        approximate_data (`str` or `None`): same-domain data the model never saw (the paper's "approximate" set),
            used to report the unseen-data NLL before and after.
        forget_split, retain_split, approximate_split (`str`, default `"train"`): split of each Hub dataset to use
            (ignored for local files); the paper's `llmunlearn/unlearn_dataset` has forget / retain / approximate.
        data_format (`str`, defaults to `"documents"`): "documents" (chunked text) or "qa" (prompt-masked records).
        text_column (`str`, defaults to `"text"`): text column of document data.
        question_column, answer_column (`str`): columns of QA records.
        max_examples (`int` or `None`): keep at most this many examples of each split (quick runs).
        dtype (`str`, defaults to `"auto"`): dtype for loading the model ("auto", "bfloat16", "float32").
        eval_every_steps (`int`, defaults to `5`): evaluation period (optimizer steps) during unlearning.
        eval_max_examples (`int` or `None`, defaults to `256`): examples of each split evaluated during unlearning.
        stop_at_unseen_nll (`bool`, defaults to `True`): stop when the forget NLL reaches the approximate set's
            NLL measured on the original model (Yao et al. 2024's guideline); needs `approximate_data`.
        max_retain_nll_increase (`float` or `None`): stop when the retain NLL rises by more than this share.
    """

    model_name_or_path: str | None = field(default=None, metadata={"help": "Model to unlearn; None = embedded default."})
    ref_model_name_or_path: str | None = field(default=None, metadata={"help": "Original model; None = the model path."})
    forget_data: str | None = field(default=None, metadata={"help": "Forget set: file, folder or Hub dataset id."})
    retain_data: str | None = field(default=None, metadata={"help": "Retain set (in-distribution or general)."})
    approximate_data: str | None = field(default=None, metadata={"help": "Unseen same-domain data for reporting."})
    forget_split: str = field(default="train", metadata={"help": "Split of a Hub forget_data (e.g. forget)."})
    retain_split: str = field(default="train", metadata={"help": "Split of a Hub retain_data (e.g. retain)."})
    approximate_split: str = field(default="train", metadata={"help": "Split of a Hub approximate_data."})
    data_format: str = field(default="documents", metadata={"help": "documents (chunked text) or qa."})
    text_column: str = field(default="text", metadata={"help": "Text column of document data."})
    question_column: str = field(default="question", metadata={"help": "Question column of QA data."})
    answer_column: str = field(default="answer", metadata={"help": "Answer column of QA data."})
    max_examples: int | None = field(default=None, metadata={"help": "Keep at most N examples per split."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto, bfloat16, float16, float32."})
    eval_every_steps: int = field(
        default=5, metadata={"help": "Evaluate forget/approximate/retain NLL and MIA AUC every N optimizer steps."}
    )
    eval_max_examples: int | None = field(
        default=256, metadata={"help": "Evaluate at most this many examples of each split during unlearning."}
    )
    stop_at_unseen_nll: bool = field(
        default=True,
        metadata={"help": "The paper's rule: stop when forget NLL reaches the approximate set's NLL at the start."},
    )
    max_retain_nll_increase: float | None = field(
        default=None, metadata={"help": "Blow-up guard: stop when retain NLL rises by more than this share (0.1 = 10 percent)."}
    )

    def __post_init__(self):
        if self.data_format not in ("documents", "qa"):
            raise ValueError(f"data_format={self.data_format!r} is unknown; use 'documents' or 'qa'.")
        if self.model_name_or_path is not None and self.forget_data is None:
            raise ValueError("forget_data is required when model_name_or_path is set (what should be forgotten?).")


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file {path!r} does not exist; pass an existing YAML file to --config.")
    with open(path) as handle:
        config = yaml.safe_load(handle) or {}
    if not isinstance(config, dict):
        raise ValueError(f"Config file {path!r} must hold a flat YAML mapping of argument names to values.")
    return config


def _flag_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def parse_args(args: list[str] | None = None) -> tuple[UnlearningConfig, ScriptArguments]:
    """Parse `--config file.yaml` plus command-line overrides into (method config, script arguments)."""
    from trl import TrlParser

    args = list(sys.argv[1:] if args is None else args)
    config_path = _flag_value(args, "--config")
    file_values = _read_yaml(config_path) if config_path else {}
    method = _flag_value(args, "--method") or file_values.get("method") or UnlearningConfig.method
    config_class = get_method(method).config_class
    known = {f.name for cls in (config_class, ScriptArguments) for f in fields(cls)} | {"env"}
    unknown = sorted(set(file_values) - known)
    if unknown:
        hints = [f"{key!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(key, known, 1)) else repr(key) for key in unknown]
        raise ValueError(
            f"Unknown key(s) in {config_path}: {', '.join(hints)}. Remove them or use a field of ScriptArguments "
            f"or {config_class.__name__} (`python recipes/unlearn.py --help` lists them)."
        )
    check_deepspeed_file(_flag_value(args, "--deepspeed") or file_values.get("deepspeed"))
    parser = TrlParser((config_class, ScriptArguments))
    training_args, script_args = parser.parse_args_and_config(args)
    training_args.method = method
    return training_args, script_args
