"""Unlearn a forget set from a causal language model (the `hf-unlearn train` script).

Launch commands (from any folder once hf_unlearn is installed; `recipes/unlearn.py` is the same script):

    # the embedded default job (no Hub, no GPU; SmolLM2-135M from PyPI unlearns stdlib modules):
    hf-unlearn train
    python -m hf_unlearn.scripts.unlearn
    accelerate launch -m hf_unlearn.scripts.unlearn

    # a config file, with command-line overrides on top:
    hf-unlearn train --config recipes/configs/yi-6b/arxiv/ga.yaml --learning_rate 1e-5
    accelerate launch --config_file recipes/accelerate/zero3.yaml -m hf_unlearn.scripts.unlearn --config my.yaml
    torchrun --nproc_per_node 8 -m hf_unlearn.scripts.unlearn --config my.yaml --deepspeed recipes/deepspeed/zero3.json

Steps: parse and check the arguments (every single-valued field, the output folder, the data) -> tokenizer ->
forget / retain / approximate data -> checks of the data against the model's config (vocabulary, positions) ->
model -> trainer (the reference model is loaded only by methods that need it) -> evaluation / stopping callback
(`stopping_rule`: the paper's target, or every membership attack's AUC interval containing 0.5; a blow-up
guard) -> train (evaluated at the start, every `eval_every_steps` and at the
end) -> print before/after -> save -> push once (with `push_to_hub`).

Exit status:

- 0: unlearned; the model is saved in `output_dir` (and pushed with `push_to_hub`).
- 2: a user error (bad argument, config, data file, output folder, missing or incomplete model folder): one line
  on stderr, no traceback (`--debug` shows it), nothing loaded or written. Also a full disk while saving: one line
  naming the folder ("disk full"), the partial save removed.
- 3: the run stopped on a blow-up (a non-finite NLL, or the retain NLL rose past `max_retain_nll_increase`):
  the reason is printed, and the model is NOT saved as the unlearned result and not pushed.

Privacy: forget text is never printed (`show_forget_samples=True` asks for a verbatim sample), local data files
are read in memory (nothing in the `datasets` cache), the model card has counts only, and a push uploads the final
model alone. `hf-unlearn traces --output_dir DIR [--remove]` lists (and removes) checkpoints, TensorBoard logs,
`best/` and cached per-example values that a run leaves.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import warnings

EXIT_USER_ERROR = 2
EXIT_BLOW_UP = 3
START_RECORD = "unlearning_start.json"  # the first run's start evaluation (numbers only), read back on resume
RUN_RECORD = "unlearning_run.json"  # in each checkpoint-N: what a resume must match (method, lr, forget count)


class BlowUp(RuntimeError):
    """The run left the allowed region (`UnlearningEvalCallback.failed`); nothing was saved as the result."""


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def main(argv: list[str] | None = None) -> dict:
    """Run the script; see the module docstring. Returns the before/after records on success.

    Raises `SystemExit(2)` on a user error (without a traceback unless `--debug` is given) and `SystemExit(3)` when
    the run stopped on a blow-up (the model is then not saved)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    from ..hub import DiskFullError
    from ..launch import LaunchEnvironmentError

    try:
        return run(argv)
    except BlowUp as error:
        exit_with(EXIT_BLOW_UP, f"hf-unlearn: {error}", debug, _is_main_process())
    except (ValueError, FileNotFoundError, DiskFullError) as error:
        reported = _is_main_process() or isinstance(error, LaunchEnvironmentError)  # that process's own environment
        exit_with(EXIT_USER_ERROR, f"hf-unlearn: error: {error}", debug, reported)


def exit_with(code: int, line: str, debug: bool, main_process: bool = True):
    """Print `line` on stderr (after the traceback of the exception being handled, with `--debug`) and exit with
    `code`: `--debug` shows more, it does not change the exit status."""
    if main_process:
        if debug:
            import traceback

            traceback.print_exc()
        print(line, file=sys.stderr)
    raise SystemExit(code) from None


# ------------------------------------------------------------------ checks before anything is loaded


