"""The run manifest: how an unlearned model was made, written as `unlearning_manifest.json` beside it.

Every save of an unlearning trainer (`save_model`, the recipe, `hf-unlearn train`, the files `push_to_hub`
uploads) writes it. It holds what a rerun needs and what a reader of a released checkpoint asks:

- `versions`: hf_unlearn, transformers, torch, accelerate, deepspeed, trl and peft ("absent" when not installed);
- `engine`: single process, DDP, DeepSpeed (ZeRO stage and its config) or FSDP (version and its config);
- `batch`: world size, per-device batch, gradient accumulation and the effective batch;
- `seeds`: the seed, the data seed, the pairing seed and how every process is seeded;
- `method`: the method, its objectives, the reference use, and every resolved unlearning hyperparameter;
- `config`: the full resolved configuration as a flat mapping of argument names (what `--from_manifest` reads back);
- `model`: the model's Hub id and revision, or "local";
- `counts`: numbers of forget, retain and unseen examples;
- `stop`: the kind of stop (target reached, end of schedule, ...), the step and the planned steps;
- `evaluation`: the retain and unseen sets' numbers at the start and at the end;
- `git`: the commit (and whether the work tree had changes) when the launch folder is a git repository;
- `request` / `previous_manifest_sha256`: the position in the model's request history (`hf_unlearn.ledger`).

It never holds forget text, its token ids, a path of any data file, a hash of any data, or a number computed from
the forget set's content (its NLL, token counts, attack AUCs): anyone holding the model can compute such a number
for a guessed text and compare. The configuration leaves out the fields that say where a run reads or writes
(`NOT_RECORDED`: data files and their splits, the output folder, the Hub destination and token); a rerun is given
those again:

    hf-unlearn train --from_manifest unlearning_manifest.json --forget_data forget.jsonl --retain_data ... \
        --output_dir rerun
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import json
import os
import subprocess
from dataclasses import fields
from typing import Any

MANIFEST_FILE = "unlearning_manifest.json"
MANIFEST_VERSION = 1
LIBRARIES = ("hf_unlearn", "transformers", "torch", "accelerate", "deepspeed", "trl", "peft")
# Distribution names where they differ from the import names.
DISTRIBUTIONS = {"hf_unlearn": "hf-unlearn"}

# Argument fields that say where a run reads or writes, or who it is, not how it trains: never in the manifest.
NOT_RECORDED = frozenset(
    {
        "output_dir",
        "logging_dir",
        "run_name",
        "deepspeed",  # a path; its content is `engine.config`
        "cache_dir",
        "resume_from_checkpoint",
        "overwrite_output_dir",
        "local_rank",
        "push_to_hub",
        "hub_model_id",
        "hub_token",
        "hub_strategy",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
        "push_to_hub_model_id",
        "push_to_hub_organization",
        "push_to_hub_token",
        "model_name_or_path",  # `model.id` (a Hub id) or "local"
        "ref_model_name_or_path",  # `model.reference` (a Hub id), "local" or None
        "from_manifest",
        "original_unseen_nll",  # in the ledger, with where it comes from
        "earlier_forget_data",
    }
)

# How every process is seeded (transformers' `Trainer` seeds each process the same way; the pairing is global).
RANK_SEEDING = (
    "every process calls transformers.set_seed(seed) (enable_full_determinism(seed) with full_determinism): the "
    "same seed on every rank; the forget/retain pairing is a permutation seeded by pairing_seed of the global forget "
    "index, the same for any number of processes; the sampler's shuffle is seeded by data_seed (else seed)"
)

# Stop reasons (`UnlearningEvalCallback.stop_reason`) by their prefix, as the manifest states them: the kind only,
# never the numbers of the reason (a forget NLL among them).
STOP_KINDS = (
    ("blow-up", "blow-up"),
    ("earlier forget set", "an earlier forget set came back"),
    ("target reached (LOSS attack only)", "LOSS attack AUC within the tolerance of 0.5"),
    ("target reached (every attack)", "every attack's AUC interval contains 0.5"),
    ("target reached", "forget NLL reached the target"),
    ("over-unlearning", "over-unlearning"),
    ("fixed step reached", "the fixed step (stop_at_step) was reached"),
)


def library_versions() -> dict[str, str]:
    """The installed version of each of `LIBRARIES`, "absent" when it is not installed."""
    from importlib import metadata

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(DISTRIBUTIONS.get(name, name))
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    if versions["hf_unlearn"] == "absent":  # run from a source tree without installing it
        from . import __version__

        versions["hf_unlearn"] = __version__
    return versions


def plain(value: Any) -> Any:
    """`value` as JSON holds it: enums by value, numpy scalars as numbers, containers element-wise, other objects
    by their `str`."""
    import numpy as np

    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def training_config(args) -> dict[str, Any]:
    """Every field of a `TrainingArguments` (an unlearning config included) except `NOT_RECORDED`, readable."""
    values = args.to_dict() if hasattr(args, "to_dict") else {}
    return {name: plain(value) for name, value in values.items() if name not in NOT_RECORDED}


def dataclass_config(obj) -> dict[str, Any]:
    """Every init field of the dataclass instance `obj` (script or model arguments) except `NOT_RECORDED` and
    those naming data (`*_data`, `*_split`)."""
    if obj is None:
        return {}
    return {
        f.name: plain(getattr(obj, f.name))
        for f in fields(obj)
        if f.init and f.name not in NOT_RECORDED and not f.name.endswith(("_data", "_split"))
    }


def engine(trainer) -> dict[str, Any]:
    """The engine that trained: {"name": single | ddp | deepspeed | fsdp, ...its settings and config}."""
    args, accelerator = trainer.args, trainer.accelerator
    distributed = str(getattr(accelerator, "distributed_type", "NO")).rsplit(".", 1)[-1]
    if getattr(trainer, "is_deepspeed_enabled", False) or args.deepspeed:
        config = getattr(getattr(args, "hf_deepspeed_config", None), "config", None)
        if config is None and isinstance(args.deepspeed, dict):
            config = args.deepspeed
        config = plain(config or {})
        return {
            "name": "deepspeed",
            "zero_stage": (config.get("zero_optimization") or {}).get("stage"),
            "accelerate": distributed,
            "config": config,
        }
    if getattr(trainer, "is_fsdp_enabled", False) or args.fsdp:
        plugin = getattr(getattr(accelerator, "state", None), "fsdp_plugin", None)
        settings = {}
        if plugin is not None:
            settings = {
                key: plain(value)
                for key, value in vars(plugin).items()
                if isinstance(value, (bool, int, float, str, enum.Enum)) or value is None
            }
        return {
            "name": "fsdp",
            "version": settings.get("fsdp_version", (args.fsdp_config or {}).get("version", 1)),
            "accelerate": distributed,
            "config": {"fsdp": plain(args.fsdp), "fsdp_config": plain(args.fsdp_config), "plugin": settings},
        }
    if args.world_size > 1:
        return {"name": "ddp", "accelerate": distributed, "config": {"ddp_backend": args.ddp_backend}}
    return {"name": "single", "accelerate": distributed, "config": {"device": str(args.device)}}


def git_commit(folder: str | None = None) -> dict[str, Any] | None:
    """{"commit": HEAD, "dirty": whether tracked files changed} of the git repository `folder` (the current folder)
    lies in, or None outside a repository (or without git)."""
    folder = folder or os.getcwd()

    def git(*arguments) -> str:
        return subprocess.run(
            ["git", *arguments], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def stop_kind(reason: str | None, global_step: int = 0, max_steps: int = 0) -> str:
    """The kind of a stop reason (`STOP_KINDS`), without its numbers; "end of schedule" without one."""
    if reason is None:
        return "stopped early by a callback" if 0 < global_step < max_steps else "end of schedule"
    for prefix, kind in STOP_KINDS:
        if reason.startswith(prefix):
            return kind
    return "stopped by a callback"


def model_identity(name_or_path: str | None, revision: str | None = None) -> dict[str, Any]:
    """{"id": Hub id or "local" (or None when unknown), "revision": the revision of a Hub id}; a local path is
    never written."""
    from .model_card import _is_hub_id

    if not name_or_path:
        return {"id": None, "revision": None}
    if _is_hub_id(name_or_path):
        return {"id": name_or_path, "revision": revision or "main"}
    return {"id": "local", "revision": None}


def public_evaluation(results: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """The numbers of `trainer.evaluation_results` not computed from the forget set (retain and unseen sets)."""
    from .model_card import public_results

    return public_results(results or {}, numbers_only=True)


def eval_callback(trainer):
    """The trainer's `UnlearningEvalCallback`, or None."""
    from .callbacks import UnlearningEvalCallback

    return next((c for c in trainer.callback_handler.callbacks if isinstance(c, UnlearningEvalCallback)), None)


