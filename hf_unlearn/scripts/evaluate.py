"""Evaluate one or more checkpoints (e.g. before and after unlearning) and write JSON, Markdown and PNG plots.

The `hf-unlearn eval` script (also `python -m hf_unlearn.scripts.evaluate`; `recipes/evaluate.py` is the same).

Launch commands:

    # the embedded default job's original model on its forget / retain / approximate splits (no Hub, no GPU):
    hf-unlearn eval

    # before vs after, document data (chunked like `hf-unlearn train`: same data options, same --max_length):
    hf-unlearn eval --model_name_or_path <original> --checkpoints outputs/unlearned \
        --labels before after --forget_data forget.jsonl --approximate_data unseen.jsonl --retain_data retain.jsonl \
        --max_length 4096 --trainer_state outputs/unlearned/trainer_state.json --output_dir outputs/evaluation

    # several processes (examples sharded, results identical to one process):
    torchrun --nproc_per_node 2 -m hf_unlearn.scripts.evaluate ...   # or accelerate launch --multi_gpu -m ...

    # TOFU (Hub or a local folder of <config>.jsonl) and lm-evaluation-harness tasks (local YAML or Hub names):
    hf-unlearn eval ... --tofu_data locuslab/TOFU --tofu_forget_split forget10 \
        --tofu_retain_model <retain-only model> --lm_eval_tasks hf_unlearn/evaluation/tasks/general_facts.yaml

Outputs in --output_dir: evaluation.json (every metric of every model and its verdict), report.md (the verdict of
every model: forgotten / not forgotten / over-unlearned / cannot tell, then the tables), mia_histograms_<attack>.png
and roc_<attack>.png (members = forget vs non-members = approximate), training_curves.png (with --trainer_state).

Steps: parse -> data -> for each checkpoint: load, evaluate (splits, membership inference, verbatim memorization,
optional TOFU and lm-eval) -> write the files (main process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from accelerate import PartialState
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ..data import build_examples, check_examples_fit_model
from ..evaluation import DEFAULT_FPRS, DEFAULT_MIN_K, evaluate_model, evaluate_tofu, run_lm_eval
from ..evaluation.plots import read_log_history
from ..evaluation.report import model_verdicts, save_evaluation
from .args import ScriptArguments, make_parser, model_init_kwargs
from .demo import default_model_dir, default_splits


@dataclass
class EvaluateArguments:
    r"""
    What to evaluate beyond `ScriptArguments` and trl's `ModelConfig` (whose `model_name_or_path` is the first model,
    e.g. the original; its `dtype` and `attn_implementation` apply to every model).

    Parameters:
        checkpoints (`list[str]`): further models to evaluate, e.g. the unlearned output_dir.
        labels (`list[str]`): one label per model (default: the folder names).
        output_dir (`str`): where evaluation.json, report.md and the plots go.
        max_length (`int`): chunk length of document data; use the one of the unlearning run.
        general_data (`str` or `None`): general text evaluated as a fourth split ("general"); general_split picks
            the split of a Hub dataset (the paper's `llmunlearn/unlearn_dataset:general` has "evaluation").
        batch_size (`int`): evaluation batch size per process.
        min_k (`list[float]`), fprs (`list[float]`): Min-K% fractions and the FPRs of the TPR@FPR figures.
        mia_reference_model (`str` or `None`): a model that never saw the forget set, for the reference attack.
        verbatim_prefix_tokens (`int`): prefix length of the verbatim-memorization test (0 skips it).
        verbatim_continuation_tokens (`int`), verbatim_max_examples (`int`): its continuation length and size.
        plot_attacks (`list[str]`): attacks to draw histograms and ROC curves for.
        trainer_state (`str` or `None`): a trainer_state.json whose log_history gives the training curves.
        lm_eval_tasks (`list[str]`): lm-eval task YAML paths or task names; lm_eval_limit caps documents per task.
        tofu_data (`str` or `None`): "locuslab/TOFU" or a folder of TOFU JSONL files; enables the TOFU metrics.
        tofu_forget_split (`str`), tofu_retain_model (`str` or `None`), tofu_max_records (`int` or `None`):
            TOFU forget split, the retain-only model for forget quality, and a cap on records per set.
    """

    checkpoints: list[str] = field(default_factory=list, metadata={"help": "More models to evaluate (e.g. unlearned)."})
    labels: list[str] = field(default_factory=list, metadata={"help": "One label per model; default folder names."})
    output_dir: str = field(default="outputs/evaluation", metadata={"help": "Where the JSON, report and plots go."})
    max_length: int = field(default=4096, metadata={"help": "Chunk length of document data (as in unlearning)."})
    general_data: str | None = field(default=None, metadata={"help": "General text, evaluated as split 'general'."})
    general_split: str = field(
        default="train", metadata={"help": "Split of a Hub general dataset (paper: evaluation)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Evaluation batch size per process."})
    min_k: list[float] = field(
        default_factory=lambda: list(DEFAULT_MIN_K),
        metadata={"help": "Min-K percent fractions (0.2 = the 20 percent least likely tokens)."},
    )
    fprs: list[float] = field(default_factory=lambda: list(DEFAULT_FPRS), metadata={"help": "FPRs for TPR@FPR."})
    mia_reference_model: str | None = field(default=None, metadata={"help": "Reference model for the ratio attack."})
    verbatim_prefix_tokens: int = field(default=32, metadata={"help": "Verbatim test prefix length; 0 skips it."})
    verbatim_continuation_tokens: int = field(default=32, metadata={"help": "Verbatim test continuation length."})
    verbatim_max_examples: int = field(default=64, metadata={"help": "Examples of the verbatim test per split."})
    plot_attacks: list[str] = field(default_factory=lambda: ["loss"], metadata={"help": "Attacks to plot."})
    trainer_state: str | None = field(default=None, metadata={"help": "trainer_state.json for training curves."})
    lm_eval_tasks: list[str] = field(default_factory=list, metadata={"help": "lm-eval task YAMLs or names."})
    lm_eval_limit: int | None = field(default=None, metadata={"help": "At most N documents per lm-eval task."})
    tofu_data: str | None = field(default=None, metadata={"help": "locuslab/TOFU or a local TOFU folder."})
    tofu_forget_split: str = field(default="forget10", metadata={"help": "forget01, forget05 or forget10."})
    tofu_retain_model: str | None = field(default=None, metadata={"help": "Retain-only model, for forget quality."})
    tofu_max_records: int | None = field(default=None, metadata={"help": "At most N records per TOFU set."})


def load_model(path: str, kwargs: dict, device):
    """`from_pretrained(path, **kwargs)` on `device` (an unloadable model is one line, as in `hf-unlearn train`)."""
    from .unlearn import _load

    return _load("model", path, lambda: AutoModelForCausalLM.from_pretrained(path, **kwargs)).to(device)


def plot_attack_names(options: EvaluateArguments) -> list[str]:
    """The attacks `--plot_attacks` can name: those the evaluation scores with these options."""
    from ..evaluation.membership import percent_name

    names = ["loss", "zlib"] + [
        f"{kind}_{percent_name(k)}" for kind in ("min_k", "min_k_plus_plus") for k in options.min_k
    ]
    return names + (["reference"] if options.mia_reference_model else [])


def check_options(options: EvaluateArguments) -> None:
    """One-line errors for options that would fail only after every model is scored."""
    for name in ("batch_size", "max_length"):
        if getattr(options, name) < (2 if name == "max_length" else 1):
            raise ValueError(f"{name}={getattr(options, name)} is too small; use e.g. --{name} 8.")
    known = plot_attack_names(options)
    unknown = [attack for attack in options.plot_attacks if attack not in known]
    if unknown:
        raise ValueError(
            f"--plot_attacks {' '.join(unknown)}: unknown attack(s); use some of {', '.join(known)} (min_k_* follow "
            "--min_k; reference needs --mia_reference_model)."
        )


def main(argv: list[str] | None = None) -> dict:
    """Run the evaluation (see the module docstring). A user error (bad argument, data file, missing model folder)
    prints one line and exits with status 2 (`--debug` shows the traceback)."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        return run(argv)
    except (ValueError, FileNotFoundError) as error:
        from .unlearn import EXIT_USER_ERROR, exit_with

        exit_with(EXIT_USER_ERROR, f"hf-unlearn: error: {error}", debug)


def run(argv: list[str]) -> dict:
    from ..launch import check_launch_environment
    from .unlearn import _load, check_model_path

    check_launch_environment()  # ranks and rendezvous address, before PartialState starts the process group
    script, options, model_args = make_parser(ScriptArguments, EvaluateArguments).parse_args_and_config(argv)
    check_options(options)
    if model_args.load_in_4bit or model_args.load_in_8bit:
        raise ValueError("hf-unlearn eval scores full-precision models; drop load_in_4bit / load_in_8bit.")
    load_kwargs = {key: value for key, value in model_init_kwargs(model_args).items() if key != "revision"}
    state = PartialState()  # one process, or one per rank under torchrun / accelerate launch

    # Models and labels.
    paths = [model_args.model_name_or_path or default_model_dir()] + options.checkpoints
    others = [path for path in (options.mia_reference_model, options.tofu_retain_model) if path]
    for path in paths + others:
        check_model_path(path)
    labels = options.labels or [os.path.basename(os.path.normpath(path)) for path in paths]
    if len(labels) != len(paths) or len(set(labels)) != len(labels):
        raise ValueError(f"--labels {labels} must give {len(paths)} distinct labels, one per model ({paths}).")
    tokenizer = _load(
        "tokenizer", paths[0], lambda: AutoTokenizer.from_pretrained(paths[0], revision=model_args.model_revision)
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    # Data.
    if model_args.model_name_or_path is None:
        splits = default_splits(tokenizer)
    else:
        sources = {  # name: (file, folder or Hub id; split of a Hub dataset)
            "forget": (script.forget_data, script.forget_split),
            "approximate": (script.approximate_data, script.approximate_split),
            "retain": (script.retain_data, script.retain_split),
            "general": (options.general_data, options.general_split),
        }
        splits = {
            name: build_examples(
                source,
                tokenizer,
                script.data_format,
                options.max_length,
                script.text_column,
                script.question_column,
                script.answer_column,
                script.max_examples,
                split=split,
            )
            for name, (source, split) in sources.items()
            if source is not None
        }
    # Every model must hold the examples (token ids, positions), checked from the configs before anything is scored.
    for path in paths + others:
        revision = model_args.model_revision if path == paths[0] else None
        config = _load("model config", path, lambda: AutoConfig.from_pretrained(path, revision=revision))
        check_examples_fit_model(splits.values(), config, tokenizer.pad_token_id, path)
    reference = (
        load_model(options.mia_reference_model, load_kwargs, state.device) if options.mia_reference_model else None
    )
    tofu_kwargs = dict(
        source=options.tofu_data,
        forget_split=options.tofu_forget_split,
        max_records=options.tofu_max_records,
        batch_size=options.batch_size,
        accelerator=state,
    )
    retain_ratios = None
    if options.tofu_data and options.tofu_retain_model:
        retain_model = load_model(options.tofu_retain_model, load_kwargs, state.device)
        _, retain_scores = evaluate_tofu(retain_model, tokenizer, roles=("forget",), generate=False, **tofu_kwargs)
        retain_ratios = retain_scores["forget"].truth_ratios.tolist()
        del retain_model

    # Evaluate every model.
    evaluations = {}
    for label, path in zip(labels, paths):
        kwargs = {**load_kwargs, "revision": model_args.model_revision} if path == paths[0] else load_kwargs
        model = load_model(path, kwargs, state.device)
        evaluation = evaluate_model(
            model,
            tokenizer,
            splits,
            reference_model=reference,
            min_k=options.min_k,
            fprs=options.fprs,
            batch_size=options.batch_size,
            verbatim_prefix_tokens=options.verbatim_prefix_tokens or None,
            verbatim_continuation_tokens=options.verbatim_continuation_tokens,
            verbatim_max_examples=options.verbatim_max_examples,
            accelerator=state,
            progress=True,
        )
        if options.tofu_data:
            evaluation.metrics["tofu"], _ = evaluate_tofu(
                model, tokenizer, retain_model_truth_ratios=retain_ratios, **tofu_kwargs
            )
        if options.lm_eval_tasks and state.is_main_process:  # lm-eval runs in one process
            evaluation.metrics["lm_eval"] = run_lm_eval(
                model, tokenizer, options.lm_eval_tasks, options.batch_size, options.lm_eval_limit
            )
        state.wait_for_everyone()
        evaluations[label] = evaluation
        del model

    # Write the JSON, the report and the plots.
    if state.is_main_process:
        history = read_log_history(options.trainer_state) if options.trainer_state else None
        written = save_evaluation(
            evaluations,
            options.output_dir,
            history,
            options.plot_attacks,
            extra={"checkpoints": dict(zip(labels, paths))},
        )
        verdicts = model_verdicts({label: evaluation.metrics for label, evaluation in evaluations.items()})
        print(
            "\n".join([f"Verdict ({label}): {verdict}" for label, verdict in verdicts.items()] + ["Wrote:"] + written)
        )
    return {label: evaluation.metrics for label, evaluation in evaluations.items()}


if __name__ == "__main__":
    main()