def resolve_output_dir(output_dir: str) -> str:
    """`output_dir` with a symbolic link resolved (also a dangling one: its target is created), so that a delete
    (`--overwrite_output_dir true`) and the writes act on the folder the link names."""
    return os.path.realpath(output_dir) if os.path.islink(output_dir) else output_dir


def prepare_output_dir(args, script) -> str | None:
    """Refuse a non-empty output folder unless resuming or told to overwrite; returns the checkpoint to resume.
    Nothing is deleted here: `clear_output_dir` empties an overwritten folder once the model and data loaded."""
    output_dir = args.output_dir
    resume = args.resume_from_checkpoint
    if resume:
        if resume.lower() in ("true", "last"):
            resume = last_complete_checkpoint(output_dir) if os.path.isdir(output_dir) else None
            if resume is None:
                raise FileNotFoundError(
                    f"--resume_from_checkpoint {args.resume_from_checkpoint}: no checkpoint-* in "
                    f"{output_dir!r}; pass the checkpoint folder to resume from."
                )
        if not os.path.isdir(resume):
            raise FileNotFoundError(
                f"--resume_from_checkpoint {resume!r} is not a folder; pass an existing "
                f"checkpoint-* folder of an earlier run (in {output_dir!r})."
            )
        if not os.path.isfile(os.path.join(output_dir, START_RECORD)):
            raise FileNotFoundError(
                f"Cannot resume into {output_dir!r}: {START_RECORD} (the first run's start evaluation, which gives the "
                "stopping target) is missing; resume with the first run's --output_dir, or start a new run."
            )
        return resume
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        if not script.overwrite_output_dir:
            entries = sorted(os.listdir(output_dir))
            raise ValueError(
                f"output_dir {output_dir!r} is not empty ({len(entries)} entries, e.g. {entries[0]!r}): resume with "
                f"--resume_from_checkpoint <{output_dir}/checkpoint-N>, or pass --overwrite_output_dir true to delete "
                "it first, or choose another --output_dir."
            )
        _check_deletable(output_dir)
    elif os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"output_dir {output_dir!r} is a file; choose a folder path for --output_dir.")
    return None


def clear_output_dir(output_dir: str, script, resume: str | None, accelerator) -> None:
    """Delete a non-empty `output_dir` the user allowed to be overwritten (`prepare_output_dir` checked it), right
    before training: a run that fails while loading its model or data leaves the folder as it was."""
    if resume or not script.overwrite_output_dir or not (os.path.isdir(output_dir) and os.listdir(output_dir)):
        return
    if accelerator.is_main_process:
        shutil.rmtree(output_dir)
    accelerator.wait_for_everyone()


def check_output_dir_spares_inputs(output_dir: str, inputs: dict[str, str | None]) -> None:
    """Refuse an output folder that is, contains or lies inside an input (a local model, data file or folder, the
    cache), symlinks resolved: writing the result there, or `--overwrite_output_dir true` deleting it first, would
    destroy the input. Inputs that are not local paths (Hub ids) are skipped."""
    out = os.path.realpath(output_dir)
    for name, value in inputs.items():
        if not value or not os.path.exists(value):
            continue
        real = os.path.realpath(value)
        inside = (out + os.sep).startswith(real.rstrip(os.sep) + os.sep)
        contains = (real + os.sep).startswith(out.rstrip(os.sep) + os.sep)
        if inside or contains:
            relation = "is" if out == real else ("lies inside" if inside else "contains")
            raise ValueError(
                f"output_dir {output_dir!r} {relation} the input {name} {value!r}, which the run would overwrite or "
                "delete; choose an --output_dir outside every input folder."
            )