def count(dataset) -> int | None:
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:  # an iterable dataset
        return None


def build_manifest(trainer, history=None) -> dict[str, Any]:
    """The manifest of `trainer`'s run (see the module docstring). `trainer.manifest_context` (the recipe fills
    it) adds the script's and the model's arguments, the counts and the stop reason; `history` (a
    `hf_unlearn.ledger.History`) the position in the model's request history."""
    from .reference import policy_checkpoint

    args, context = trainer.args, dict(getattr(trainer, "manifest_context", {}) or {})
    settings = trainer.unlearning_args
    policy = trainer.accelerator.unwrap_model(trainer.model)
    plan = trainer.plan
    world = args.world_size
    config = training_config(args)
    config.update(dataclass_config(context.get("script")))
    config.update(dataclass_config(context.get("model_args")))
    config["method"] = settings.method if settings.declares("method") else trainer.method_name
    config.setdefault("forget_loss", plan.forget_loss)
    config.setdefault("retain_loss", plan.retain_loss)
    from .objectives.base import param_fields

    hyperparameters = {
        name: plain(getattr(settings, name))
        for name in (
            *(n for n in settings._fields if n not in ("method", "forget_loss", "retain_loss", "params_classes")),
            *(n for objective in plan.objectives for n in param_fields(objective)),
        )
        if name not in NOT_RECORDED
    }
    if "model" in context:
        model = dict(context["model"])
    else:
        name = policy_checkpoint(policy)
        model = model_identity(name, getattr(getattr(policy, "config", None), "_commit_hash", None))
        model["reference"] = None
    callback = eval_callback(trainer)
    reason = context.get("stop_reason", callback.stop_reason if callback is not None else None)
    state = trainer.state
    counts = {
        "forget": count(trainer.forget_dataset if trainer.forget_dataset is not None else trainer._forget_source),
        "retain": count(trainer.retain_dataset),
        "unseen": count(trainer.unseen_dataset),
    }
    counts.update(context.get("counts", {}))
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
        "engine": engine(trainer),
        "batch": {
            "world_size": world,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "effective_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * world,
        },
        "seeds": {
            "seed": args.seed,
            "data_seed": args.data_seed,
            "full_determinism": args.full_determinism,
            "pairing_seed": settings.pairing_seed,
            "ranks": RANK_SEEDING,
        },
        "method": {
            "name": config["method"],
            "trainer": type(trainer).__name__,
            "forget_loss": plan.forget_loss,
            "retain_loss": plan.retain_loss,
            "reference": plan.reference,
            "hyperparameters": hyperparameters,
        },
        "config": config,
        "model": model,
        "counts": counts,
        "stop": {
            "kind": stop_kind(reason, state.global_step, state.max_steps),
            "step": state.global_step,
            "max_steps": state.max_steps,
        },
        "evaluation": public_evaluation(trainer.evaluation_results),
        "git": trainer.manifest_context.setdefault("git", git_commit())
        if hasattr(trainer, "manifest_context")
        else None,
    }
    if history is not None:
        manifest["request"] = history.next_request
        manifest["previous_manifest_sha256"] = history.previous_digest
    return manifest


