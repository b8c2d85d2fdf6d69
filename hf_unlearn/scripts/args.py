"""Arguments of the scripts (data, run safety), and parsing of a flat YAML config with command-line overrides.

A config is one flat YAML mapping whose keys are fields of `ScriptArguments`, of trl's `ModelConfig` (the model:
`model_name_or_path`, `model_revision`, `dtype`, `attn_implementation`, the LoRA fields with `use_peft`, 4/8-bit
loading), or of the chosen method's config class (which extends `TrainingArguments`), so a config or a script can
combine them with trl's own scripts' arguments. `method` picks the class; command-line flags (`--learning_rate 1e-5`)
override the file. An unknown key is an error that names the key. Every field typed as a single value (a number,
a string, a flag) must get one: a YAML list or mapping there, or a non-finite number (`.nan`, `.inf`), is an error
that names the field, before anything is loaded.
"""

from __future__ import annotations

import difflib
import enum
import math
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field, fields

import yaml

from ..config import UnlearningConfig
from ..distributed import check_launcher_for_deepspeed, load_deepspeed_config
from ..plan import check_method_fields, config_for

STOPPING_RULES = ("paper", "worst_case")
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embedded_default.yaml")


@dataclass
class ScriptArguments:
    r"""
    Data and run-safety arguments of `hf_unlearn.scripts.unlearn` (and `recipes/unlearn.py`). The model comes from
    trl's `ModelConfig` (`model_name_or_path`: `None` runs the embedded default job; `dtype` defaults to "auto" here,
    the checkpoint's own dtype, where trl's default is float32; `use_peft` and the `lora_*` fields train a LoRA
    adapter).

    Parameters:
        ref_model_name_or_path (`str` or `None`, defaults to `None`):
            Original model for methods that need one; `None` reloads `model_name_or_path`.
        forget_data (`str` or `None`): documents or QA records to forget (one file, folder or Hub dataset id).
        retain_data (`str` or `None`): data to keep (in-distribution or general) for methods with a retain term.
        approximate_data (`str` or `None`): same-domain data the model never saw (the paper's "approximate" set),
            used to report the unseen-data NLL before and after, and as the stopping target.
        unseen_data (`str` or `None`): more unseen same-domain data, disjoint from `approximate_data`, from which
            objectives that target the unseen level (`unseen_match`) take their targets, so that the evaluation's
            non-members are not the data the targets were fitted to. `None`: such objectives use `approximate_data`
            (with a warning: the membership attacks are then not independent of the targets).
        forget_split, retain_split, approximate_split, unseen_split (`str`, default `"train"`): split of each Hub dataset to use
            (ignored for local files); the paper's `llmunlearn/unlearn_dataset` has forget / retain / approximate.
        data_format (`str`, defaults to `"documents"`): "documents" (chunked text) or "qa" (prompt-masked records).
        text_column (`str`, defaults to `"text"`): text column of document data.
        question_column, answer_column (`str`): columns of QA records.
        max_examples (`int` or `None`): keep at most this many examples of each split (quick runs).
        eval_every_steps (`int`, defaults to `5`): evaluation period (optimizer steps) during unlearning.
        eval_max_examples (`int` or `None`, defaults to `256`): examples of each split evaluated during unlearning.
        stop_at_unseen_nll (`bool`, defaults to `True`): stop when the forget NLL reaches the approximate set's
            NLL measured on the original model (Yao et al. 2024's guideline); needs `approximate_data`. Used by
            `stopping_rule="paper"`.
        mia_attacks (`str`, defaults to `"all"`): membership-inference attacks (forget vs approximate) evaluated at
            every evaluation, each AUC with a bootstrap interval, all from one forward pass per split: "all" (LOSS,
            Min-K% and Min-K%++ at K = 10..100), "loss" (the paper's single attack), or a comma-separated list of
            names of `hf_unlearn.callbacks.available_attacks()` (e.g. "loss,min_k_20"). Needs `approximate_data`.
        mia_resamples (`int`, defaults to `1000`): bootstrap resamples of each AUC interval (95 percent).
        stopping_rule (`str`, defaults to `"paper"`): "paper": stop when the forget NLL reaches the unseen NLL
            (`stop_at_unseen_nll`); "worst_case": stop once every attack of `mia_attacks` has an AUC interval
            containing 0.5 (forgotten by the strongest attack, not only LOSS), or as over-unlearning once an
            interval lies entirely below 0.5. Both keep the blow-up guard.
        stop_at_step (`int` or `None`, defaults to `None`): stop at this optimizer step, by no other rule than the
            blow-up guard (the schedule keeps `max_steps`): the step `hf-unlearn tune` chose on `unseen_data`, so
            that this run's verdict on `approximate_data` had no say. A multiple of `eval_every_steps`.
        max_retain_nll_increase (`float` or `None`, defaults to `0.5`): blow-up guard: stop, and do not save the
            model, when the retain NLL rises by more than this share of its start value (needs `retain_data`).
            Non-finite NLLs always stop the run. `None` disables the retain guard.
        save_best (`bool`, defaults to `False`): also save the evaluation closest to the target (within the
            guard's limits) to `<output_dir>/best`.
        demo_model (`str`, defaults to `"smollm2-135m"`): the embedded default job's model (used only without
            `model_name_or_path`): "smollm2-135m" (SmolLM2-135M-Instruct) or "gemma3-270m" (Gemma-3-270M base,
            Gemma Terms of Use); see `hf_unlearn.scripts.demo.DEMO_MODELS`.
        show_forget_samples (`bool`, defaults to `False`): print a verbatim continuation sample of the most
            memorised forget example before and after. Off by default: it prints forget text.
        overwrite_output_dir (`bool`, defaults to `False`): empty a non-empty `output_dir` right before training
            (a run that fails while loading its model or data leaves it as it was).
        from_manifest (`str` or `None`, defaults to `None`): the `unlearning_manifest.json` of an earlier run: its
            configuration is this run's config (instead of `--config`; command-line flags override it). Data files,
            their splits, the output folder, the Hub destination and a local model are given again.
        original_unseen_nll (`float` or `None`, defaults to `None`): the unseen (approximate) set's NLL on the
            original model, before any unlearning: the stopping target of every request. A model unlearned by
            hf_unlearn carries it in its `unlearning_ledger.json`; give it for a model whose first unlearning was
            made otherwise (measure it with `hf-unlearn eval` on the original model). It replaces the ledger's.
        earlier_forget_data (`list[str]` or `None`, defaults to `None`): the forget sets of the model's earlier
            requests (files, folders or Hub ids, in `data_format`), evaluated at every evaluation with the same
            attacks as the new one; one that comes back stops the run (`hf_unlearn.earlier`).
        max_earlier_nll_drop (`float` or `None`, defaults to `0.05`): an earlier forget set came back when its NLL
            falls more than this share below its level at the start of the run (or an attack separates it again).
            `None`: report nothing and never stop on them.
        global_batch_size (`int` or `None`, defaults to `None`): examples per optimizer step over all processes and
            accumulation steps that this configuration is written for. Set, a launch whose
            `per_device_train_batch_size x gradient_accumulation_steps x world size` differs (or whose world size
            does not divide it) stops before loading, naming the accumulation that gives it (`hf_unlearn.launch`).
            `None`: whatever the launch gives.
    """

    ref_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Original model; None = the model path."}
    )
    forget_data: str | None = field(default=None, metadata={"help": "Forget set: one file, folder or Hub dataset id."})
    retain_data: str | None = field(default=None, metadata={"help": "Retain set (in-distribution or general)."})
    approximate_data: str | None = field(default=None, metadata={"help": "Unseen same-domain data (target, report)."})
    unseen_data: str | None = field(
        default=None, metadata={"help": "Unseen data for unseen_match's targets, disjoint from approximate_data."}
    )
    forget_split: str = field(default="train", metadata={"help": "Split of a Hub forget_data (e.g. forget)."})
    retain_split: str = field(default="train", metadata={"help": "Split of a Hub retain_data (e.g. retain)."})
    approximate_split: str = field(default="train", metadata={"help": "Split of a Hub approximate_data."})
    unseen_split: str = field(default="train", metadata={"help": "Split of a Hub unseen_data."})
    data_format: str = field(default="documents", metadata={"help": "documents (chunked text) or qa."})
    text_column: str = field(default="text", metadata={"help": "Text column of document data."})
    question_column: str = field(default="question", metadata={"help": "Question column of QA data."})
    answer_column: str = field(default="answer", metadata={"help": "Answer column of QA data."})
    max_examples: int | None = field(default=None, metadata={"help": "Keep at most N examples per split."})
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
    mia_attacks: str = field(
        default="all",
        metadata={
            "help": "Membership attacks evaluated during unlearning (AUC with a bootstrap interval each, one "
            "forward pass per split): all, loss (the paper's single attack) or a comma-separated list "
            "such as loss,min_k_20. Needs approximate_data."
        },
    )
    mia_resamples: int = field(default=1000, metadata={"help": "Bootstrap resamples of each attack's AUC interval."})
    stopping_rule: str = field(
        default="paper",
        metadata={
            "help": "paper: stop when forget NLL reaches the unseen NLL of the original model. worst_case: stop "
            "when every attack's AUC interval contains 0.5 (or one lies below: over-unlearning)."
        },
    )
    stop_at_step: int | None = field(
        default=None,
        metadata={
            "help": "Stop at this optimizer step, by no other rule than the blow-up guard (the step hf-unlearn tune "
            "chose on unseen_data); a multiple of eval_every_steps."
        },
    )
    max_retain_nll_increase: float | None = field(
        default=0.5,
        metadata={
            "help": "Blow-up guard: stop (model not saved, exit 3) when retain NLL rises by more than this "
            "share of its start (0.5 = 50 percent); needs retain_data. None disables it."
        },
    )
    save_best: bool = field(
        default=False, metadata={"help": "Save the evaluation closest to the target to output_dir/best."}
    )
    demo_model: str = field(
        default="smollm2-135m", metadata={"help": "Embedded default job's model: smollm2-135m or gemma3-270m."}
    )
    show_forget_samples: bool = field(
        default=False,
        metadata={"help": "Print a verbatim sample of forget text before/after (off: forget text stays private)."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Empty a non-empty output_dir right before training (not on a failed load)."}
    )
    from_manifest: str | None = field(
        default=None, metadata={"help": "Rerun the configuration of an unlearning_manifest.json (instead of --config)."}
    )
    earlier_forget_data: list[str] | None = field(
        default=None, metadata={"help": "Forget sets of earlier requests, evaluated to check they stay forgotten."}
    )
    max_earlier_nll_drop: float | None = field(
        default=0.05,
        metadata={"help": "An earlier forget set came back when its NLL falls this share below its start."},
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Examples per optimizer step over all processes: a launch that gives another stops "
            "(per_device_train_batch_size x gradient_accumulation_steps x world size must equal it)."
        },
    )
    original_unseen_nll: float | None = field(
        default=None,
        metadata={
            "help": "Unseen NLL of the original model (stopping target) when the model has no hf_unlearn ledger."
        },
    )

    def __post_init__(self):
        check_single_values(self)
        if self.data_format not in ("documents", "qa"):
            raise ValueError(f"data_format={self.data_format!r} is unknown; use 'documents' or 'qa'.")
        for name in ("max_examples", "eval_max_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value} keeps no example; use a positive number, or None for all of them.")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            raise ValueError(f"global_batch_size={self.global_batch_size} must be at least 1, or None for any.")
        if self.eval_every_steps < 1:
            raise ValueError(f"eval_every_steps={self.eval_every_steps} must be at least 1.")
        if self.stop_at_step is not None and (self.stop_at_step < 1 or self.stop_at_step % self.eval_every_steps):
            raise ValueError(
                f"stop_at_step={self.stop_at_step} must be a positive multiple of eval_every_steps="
                f"{self.eval_every_steps} (the run stops at an evaluation); e.g. {max(self.eval_every_steps, 1)}."
            )
        if self.stopping_rule not in STOPPING_RULES:
            raise ValueError(f"stopping_rule={self.stopping_rule!r} is unknown; use one of {list(STOPPING_RULES)}.")
        if self.mia_resamples < 0:
            raise ValueError(f"mia_resamples={self.mia_resamples} is negative; use 0 (no intervals) or e.g. 1000.")
        if self.stopping_rule == "worst_case" and self.mia_resamples < 1:
            raise ValueError(
                "stopping_rule=worst_case needs AUC intervals: set mia_resamples to at least 1 (e.g. 1000)."
            )
        from .demo import demo_model

        demo_model(self.demo_model)  # an unknown demo model fails here, before anything is loaded
        from ..callbacks import resolve_attacks

        resolve_attacks(self.attack_names())  # an unknown attack name fails here, before anything is loaded
        if self.max_retain_nll_increase is not None and self.max_retain_nll_increase < 0:
            raise ValueError(
                f"max_retain_nll_increase={self.max_retain_nll_increase} is negative; use a share >= 0 or None."
            )

    def attack_names(self) -> str | list[str]:
        """`mia_attacks` as `UnlearningEvalCallback(attacks=...)` takes it: "all" or a list of names."""
        if self.mia_attacks.strip() == "all":
            return "all"
        return [name.strip() for name in self.mia_attacks.split(",") if name.strip()]