def checkpoint_problem(path: str) -> str | None:
    """Why a checkpoint folder cannot be resumed from (a write interrupted by a crash or a full disk), or None:
    `trainer_state.json` missing or not JSON, `optimizer.pt` present but not a complete file."""
    import zipfile

    try:
        with open(os.path.join(path, "trainer_state.json")) as handle:
            json.load(handle)
    except (OSError, ValueError):
        return "its trainer_state.json is missing or incomplete"
    optimizer = os.path.join(path, "optimizer.pt")
    if os.path.exists(optimizer):
        try:
            with zipfile.ZipFile(optimizer):  # torch.save writes a zip archive; a truncated one has no directory
                pass
        except (OSError, zipfile.BadZipFile):
            return "its optimizer.pt is incomplete"
    return None


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The highest `checkpoint-N` of `output_dir` that can be resumed from; incomplete ones are skipped with a
    warning naming them."""
    import re

    numbered = [
        (int(m.group(1)), name)
        for name in os.listdir(output_dir)
        if (m := re.fullmatch(r"checkpoint-(\d+)", name)) and os.path.isdir(os.path.join(output_dir, name))
    ]
    for _, name in sorted(numbered, reverse=True):
        path = os.path.join(output_dir, name)
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        warnings.warn(
            f"Skipping checkpoint {path!r}: {problem} (a write interrupted by a crash or a full disk).",
            UserWarning,
            stacklevel=2,
        )
    return None


def _check_deletable(path: str) -> None:
    real = os.path.realpath(path)
    cwd = os.path.realpath(os.getcwd())
    home = os.path.realpath(os.path.expanduser("~"))
    if real in (os.path.sep, home) or cwd == real or cwd.startswith(real.rstrip(os.sep) + os.sep):
        raise ValueError(
            f"Refusing to delete output_dir {path!r} (it is the root, your home folder or holds the "
            "current folder); choose a dedicated --output_dir."
        )


def safetensors_problem(path: str) -> str | None:
    """Why a `.safetensors` file cannot be loaded (cut short by an interrupted download or save, or a corrupt
    header), or None; reads the header only."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"is incomplete ({size} bytes, not even a header)"
        header_size = int.from_bytes(head, "little")
        if 8 + header_size > size:
            return f"is incomplete ({size} bytes; its header alone needs {8 + header_size})"
        try:
            header = json.loads(handle.read(header_size))
            end = max(
                (int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"), default=0
            )
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "has a corrupt header"
    expected = 8 + header_size + end
    if size < expected:
        return f"is incomplete ({size} of {expected} bytes)"
    if size > expected:
        return f"does not match its header ({size} bytes, the header describes {expected})"
    return None


def check_weight_files(folder: str) -> None:
    """A truncated or corrupt `*.safetensors` file of a local model folder is named in one line, before loading."""
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith(".safetensors") and os.path.isfile(path):
            problem = safetensors_problem(path)
            if problem is not None:
                raise ValueError(
                    f"Model weights file {path!r} {problem}: an interrupted download or save; save or download the "
                    "model again."
                )


def check_model_path(path: str) -> None:
    """A missing local model folder is named (transformers would say "Repo id must be in the form ..."), and so is
    an incomplete weights file in it."""
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")) and not os.path.isfile(
            os.path.join(path, "adapter_config.json")
        ):
            raise FileNotFoundError(
                f"Model folder {path!r} has no config.json; pass a folder written by save_pretrained."
            )
        check_weight_files(path)
        return
    looks_local = (
        path.startswith(("/", "./", "../", "~"))
        or path.count("/") > 1
        or path.endswith("/")
        or os.sep != "/"
        and os.sep in path
    )
    if looks_local:
        raise FileNotFoundError(
            f"Model folder {path!r} does not exist; pass an existing local folder or a Hub id (org/name)."
        )


def _load(what: str, path: str, loader):
    from safetensors import SafetensorError

    try:
        return loader()
    except OSError as error:  # transformers: no such repo / no network / missing files
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileNotFoundError(
            f"Could not load the {what} from {path!r} ({first}); pass a local model folder or a reachable Hub id."
        ) from error
    except SafetensorError as error:  # a weights file cut short or corrupt (a downloaded one, after the checks)
        raise ValueError(
            f"Could not load the {what} from {path!r}: a weights file is incomplete or corrupt ({error}); save or "
            "download the model again."
        ) from error


# ------------------------------------------------------------------ the start evaluation, kept for a resume


def write_start_record(output_dir: str, record, target: float | None) -> None:
    """Numbers only: the step, each split's NLL, the AUC and the target (never any text)."""
    from ..hub import removed_if_disk_full

    values = {
        "step": record.step,
        "nll": record.nll,
        "mia_auc": record.mia_auc,
        "attacks": record.attacks,
        "target_nll": target,
    }
    with removed_if_disk_full(output_dir):
        write_json(os.path.join(output_dir, START_RECORD), values)