def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of a manifest's canonical JSON (sorted keys, no spaces): the same for the file as written and as
    read back, whatever its indentation."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_json(path: str, values: dict[str, Any]) -> None:
    """Write `values` to `path` whole or not at all (a temporary file, then a rename)."""
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(values, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    os.replace(temporary, path)


def read_manifest(path: str) -> dict[str, Any]:
    """A manifest file, checked to be one (one line naming the file and the fix otherwise)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--from_manifest {path!r} does not exist; pass the {MANIFEST_FILE} of a run.")
    try:
        with open(path) as handle:
            manifest = json.load(handle)
    except ValueError:
        raise ValueError(f"--from_manifest {path!r} is not valid JSON; pass the {MANIFEST_FILE} of a run.") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
        raise ValueError(f"--from_manifest {path!r} has no 'config' mapping; pass the {MANIFEST_FILE} of a run.")
    return manifest


def rerun_values(manifest: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """The flat configuration of `manifest` as a config file gives it (`--from_manifest`): its `config` fields
    that the parser knows (`known`), and the model's Hub id and revision when it is not local."""
    values = {name: value for name, value in manifest["config"].items() if name in known}
    model = manifest.get("model") or {}
    if model.get("id") not in (None, "local"):
        values["model_name_or_path"] = model["id"]
        if model.get("revision"):
            values["model_revision"] = model["revision"]
    if model.get("reference") not in (None, "local"):
        values["ref_model_name_or_path"] = model["reference"]
    return values


__all__ = [
    "MANIFEST_FILE",
    "build_manifest",
    "library_versions",
    "manifest_digest",
    "read_manifest",
    "rerun_values",
    "stop_kind",
]