# ------------------------------------------------------------------ single-valued fields

_SCALARS = (bool, int, float, str, type(None))


def _scalar_kinds(hint) -> tuple[type, ...] | None:
    """The scalar types a field accepts, or None when the field also accepts lists, mappings or objects."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = [_scalar_kinds(arg) for arg in typing.get_args(hint)]
        return None if any(k is None for k in kinds) else tuple(t for k in kinds for t in k)
    if origin is typing.Literal:
        return tuple({type(value) for value in typing.get_args(hint)})
    if isinstance(hint, type) and (hint in _SCALARS or issubclass(hint, enum.Enum)):
        return (float, int) if hint is float else (hint,)
    return None


def scalar_fields(cls) -> dict[str, tuple[type, ...]]:
    """Fields of dataclass `cls` that take a single value (number, string, flag, enum), with their types."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an unresolvable annotation: check nothing rather than guess
        return {}
    out = {}
    for item in fields(cls):
        kinds = _scalar_kinds(hints.get(item.name))
        if kinds is not None:
            out[item.name] = kinds
    return out


def check_value(name: str, value, kinds: tuple[type, ...], where: str = "") -> None:
    """One-line ValueError for a list / mapping, or a non-finite number, given to a single-valued field."""
    if isinstance(value, (list, tuple, dict, set)):
        shown = "a list" if isinstance(value, (list, tuple, set)) else "a mapping"
        hint = " (one file, folder or Hub id; put several files in one folder)" if name.endswith("_data") else ""
        raise ValueError(f"{name}{where} is {shown}, but it takes a single value{hint}; give one value.")
    if isinstance(value, float) and float in kinds and not math.isfinite(value):
        raise ValueError(f"{name}={value}{where} is not a finite number; give a finite value.")


