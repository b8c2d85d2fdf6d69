"""Pick the learning rate and the number of steps (optionally the method) of a run (the `hf-unlearn tune` script).

    # the embedded default job (SmolLM2-135M, stdlib modules; no Hub, no GPU):
    hf-unlearn tune
    # a config of `hf-unlearn train`, with tuning options (all optional) and any override on top:
    hf-unlearn tune --config my.yaml --tune_learning_rates 1e-6:1e-4 --tune_max_steps 20,40 \\
        --tune_methods ga_descent,ga_kl --tune_trials 12 --tune_timeout 1800 --tune_retain_tolerance 0.1
    hf-unlearn train --config outputs/my_run_tune/chosen.yaml      # the chosen setting, as is

The data is the config's: forget, approximate (unseen, same domain; required: the criterion compares the forget
set with it), unseen (optional, disjoint from approximate: with it the criterion compares with unseen instead, so
the chosen run's own verdict on approximate is out-of-sample; `--tune_on` chooses) and retain (required: the
criterion bounds its NLL). Each trial is a run of `hf-unlearn train` with the
worst-case stopping rule; the criterion, the cost and the pruning are `hf_unlearn.tuning`'s (read its docstring).
The search space: `--tune_learning_rates` "LOW:HIGH" (log-uniform) or "A,B,C" (default: the config's
learning_rate / 10 to x 10), `--tune_max_steps` "A,B,C" (default: the config's schedule length; the stopping rule
picks the step within it), `--tune_methods` "A,B" (default: the config's method; the trials are split evenly
between the methods, one optuna study each). The tuning options are command-line flags; the YAML stays a
`hf-unlearn train` config.

Written to `--tune_dir` (default `<output_dir>_tune`, outside the run's output folder):

- `chosen.yaml`: the config with the chosen method, learning_rate and max_steps, `stopping_rule: worst_case` and
  `max_retain_nll_increase` = the tolerance, so `hf-unlearn train --config chosen.yaml` reruns the chosen trial
  and stops at its step. Hyperparameters only (no forget-set statistic); written only when a setting met the
  criterion;
- `trials.json` and `trials.png`: every trial (setting, status, cost, the strongest attack's AUC and interval,
  NLLs, the path over evaluations) and the plot strongest-attack AUC x retain NLL. Local reports: they hold
  forget-set statistics; nothing of the tuning is pushed to the Hub.

Exit status: 0: a setting met the criterion (chosen.yaml written); 2: a user error (one line on stderr, nothing
loaded or written); 3: no setting in the search space met the criterion (the report says how the trials failed
and what to change; no chosen.yaml).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field, fields

EXIT_USER_ERROR = 2
EXIT_NOT_MET = 3
OWN_FILES = ("chosen.yaml", "trials.json", "trials.png")


@dataclass
class TuneArguments:
    r"""
    Options of `hf-unlearn tune` (command-line flags; see the module docstring).

    Parameters:
        tune_learning_rates (`str` or `None`): "LOW:HIGH" (log-uniform) or "A,B,C"; `None`: the config's
            learning_rate / 10 to x 10.
        tune_max_steps (`str` or `None`): values of max_steps, "A,B,C"; `None`: the config's schedule length.
        tune_methods (`str` or `None`): methods to try, "A,B"; `None`: the config's method.
        tune_trials (`int`, defaults to `8`): the budget in trials (all methods together).
        tune_timeout (`float` or `None`): the budget in seconds of wall time; `None`: no limit.
        tune_retain_tolerance (`float`, defaults to `0.1`): the retain NLL may rise by this share of its start.
        tune_sampler (`str`, defaults to `"tpe"`): optuna's sampler: tpe, random or grid (a list of learning rates).
        tune_dir (`str` or `None`): where the chosen YAML and the report go; `None`: `<output_dir>_tune`.
        tune_on (`str`, defaults to `"auto"`): the unseen data the criterion compares the forget set with:
            "unseen" (`unseen_data`, disjoint from `approximate_data`, so the chosen run's own verdict on
            `approximate_data` is out-of-sample), "approximate" (`approximate_data`: the verdict then scores the
            data that selected the setting), or "auto" (unseen when the config has `unseen_data`, else approximate).
    """

    tune_learning_rates: str | None = field(
        default=None, metadata={"help": "LOW:HIGH (log-uniform) or A,B,C; default: config lr / 10 to x 10."}
    )
    tune_max_steps: str | None = field(
        default=None, metadata={"help": "max_steps values A,B,C; default: the config's schedule length."}
    )
    tune_methods: str | None = field(default=None, metadata={"help": "Methods to try, A,B; default: the config's."})
    tune_trials: int = field(default=8, metadata={"help": "Budget: trials (all methods together)."})
    tune_timeout: float | None = field(default=None, metadata={"help": "Budget: seconds of wall time."})
    tune_retain_tolerance: float = field(default=0.1, metadata={"help": "Retain NLL may rise by this share."})
    tune_sampler: str = field(default="tpe", metadata={"help": "optuna sampler: tpe, random or grid."})
    tune_dir: str | None = field(default=None, metadata={"help": "Output folder; default <output_dir>_tune."})
    tune_on: str = field(
        default="auto",
        metadata={
            "help": "Unseen data the criterion compares with: unseen (unseen_data, keeps the run's verdict on "
            "approximate_data out-of-sample), approximate, or auto (unseen when given)."
        },
    )


TUNE_ON = ("auto", "unseen", "approximate")
NEEDS_UNSEEN = "--tune_on unseen needs unseen_data (unseen same-domain data disjoint from approximate_data)."


def selection_splits(splits: dict, unseen, tune_on: str) -> tuple[dict, str]:
    """The evaluation splits that select (forget, retain, and as the attacks' non-members either the
    `approximate` split or the `unseen` one under that name) and which one it is."""
    if tune_on == "approximate" or (tune_on == "auto" and unseen is None):
        return splits, "approximate"
    if unseen is None:
        raise ValueError(NEEDS_UNSEEN)
    return {**splits, "approximate": unseen}, "unseen"


def main(argv: list[str] | None = None) -> dict:
    """Run the script; see the module docstring. Returns the `TuningResult` and the written paths when a setting
    met the criterion; raises `SystemExit(2)` on a user error and `SystemExit(3)` when none did."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        outcome = run(argv)
    except (ValueError, FileNotFoundError, ImportError) as error:
        if debug:
            raise
        print(f"hf-unlearn tune: error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
    if outcome["result"].chosen is None:
        raise SystemExit(EXIT_NOT_MET)
    return outcome


def split_argv(argv: list[str]) -> tuple[TuneArguments, list[str]]:
    """The tuning flags, and the rest (for `hf-unlearn train`'s parser)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(TuneArguments)
    if any(arg in ("-h", "--help") for arg in argv):
        print("usage: hf-unlearn tune [tuning options] [hf-unlearn train options]\n")
        print(parser.format_help().split("\n\n", 1)[-1])
        print("hf-unlearn train options:")
        sys.stdout.flush()
        from .args import parse_args

        parse_args(["--help"])  # prints the training options and exits
    tune_args, rest = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    return tune_args, rest


def _with_method(argv: list[str], method: str) -> list[str]:
    """`argv` with `--method method` in place of any --method it holds."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--method":
            skip = True
            continue
        if not arg.startswith("--method="):
            out.append(arg)
    return out + ["--method", method]


def schedule_steps(args, n_forget: int) -> int:
    """Optimizer steps of the config's schedule: max_steps, else epochs x steps per epoch (as the Trainer counts)."""
    if args.max_steps > 0:
        return args.max_steps
    batches = math.ceil(n_forget / (args.per_device_train_batch_size * max(args.world_size, 1)))
    return math.ceil(args.num_train_epochs * max(batches // args.gradient_accumulation_steps, 1))


def tune_dir_for(args, tune_args: TuneArguments) -> str:
    """The output folder of the tuning: outside the run's output_dir (a train run may empty that folder), holding
    nothing but this script's own files."""
    folder = tune_args.tune_dir or args.output_dir.rstrip("/\\") + "_tune"
    output = os.path.realpath(args.output_dir)
    real = os.path.realpath(folder)
    if real == output or real.startswith(output.rstrip(os.sep) + os.sep):
        raise ValueError(
            f"tune_dir {folder!r} is inside output_dir {args.output_dir!r}, which `hf-unlearn train` "
            "may empty; choose a folder outside it."
        )
    if os.path.isdir(folder):
        others = sorted(set(os.listdir(folder)) - set(OWN_FILES))
        if others:
            raise ValueError(
                f"tune_dir {folder!r} holds other files (e.g. {others[0]!r}); choose an empty or new folder."
            )
    elif os.path.exists(folder):
        raise ValueError(f"tune_dir {folder!r} is a file; choose a folder path.")
    return folder


def _yaml_value(value):
    import enum

    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_yaml_value(v) for v in value]
    return value


def chosen_config(file_values: dict, overrides: dict, chosen, tolerance: float, selected_on: str) -> dict:
    """The config to run: the file's values, the command line's overrides, the chosen setting and the trial's
    stopping rule (the worst case over attacks with the retain tolerance). Selected on the unseen split, the run
    stops at the chosen step (`stop_at_step`) instead, so its own evaluation on the approximate split decides
    nothing and its verdict is out-of-sample; selected on the approximate split, the rule finds the same step."""
    config = {**file_values, **overrides}
    config.update(
        method=chosen.method,
        learning_rate=float(chosen.params["learning_rate"]),
        max_steps=int(chosen.params["max_steps"]),
        stopping_rule="worst_case",
        max_retain_nll_increase=tolerance,
    )
    config.pop("stop_at_step", None)
    if selected_on == "unseen":
        config["stop_at_step"] = int(chosen.step)
    return config


def command_line_overrides(argv: list[str], *parsed) -> dict:
    """The values of the fields named on the command line (`--name value` / `--name=value`), as parsed."""
    names = {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")} - {"config"}
    out = {}
    for name in sorted(names):
        for obj in parsed:
            if name in {f.name for f in fields(obj)}:
                out[name] = _yaml_value(getattr(obj, name))
                break
    return out


def write_chosen_yaml(path: str, config: dict, chosen, total: int, selected_on: str = "approximate") -> None:
    import yaml

    header = (
        f"# Chosen by `hf-unlearn tune` (trial {chosen.number} of {total}): the cheapest setting in the search space\n"
        f"# whose forget set the strongest membership attack could not tell from unseen data (the {selected_on} split;\n"
        "# every AUC interval contains 0.5, none below it) with the retain NLL within the tolerance. It stopped at\n"
        f"# step {chosen.step}."
        + (
            " This run stops there too (stop_at_step): its own verdict on approximate_data is out-of-sample.\n"
            if selected_on == "unseen"
            else "\n"
        )
        + f"# Run it as is: hf-unlearn train --config {path}\n"
    )
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        handle.write(header + yaml.safe_dump(config, sort_keys=False))
    os.replace(temporary, path)


def run(argv: list[str]) -> dict:
    from .. import get_method
    from ..tuning import SearchSpace, TuningCriterion, TuningResult, check_budget, require_optuna, tune_trainer
    from .args import DEFAULT_CONFIG, _flag_value, _read_yaml, parse_args

    tune_args, rest = split_argv(argv)
    if not any(a.split("=")[0] in ("--config", "--model_name_or_path") for a in rest):
        rest = ["--config", DEFAULT_CONFIG] + rest
    args, script, model_args = parse_args(rest)
    require_optuna()
    # Every check before anything is loaded.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("hf-unlearn tune runs in one process; launch it without torchrun / accelerate.")
    if model_args.model_name_or_path is not None and script.approximate_data is None:
        raise ValueError(
            "hf-unlearn tune needs approximate_data (unseen same-domain data): the criterion asks that "
            "the forget set look like it; add approximate_data to the config."
        )
    if model_args.model_name_or_path is not None and script.retain_data is None:
        raise ValueError(
            "hf-unlearn tune needs retain_data: the criterion bounds its NLL; add retain_data to the config."
        )
    if script.mia_resamples < 1:
        raise ValueError(f"mia_resamples={script.mia_resamples}: the criterion needs AUC intervals; use at least 1.")
    check_budget(tune_args.tune_trials, tune_args.tune_timeout)
    if tune_args.tune_on not in TUNE_ON:
        raise ValueError(f"--tune_on {tune_args.tune_on!r} is unknown; use one of {', '.join(TUNE_ON)}.")
    if tune_args.tune_on == "unseen" and model_args.model_name_or_path is not None and script.unseen_data is None:
        raise ValueError(NEEDS_UNSEEN)
    criterion = TuningCriterion(tune_args.tune_retain_tolerance)
    methods = [m.strip() for m in (tune_args.tune_methods or args.method).split(",") if m.strip()]
    if not methods:
        raise ValueError(f"--tune_methods {tune_args.tune_methods!r} names no method; give e.g. ga_descent,ga_kl.")
    for method in methods:
        get_method(method)  # an unknown name fails here
    if tune_args.tune_trials < len(methods):
        raise ValueError(
            f"--tune_trials {tune_args.tune_trials} is fewer than the {len(methods)} methods; give at "
            "least one trial per method."
        )
    learning_rates = tune_args.tune_learning_rates or f"{args.learning_rate / 10:g}:{args.learning_rate * 10:g}"
    if tune_args.tune_max_steps is not None:
        space = SearchSpace.from_strings(learning_rates, tune_args.tune_max_steps)
    else:
        space = None  # the schedule's length, known once the forget set is loaded
        SearchSpace.from_strings(learning_rates, "1")  # the learning rates fail here
    if tune_args.tune_sampler == "grid":
        SearchSpace.from_strings(learning_rates, "1").grid()
    folder = tune_dir_for(args, tune_args)

    from .demo import UNSEEN_TARGETS
    from .unlearn import load_data

    model_path, tokenizer, splits, descent_retain = load_data(args, script, model_args)
    unseen = splits.pop(UNSEEN_TARGETS, None)
    selecting, selected_on = selection_splits(splits, unseen, tune_args.tune_on)
    if space is None:
        space = SearchSpace.from_strings(learning_rates, str(schedule_steps(args, len(splits["forget"]))))
    result = TuningResult(criterion=criterion, selected_on=selected_on)
    shares = [
        tune_args.tune_trials // len(methods) + (i < tune_args.tune_trials % len(methods)) for i in range(len(methods))
    ]
    import time

    began = time.monotonic()
    for method, n_trials in zip(methods, shares):
        left = None if tune_args.tune_timeout is None else tune_args.tune_timeout - (time.monotonic() - began)
        if left is not None and left <= 0:
            break
        method_args, _, _ = parse_args(_with_method(rest, method))
        trainer = _trainer(
            method, method_args, script, model_args, model_path, tokenizer, splits, descent_retain, unseen
        )
        tune_trainer(
            trainer,
            selecting,
            space,
            criterion,
            n_trials=n_trials,
            timeout=left,
            sampler=tune_args.tune_sampler,
            eval_steps=script.eval_every_steps,
            eval_batch_size=method_args.per_device_eval_batch_size,
            eval_max_examples=script.eval_max_examples,
            attacks=script.attack_names(),
            n_resamples=script.mia_resamples,
            result=result,
            method=method,
        )
        del trainer

    print(result.summary())
    paths = result.write_report(folder)
    chosen_path = os.path.join(folder, "chosen.yaml")
    chosen = result.chosen
    if chosen is not None:
        config_path = _flag_value(rest, "--config")
        file_values = _read_yaml(config_path) if config_path else {}
        overrides = command_line_overrides(rest, args, script, model_args)
        write_chosen_yaml(
            chosen_path,
            chosen_config(file_values, overrides, chosen, criterion.retain_tolerance, selected_on),
            chosen,
            len(result.trials),
            selected_on,
        )
        paths["chosen"] = chosen_path
        print(f"chosen config: {chosen_path}\n  run it: hf-unlearn train --config {chosen_path}")
    elif os.path.exists(chosen_path):
        os.remove(chosen_path)  # an earlier search's choice does not belong to this search
    print(
        f"trial report (local; holds forget-set statistics): {', '.join(p for k, p in paths.items() if k != 'chosen')}"
    )
    return {"result": result, "paths": paths}


def _trainer(method, method_args, script, model_args, model_path, tokenizer, splits, descent_retain, unseen):
    """The method's trainer on the run's data, with a `model_init` that loads the original model (a fresh copy per
    trial), as `hf-unlearn train` loads it; `unseen`: the `unseen_data` split, for objectives that read it."""
    from transformers import AutoModelForCausalLM
    from trl import get_peft_config

    from .. import get_method
    from ..plan import run_plan
    from .args import model_init_kwargs
    from .unlearn import unseen_targets

    trainer_class = get_method(method)
    plan = run_plan(method_args, trainer_class)
    peft_config = get_peft_config(model_args)

    def model_init():
        model = AutoModelForCausalLM.from_pretrained(model_path, **model_init_kwargs(model_args))
        if peft_config is None:
            return model
        from peft import get_peft_model

        return get_peft_model(model, peft_config)

    return trainer_class(
        model_init=model_init,
        args=method_args,
        train_dataset=splits["forget"],
        retain_dataset=(splits.get("retain") if descent_retain is None else descent_retain)
        if plan.uses_retain_data
        else None,
        unseen_dataset=unseen_targets(plan, unseen, splits.get("approximate")),
        ref_model=script.ref_model_name_or_path,
        processing_class=tokenizer,
    )


if __name__ == "__main__":
    main()