def write_json(path: str, values: dict) -> None:
    """Write `values` to `path` whole or not at all (a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(values, handle, indent=2)
    os.replace(temporary, path)


def read_start_record(output_dir: str):
    from ..callbacks import EvalRecord

    with open(os.path.join(output_dir, START_RECORD)) as handle:
        values = json.load(handle)
    record = EvalRecord(
        step=values["step"], nll=values["nll"], mia_auc=values["mia_auc"], attacks=values.get("attacks")
    )
    return record, values["target_nll"]


PRIVATE_RUN_FIELDS = ("forget_tokens",)  # compared on resume, never shown in a message


def run_record(args, forget) -> dict:
    """What a resume must match, kept in each checkpoint folder (local, never uploaded): the method, the learning
    rate, and the forget set's numbers of examples and tokens (counts only: no text, token id or digest of it).
    An error names a differing token count without its values."""
    tokens = sum(len(example["input_ids"]) for example in forget)
    return {
        "method": args.method,
        "learning_rate": args.learning_rate,
        "forget_examples": len(forget),
        "forget_tokens": tokens,
    }


def check_resume_matches(checkpoint: str, current: dict) -> None:
    """Refuse to resume `checkpoint` with another method, learning rate or forget set size than its run had (from
    its `RUN_RECORD`; a checkpoint without one, e.g. written by a plain `Trainer`, is not checked)."""
    path = os.path.join(checkpoint, RUN_RECORD)
    if not os.path.isfile(path):
        return
    try:
        with open(path) as handle:
            stored = json.load(handle)
    except (OSError, ValueError):
        raise ValueError(f"{path!r} is not valid JSON; resume from another checkpoint-N or start a new run.") from None
    differences = [
        f"{key} differ" if key in PRIVATE_RUN_FIELDS else f"{key} {stored[key]!r} there, {current[key]!r} now"
        for key in current
        if key in stored and stored[key] != current[key]
    ]
    if differences:
        raise ValueError(
            f"Cannot resume from {checkpoint!r}: its run differs ({'; '.join(differences)}); resume with the first "
            "run's forget data and arguments, or start a new run (another --output_dir)."
        )


def _run_record_callback(values: dict):
    from transformers import TrainerCallback

    class RunRecord(TrainerCallback):
        """After each checkpoint save: write `RUN_RECORD` into it (main process)."""

        def on_save(self, args, state, control, **kwargs):
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if state.is_world_process_zero and os.path.isdir(folder):
                from ..hub import removed_if_disk_full

                with removed_if_disk_full(folder):
                    write_json(os.path.join(folder, RUN_RECORD), values)

    return RunRecord()


def _start_record_callback(monitor, output_dir: str, stored):
    from transformers import TrainerCallback

    class StartRecord(TrainerCallback):
        """After the monitor's start evaluation: store it (first run) or put the first run's back (resume)."""

        def on_train_begin(self, args, state, control, **kwargs):
            if stored is not None:
                monitor.start = stored  # the guard and the best selection compare with the original model
            elif state.is_world_process_zero:
                write_start_record(output_dir, monitor.start, monitor.target)

    return StartRecord()


# ------------------------------------------------------------------ the run


def unseen_targets(plan, unseen, approximate):
    """The unseen data for objectives that take target levels from it (None when no objective reads it): the
    `unseen_data` split, else the approximate split with a warning (its attacks then score the targets' data),
    else None (the objective then names what it needs)."""
    if not any(objective.reads_unseen for objective in plan.objectives):
        return None
    if unseen is not None or approximate is None:  # neither: the objective says what it needs
        return unseen
    warnings.warn(
        f"forget_loss {plan.forget_loss!r} takes its targets from approximate_data, the membership attacks' "
        "non-members too, so the attacks are not independent of the targets; pass a disjoint unseen_data.",
        stacklevel=2,
    )
    return approximate


def run(argv: list[str]) -> dict:
    from transformers import AutoModelForCausalLM

    from .. import get_method
    from ..callbacks import StoppingCriteria, UnlearningEvalCallback
    from ..distributed import setup_distributed
    from ..launch import check_global_batch, check_launch_environment
    from ..ledger import original_target, read_history
    from ..plan import run_plan
    from .args import DEFAULT_CONFIG, model_init_kwargs, parse_args
    from .demo import UNSEEN_TARGETS
    from .report import VerbatimSampleCallback, summary_table

    # No config and no model: the embedded default job (its config, with any command-line overrides on top).
    if not any(
        a.split("=")[0] in ("--config", "--from_manifest", "--model_name_or_path", "--help", "-h") for a in argv
    ):
        argv = ["--config", DEFAULT_CONFIG] + argv
    check_launch_environment()  # ranks and rendezvous address, before the arguments start the process group
    args, script, model_args = parse_args(argv)
    check_global_batch(
        script.global_batch_size, args.world_size, args.per_device_train_batch_size, args.gradient_accumulation_steps
    )
    given_output_dir = args.output_dir  # errors name the path the user gave (a link, possibly)
    args.output_dir = resolve_output_dir(args.output_dir)
    trainer_class = get_method(args.method)
    plan = run_plan(args, trainer_class)  # what this run trains on: the trainer builds the same plan
    if args.forget_weight == 0 and (plan.retain_objective is None or args.retain_weight == 0):
        raise ValueError(
            f"forget_weight=0 and retain_weight={args.retain_weight} with retain_loss {plan.retain_loss!r}: every loss "
            "term has weight 0, so nothing would train; set forget_weight (and/or retain_weight) above 0."
        )
    if plan.needs_retain_data and script.retain_data is None and model_args.model_name_or_path is not None:
        raise ValueError(
            f"Method {args.method!r} with retain_loss {plan.retain_loss!r} needs retain data: set "
            "retain_data (in-distribution or general text), or set retain_loss: none (or retain_weight: "
            "0), or choose a method without a retain term (ga, random_label, adversarial)."
        )
    if script.retain_data is not None and not plan.uses_retain_data:
        warnings.warn(
            f"Method {args.method!r} does not train on retain data (retain_loss: none): retain_data is not used for "
            "unlearning and not listed on the model card; it is only evaluated (retain NLL, blow-up guard).",
            UserWarning,
            stacklevel=2,
        )
    check_output_dir_spares_inputs(
        given_output_dir,
        {
            "model_name_or_path": model_args.model_name_or_path,
            "ref_model_name_or_path": script.ref_model_name_or_path,
            "forget_data": script.forget_data,
            "retain_data": script.retain_data,
            "approximate_data": script.approximate_data,
            **{f"earlier_forget_data {i}": path for i, path in enumerate(script.earlier_forget_data or [], start=1)},
            "cache_dir": args.cache_dir,
        },
    )
    resume = prepare_output_dir(args, script)
    setup_distributed(args)  # fails early on a launch that cannot work (e.g. DeepSpeed under plain python)

    # Tokenizer and data (before the model: bad data fails fast).
    model_path, tokenizer, splits, descent_retain = load_data(args, script, model_args)
    unseen = unseen_targets(plan, splits.pop(UNSEEN_TARGETS, None), splits.get("approximate"))
    splits.update(load_earlier_forget_sets(args, script, tokenizer))
    record = run_record(args, splits["forget"])
    if resume:
        check_resume_matches(resume, record)

    # Stopping: the paper's target (the approximate set's NLL on the original model, from the first run when
    # resuming) and the blow-up guard (non-finite NLLs always; the retain NLL with retain data).
    stored, target = read_start_record(args.output_dir) if resume else (None, None)
    # A model unlearned before continues its request history; its target is the original model's (the ledger's).
    history = read_history(model_path, model_args.model_revision)
    if not resume:
        target, _ = original_target(history, script.original_unseen_nll, None)
        report_history(history, target, bool(script.earlier_forget_data))
    has_target = "approximate" in splits or target is not None
    # The worst-case rule stops on the attacks alone (every AUC interval contains 0.5, or one lies below it).
    worst_case = script.stopping_rule == "worst_case"
    if worst_case and "approximate" not in splits:
        raise ValueError(
            "stopping_rule=worst_case needs approximate_data (the non-members of every attack); pass it "
            "or use stopping_rule=paper."
        )
    criteria = StoppingCriteria(
        target_nll=(target if target is not None else math.inf) if resume else target,
        stop_at_target=script.stop_at_unseen_nll and has_target and not worst_case,
        max_retain_nll_increase=script.max_retain_nll_increase if "retain" in splits else None,
        worst_case_attacks=worst_case,
        max_earlier_nll_drop=script.max_earlier_nll_drop,
        stop_at_step=script.stop_at_step,
    )
    # Every configured attack from the same forward pass per split (none without non-members to compare with).
    attacks = script.attack_names() if "approximate" in splits else None
    if script.save_best and not has_target:
        raise ValueError("save_best needs approximate_data (the best evaluation is the one closest to its NLL).")

    # Model and trainer.
    # trl's ModelConfig: revision, dtype, attention implementation, 4/8-bit loading, and a LoRA adapter (use_peft).
    from trl import get_peft_config

    model = _load(
        "model", model_path, lambda: AutoModelForCausalLM.from_pretrained(model_path, **model_init_kwargs(model_args))
    )
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=splits["forget"],
        retain_dataset=(splits.get("retain") if descent_retain is None else descent_retain)
        if plan.uses_retain_data
        else None,  # unused data is not passed
        unseen_dataset=unseen,
        ref_model=script.ref_model_name_or_path,  # None: the model's own checkpoint (or its adapter-free base)
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    monitor = UnlearningEvalCallback(
        splits,
        eval_steps=script.eval_every_steps,
        criteria=criteria,
        save_best=script.save_best,
        batch_size=args.per_device_eval_batch_size,
        max_examples=script.eval_max_examples,
        attacks=attacks,
        n_resamples=script.mia_resamples,
    ).attach(trainer)
    trainer.set_run_history(history)
    trainer.manifest_context.update(run_manifest_context(script, model_args, splits, descent_retain))
    trainer.add_callback(_start_record_callback(monitor, args.output_dir, stored))
    trainer.add_callback(_run_record_callback(record))
    # A verbatim sample of forget text, only when asked for (the demo's public data asks).
    sample = VerbatimSampleCallback(trainer, tokenizer, splits["forget"]) if script.show_forget_samples else None

    clear_output_dir(args.output_dir, script, resume, trainer.accelerator)
    trainer.train(resume_from_checkpoint=resume)
    before, after = monitor.start, monitor.history[-1]
    trainer.manifest_context.update(stop_reason=monitor.stop_reason, measured_unseen_nll=monitor.target)
    trainer.evaluation_results = {"before": before.logs("eval"), "after": after.logs("eval")}  # numbers only
    if trainer.is_world_process_zero():
        samples = (sample.before, sample.after) if sample is not None else (None, None)
        print(
            summary_table(
                before,
                after,
                monitor.stop_reason,
                *samples,
                held_out_retain=descent_retain is not None,
                history=monitor.history,
            )
        )
    if monitor.failed:
        raise BlowUp(
            f"unlearning stopped: {monitor.stop_reason}. The model was NOT saved as the unlearned result"
            f"{' and not pushed' if args.push_to_hub else ''}. Lower --learning_rate or tighten the stopping target, "
            "then run again (exit status 3)."
        )

    # Save (16-bit weights are gathered under ZeRO-3 by save_model; the model card records the results). With
    # push_to_hub, save_model also pushes the final model, once.
    trainer.save_model(args.output_dir)
    return {"before": before, "after": after, "stop_reason": monitor.stop_reason, "history": list(monitor.history)}


def run_manifest_context(script, model_args, splits, descent_retain) -> dict:
    """What the run manifest takes from the script (`hf_unlearn.manifest`): the script's and the model's
    arguments, the model's identity (a Hub id or "local"), the counts of examples and the original target given."""
    from ..manifest import git_commit, model_identity

    model = model_identity(model_args.model_name_or_path, model_args.model_revision)
    model["reference"] = model_identity(script.ref_model_name_or_path)["id"]
    retain = descent_retain if descent_retain is not None else splits.get("retain")
    counts = {
        "forget": len(splits["forget"]),
        "retain": len(retain) if retain is not None else None,
        "unseen": len(splits["approximate"]) if "approximate" in splits else None,
        "earlier_sets": len(script.earlier_forget_data or []),
    }
    return {
        "script": script,
        "model_args": model_args,
        "model": model,
        "counts": counts,
        "original_unseen_nll": script.original_unseen_nll,
        "git": git_commit(),
    }


def report_history(history, target: float | None, checks_earlier: bool = False) -> None:
    """Say once (main process) which request of the model this run is, where its stopping target comes from, and
    that earlier requests cannot be checked without their forget sets."""
    if history.next_request == 1 or not _is_main_process():
        return
    if not checks_earlier:
        print(
            f"hf-unlearn: cannot check that the {len(history.requests)} earlier request(s) stay forgotten: pass their "
            "forget sets (or a sample) with --earlier_forget_data.",
            file=sys.stderr,
        )
    source = f"{target:.4f}, the original model's unseen NLL" if target is not None else "unknown"
    print(
        f"hf-unlearn: request {history.next_request} of this model ({len(history.requests)} in its ledger); "
        f"stopping target {source}"
        + ("" if target is not None else " (pass --original_unseen_nll to keep the original target)")
        + ".",
        file=sys.stderr,
    )


def load_earlier_forget_sets(args, script, tokenizer) -> dict:
    """The earlier requests' forget sets as evaluation splits `earlier_forget_<k>` (`hf_unlearn.earlier`)."""
    from ..earlier import earlier_split

    with args.main_process_first(desc="loading the earlier forget sets"):
        return {
            earlier_split(index): load_examples(source, script.forget_split, args, script, tokenizer)
            for index, source in enumerate(script.earlier_forget_data or [], start=1)
        }


def load_examples(source, split, args, script, tokenizer) -> list:
    """One data source tokenised with the run's data settings (`hf_unlearn.data.build_examples`)."""
    from ..data import build_examples

    return build_examples(
        source,
        tokenizer,
        script.data_format,
        args.max_length,
        script.text_column,
        script.question_column,
        script.answer_column,
        script.max_examples,
        split=split,
    )


# ------------------------------------------------------------------ the data


def load_data(args, script, model_args):
    """The tokenizer and the data of a run, before the model (bad data fails fast): `(model_path, tokenizer, splits,
    descent_retain)`. `splits` holds "forget" and, where given, "retain" and "approximate" (the evaluated sets) and
    `UNSEEN_TARGETS` (unseen data read only by objectives that target the unseen level: the caller pops it);
    `descent_retain` is the retain data trained on when it differs from the evaluated "retain" (the embedded
    default job's held-out chunks), else None. Shared by `hf-unlearn train` and `hf-unlearn tune`."""
    from transformers import AutoConfig, AutoTokenizer

    from ..data import check_examples_fit_model
    from .demo import DESCENT_RETAIN, UNSEEN_TARGETS, default_model_dir, default_splits

    model_path = model_args.model_name_or_path or default_model_dir(args.cache_dir, script.demo_model)
    check_model_path(model_path)
    revision = model_args.model_revision
    tokenizer = _load("tokenizer", model_path, lambda: AutoTokenizer.from_pretrained(model_path, revision=revision))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The main process first: a Hub dataset is downloaded once, the other ranks then read it from the cache.
    with args.main_process_first(desc="loading and tokenising the data"):
        if model_args.model_name_or_path is None:
            splits = default_splits(tokenizer, args.max_length, script.demo_model)
        else:
            sources = {
                "forget": script.forget_data,
                "retain": script.retain_data,
                "approximate": script.approximate_data,
                UNSEEN_TARGETS: script.unseen_data,
            }
            splits = {
                name: load_examples(source, getattr(script, f"{name}_split"), args, script, tokenizer)
                for name, source in sources.items()
                if source is not None
            }
    config = _load("model config", model_path, lambda: AutoConfig.from_pretrained(model_path, revision=revision))
    check_examples_fit_model(splits.values(), config, tokenizer.pad_token_id, model_path)
    # The default job trains on these retain chunks and evaluates "retain" on held-out ones (None: the same data).
    descent_retain = splits.pop(DESCENT_RETAIN, None)
    return model_path, tokenizer, splits, descent_retain


if __name__ == "__main__":
    from hf_unlearn.distributed import finish_distributed

    main()
    finish_distributed()