def check_single_values(obj, where: str = "") -> None:
    """Check every single-valued field of the dataclass instance `obj` (see `check_value`)."""
    for name, kinds in scalar_fields(type(obj)).items():
        check_value(name, getattr(obj, name), kinds, where)


# ------------------------------------------------------------------ parsing


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file {path!r} does not exist; pass an existing YAML file to --config.")
    with open(path) as handle:
        try:
            config = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise ValueError(f"Config file {path!r} is not valid YAML{at}; fix the syntax.") from None
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


MODEL_DEFAULTS = {"dtype": "auto"}  # trl's ModelConfig loads float32; a checkpoint's own dtype is what users expect


# A negative number, also in scientific notation (`--learning_rate -1e-3`), is a value, not an option.
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def unknown_arguments_message(remaining: list[str]) -> str:
    """One line naming unknown options; other leftover values are counted, not shown (a value without a flag can be
    pasted text, e.g. forget text after `--forget_data`)."""
    flags = [arg.split("=", 1)[0] for arg in remaining if arg.startswith("-")]
    values = len(remaining) - len(flags)
    parts = []
    if flags:
        parts.append(f"unknown option(s) {', '.join(flags)}")
    if values:
        parts.append(f"{values} value(s) without an option (not shown; quote a value that holds spaces)")
    return f"{' and '.join(parts)}; `--help` lists every option."


def make_parser(*classes: type):
    """A `TrlParser` over `classes` + trl's `ModelConfig`, with this package's model defaults (`dtype="auto"`).

    A bad command line is one line on stderr and exit 2 (not argparse's full usage, hundreds of lines for these
    dataclasses), with a one-line hint to `--help`; unknown options are a ValueError naming them."""
    from trl import ModelConfig, TrlParser

    class Parser(TrlParser):
        def error(self, message):
            self.exit(2, f"hf-unlearn: error: {message}\nhf-unlearn: `--help` lists every option.\n")

        def parse_args_into_dataclasses(self, args=None, return_remaining_strings=False, **kwargs):
            *outputs, remaining = super().parse_args_into_dataclasses(args, return_remaining_strings=True, **kwargs)
            if return_remaining_strings:
                return (*outputs, remaining)
            if remaining:
                raise ValueError(unknown_arguments_message(remaining))
            return tuple(outputs)

    parser = Parser((*classes, ModelConfig))
    parser._negative_number_matcher = NEGATIVE_NUMBER  # argparse's own misses -1e-3
    parser.set_defaults(**MODEL_DEFAULTS)
    return parser


def model_init_kwargs(model_args) -> dict:
    """`from_pretrained` keyword arguments from trl's `ModelConfig`, as trl's scripts build them (revision, dtype,
    attention implementation, 4/8-bit quantisation)."""
    from trl import get_quantization_config

    kwargs = {"revision": model_args.model_revision, "dtype": model_args.dtype}
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    return kwargs


def parse_args(args: list[str] | None = None):
    """Parse `--config file.yaml` plus command-line overrides into (method config, script arguments, trl
    `ModelConfig`)."""
    from trl import ModelConfig

    args = list(sys.argv[1:] if args is None else args)
    manifest_path = _flag_value(args, "--from_manifest")
    if manifest_path is not None:
        return _parse_from_manifest(args, manifest_path)
    config_path = _flag_value(args, "--config")
    file_values = _read_yaml(config_path) if config_path else {}
    method = _flag_value(args, "--method") or file_values.get("method") or UnlearningConfig.method
    if not isinstance(method, str):
        raise ValueError(f"method in {config_path} must be one name (e.g. ga); got {type(method).__name__}.")
    objectives = {k: _flag_value(args, f"--{k}") or file_values.get(k) for k in ("forget_loss", "retain_loss")}
    objectives = {k: v if isinstance(v, str) else None for k, v in objectives.items()}  # others: check_value's error
    config_class = config_for(method, **objectives)  # the method's fields and those of the objectives it runs
    classes = (config_class, ScriptArguments, ModelConfig)
    known = {f.name for cls in classes for f in fields(cls)} | {"env"}
    flags = [a[2:].split("=", 1)[0] for a in args if a.startswith("--")]
    check_method_fields([*file_values, *flags], config_class)  # e.g. rmu_layer for ga: names the methods taking it
    unknown = sorted(set(file_values) - known)
    if unknown:
        hints = [
            f"{key!r} (did you mean {close[0]!r}?)"
            if (close := difflib.get_close_matches(key, known, 1))
            else repr(key)
            for key in unknown
        ]
        raise ValueError(
            f"Unknown key(s) in {config_path}: {', '.join(hints)}. Remove them or use a field of ScriptArguments, "
            f"trl's ModelConfig or {config_class.__name__} (`hf-unlearn train --help` lists them)."
        )
    # Lists / mappings where one value is expected, before argparse and the dataclasses see them.
    single = {key: kinds for cls in classes for key, kinds in scalar_fields(cls).items()}
    for key, value in file_values.items():
        if key in single:
            check_value(key, value, single[key], f" in {config_path}")
    # DeepSpeed: the JSON file (named with its error) and a launcher, before TrainingArguments reads the file.
    deepspeed = _flag_value(args, "--deepspeed") or file_values.get("deepspeed")
    load_deepspeed_config(deepspeed if isinstance(deepspeed, str) else None)
    check_launcher_for_deepspeed(bool(deepspeed))
    training_args, script_args, model_args = make_parser(config_class, ScriptArguments).parse_args_and_config(args)
    training_args.method = method
    check_single_values(training_args)  # e.g. `--forget_weight nan` from the command line
    check_single_values(model_args)
    if model_args.model_name_or_path is not None and script_args.forget_data is None:
        raise ValueError("forget_data is required when model_name_or_path is set (what should be forgotten?).")
    return training_args, script_args, model_args


def _parse_from_manifest(args: list[str], manifest_path: str):
    """`parse_args` with the configuration of a run manifest as the config file (`--from_manifest`)."""
    import tempfile

    from trl import ModelConfig

    from ..manifest import read_manifest, rerun_values

    if _flag_value(args, "--config") is not None:
        raise ValueError("--config and --from_manifest both give the configuration; pass one of them.")
    manifest = read_manifest(manifest_path)
    config = manifest["config"]
    method = config.get("method") or UnlearningConfig.method
    objectives = {k: config.get(k) if isinstance(config.get(k), str) else None for k in ("forget_loss", "retain_loss")}
    config_class = config_for(_flag_value(args, "--method") or method, **objectives)
    known = {f.name for cls in (config_class, ScriptArguments, ModelConfig) for f in fields(cls)}
    values = rerun_values(manifest, known)
    if "model_name_or_path" not in values and _flag_value(args, "--model_name_or_path") is None:
        raise ValueError(
            f"The model of {manifest_path!r} is a local folder (not recorded); pass --model_name_or_path <folder>."
        )
    rest, skip = [], False
    for arg in args:  # the manifest stands in for --config
        if skip:
            skip = False
        elif arg == "--from_manifest":
            skip = True
        elif not arg.startswith("--from_manifest="):
            rest.append(arg)
    with tempfile.TemporaryDirectory(prefix="hf_unlearn_manifest_") as folder:
        path = os.path.join(folder, "config.yaml")
        with open(path, "w") as handle:
            yaml.safe_dump(values, handle)
        return parse_args(["--config", path, *rest])
