"""Checks of a distributed launch that fail early, before a model is loaded, with the command that works instead.

`recipes/unlearn.py` calls `setup_distributed(args)` right after parsing its arguments. It catches:

- DeepSpeed requested without a launcher (`python recipes/unlearn.py --deepspeed ...`): DeepSpeed would look for
  MPI and die with an mpi4py import error deep in model loading;
- a DeepSpeed JSON whose numbers contradict the arguments (`train_micro_batch_size_per_gpu`,
  `gradient_accumulation_steps`, `train_batch_size`, `gradient_clipping`, bf16/fp16, the optimizer's lr): the
  Trainer only reports this after the model is loaded, and DeepSpeed's own batch assertion is cryptic;
- DeepSpeed on a machine without a GPU and without `use_cpu`: every process would believe it is alone;
- a missing DeepSpeed JSON file;
- ZeRO-3 without `stage3_gather_16bit_weights_on_model_save` (warned: the saved folder would hold no weights);
- FSDP with a sharded state-dict type (warned: `save_model` would write no weights);

and it connects DeepSpeed's communication layer to the process group that the Trainer's arguments set up, which
`deepspeed.zero.Init` (ZeRO-3 loading) needs on CPU, where accelerate starts torch.distributed but not DeepSpeed's.

`fsdp_on_cpu` (used by `UnlearningTrainer` when it creates its Accelerator) makes an FSDP2 launch on CPU processes
shard the model, where accelerate alone would train it with DDP, and refuses FSDP1 there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
from typing import Any

logger = logging.getLogger(__name__)

# Environment variables set by torchrun, the deepspeed launcher, accelerate launch, or MPI launchers.
LAUNCHER_VARIABLES = ("LOCAL_RANK", "RANK", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
AUTO = "auto"


def deepspeed_requested(args) -> bool:
    """Whether DeepSpeed is asked for, by `--deepspeed` or by `accelerate launch` with a DeepSpeed config."""
    return (
        bool(getattr(args, "deepspeed", None)) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    )


def started_by_launcher() -> bool:
    """Whether this process was started by torchrun, deepspeed, accelerate launch or an MPI launcher."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def world_size(args=None) -> int:
    """Number of processes of the launch (from the launcher's environment, which holds even before set-up)."""
    for name in ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        if name in os.environ:
            return int(os.environ[name])
    return getattr(args, "world_size", 1) if args is not None else 1


def deepspeed_config_source(args) -> dict | str | None:
    """The DeepSpeed config given to the run: `args.deepspeed` (path or dict) or accelerate's config file."""
    source = getattr(args, "deepspeed", None)
    if source:
        return source
    return os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE") or None


def check_deepspeed_file(source: Any) -> None:
    """A clear error for a DeepSpeed JSON path that does not exist (dicts and base64 strings pass)."""
    if isinstance(source, str) and source.endswith(".json") and not os.path.isfile(source):
        raise FileNotFoundError(
            f"DeepSpeed config {source!r} does not exist (looked in {os.getcwd()!r}). Pass an existing JSON file, e.g. "
            "--deepspeed recipes/deepspeed/zero3.json, launching from the repository root (the path is relative)."
        )


def load_deepspeed_config(source: dict | str | None) -> dict | None:
    """The DeepSpeed config as a dict; a clear error for a missing or malformed JSON file."""
    if source is None or isinstance(source, dict):
        return source
    check_deepspeed_file(source)
    if not os.path.isfile(source):
        return None  # a base64-encoded config (accepted by accelerate): not checked here
    with open(source) as handle:
        try:
            config = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"DeepSpeed config {source!r} is not valid JSON ({error.msg} at line {error.lineno}, column "
                f"{error.colno}); fix the file, e.g. starting from recipes/deepspeed/zero3.json."
            ) from None
        except UnicodeDecodeError:
            raise ValueError(f"DeepSpeed config {source!r} is not UTF-8 text; pass a JSON file.") from None
    if not isinstance(config, dict):
        raise ValueError(
            f"DeepSpeed config {source!r} must hold a JSON object ({{...}}); start from recipes/deepspeed/zero3.json."
        )
    return config


def _get(config: dict, dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def deepspeed_mismatches(config: dict, args, processes: int) -> list[str]:
    """Entries of a DeepSpeed config that are neither "auto" nor equal to what the arguments say.

    `processes` is the number of processes, for `train_batch_size` = per-device batch x accumulation x processes.
    """
    expected = [
        ("train_micro_batch_size_per_gpu", args.per_device_train_batch_size, "per_device_train_batch_size"),
        ("gradient_accumulation_steps", args.gradient_accumulation_steps, "gradient_accumulation_steps"),
        (
            "train_batch_size",
            args.per_device_train_batch_size * args.gradient_accumulation_steps * processes,
            f"per_device_train_batch_size x gradient_accumulation_steps x {processes} processes",
        ),
        ("gradient_clipping", args.max_grad_norm, "max_grad_norm"),
        ("bf16.enabled", bool(args.bf16), "bf16"),
        ("fp16.enabled", bool(args.fp16), "fp16"),
        ("optimizer.params.lr", args.learning_rate, "learning_rate"),
    ]
    problems = []
    for key, value, name in expected:
        found = _get(config, key)
        if found is None or found == AUTO:
            continue
        if key.endswith(".enabled") and not value and not found:
            continue
        if found != value:
            problems.append(f"{key}={found!r} but {name}={value!r}")
    return problems


def _without_flag(argv: list[str], flag: str) -> list[str]:
    """`argv` without `flag VALUE` / `flag=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            out.append(arg)
    return out


def relaunch_commands(argv: list[str] | None = None) -> str:
    """The launcher commands that run this script's command line, on one line: `accelerate launch ...` (whose
    YAML names the DeepSpeed JSON, so `--deepspeed` is dropped) or `deepspeed ...`."""
    argv = list(sys.argv if argv is None else argv)
    script = os.path.relpath(argv[0]) if argv and argv[0] else "recipes/unlearn.py"
    rest = shlex.join(argv[1:])
    accelerate_rest = shlex.join(_without_flag(argv[1:], "--deepspeed"))  # the accelerate YAML names the JSON
    return (
        f"`accelerate launch --config_file recipes/accelerate/zero3.yaml --num_processes N {script} {accelerate_rest}`"
        f" or `deepspeed --num_gpus N {script} {rest}`"
    )


def check_launcher_for_deepspeed(requested: bool) -> None:
    """DeepSpeed asked for without a launcher (plain `python`): one line with the commands that work. DeepSpeed
    would otherwise look for an MPI launcher and fail deep in model loading (mpi4py)."""
    if requested and not started_by_launcher():
        raise ValueError(
            "DeepSpeed was requested but this script was started with plain `python`, without a launcher (DeepSpeed "
            f"would look for MPI and fail): start it with {relaunch_commands()} (N = the number of GPUs; 1 works "
            "too), or drop --deepspeed to train without DeepSpeed."
        )


def check_fsdp_state_dict(args) -> None:
    """Warn when FSDP is asked to save sharded state dicts: `Trainer.save_model` then writes no weights at all (it
    saves only a full state dict), so the unlearned model would exist only in the sharded checkpoints."""
    if not fsdp_requested(args):
        return
    kind = os.environ.get("FSDP_STATE_DICT_TYPE") or (getattr(args, "fsdp_config", None) or {}).get("state_dict_type")
    if kind and "FULL_STATE_DICT" not in str(kind).upper():
        logger.warning(
            "FSDP with state_dict_type %s: save_model will write no model weights. Set `fsdp_state_dict_type: "
            "FULL_STATE_DICT` in the accelerate config (as recipes/accelerate/fsdp2.yaml does) to save a loadable "
            "model.",
            kind,
        )


def check_launch(args) -> None:
    """Raise a clear error for a launch that cannot work (see the module docstring); warn about risky ones."""
    check_fsdp_state_dict(args)
    if not deepspeed_requested(args):
        return
    try:
        import deepspeed  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "DeepSpeed was requested but is not installed: `pip install deepspeed` (or `pip install hf_unlearn[deepspeed]`),"
            " or drop --deepspeed to train with DDP."
        ) from error
    check_launcher_for_deepspeed(True)
    source = deepspeed_config_source(args)
    config = load_deepspeed_config(source)
    processes = world_size(args)
    if config is not None:
        problems = deepspeed_mismatches(config, args, processes)
        if problems:
            raise ValueError(
                f"The DeepSpeed config {source if isinstance(source, str) else '(dict)'} contradicts the arguments: "
                + "; ".join(problems)
                + '. Set these keys to "auto" in the DeepSpeed config (the Trainer then fills them from the arguments,'
                " as recipes/deepspeed/*.json do) or change the arguments to match."
            )
        zero = config.get("zero_optimization") or {}
        stage = zero.get("stage", 0)
        if stage == 3 and not (
            zero.get("stage3_gather_16bit_weights_on_model_save") or zero.get("gather_16bit_weights_on_model_save")
        ):
            logger.warning(
                "ZeRO-3 without stage3_gather_16bit_weights_on_model_save: the saved model folder will hold no weights "
                "(only DeepSpeed shards; convert with zero_to_fp32.py). Set it to true in %s to save a loadable model.",
                source,
            )
    import torch

    if processes > 1 and not torch.cuda.is_available() and not getattr(args, "use_cpu", False):
        raise ValueError(
            f"DeepSpeed on a machine without a GPU, with {processes} processes, needs --use_cpu true: without it each "
            "process sets itself up alone and DeepSpeed fails its batch-size check. Add `--use_cpu true`."
        )


def init_deepspeed_comm(args) -> None:
    """Attach DeepSpeed's communication layer to an already started process group (needed by ZeRO-3 loading on CPU).

    On GPUs accelerate starts DeepSpeed's layer itself; on CPU (`use_cpu`) it starts only torch.distributed, and
    `deepspeed.zero.Init` would then see one process and fail its batch-size check.
    """
    if not deepspeed_requested(args):
        return
    import torch.distributed

    _ = args.device  # sets up the process group
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    import deepspeed
    import deepspeed.comm

    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend=torch.distributed.get_backend(), auto_mpi_discovery=False)


def setup_distributed(args) -> None:
    """`check_launch` then `init_deepspeed_comm`: call it right after parsing the arguments, before loading a model."""
    check_launch(args)
    init_deepspeed_comm(args)


def finish_distributed() -> None:
    """Leave the process group cleanly at the end of a launched script.

    Exiting with the gloo / NCCL group alive can abort a rank at interpreter shutdown ("terminate called without
    an active exception"), which fails the whole launch after the work is done.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# ------------------------------------------------------------------ FSDP on CPU processes


def fsdp_requested(args=None) -> bool:
    """Whether FSDP is asked for, by `accelerate launch` with an FSDP config or by the arguments' `fsdp`."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return True
    return bool(getattr(args, "fsdp_plugin_args", None))


def requested_fsdp_version(args=None) -> int:
    """The FSDP version asked for: accelerate's `FSDP_VERSION`, else the arguments' `fsdp_config["version"]`, else 1
    (accelerate's default)."""
    if "FSDP_VERSION" in os.environ:
        return int(os.environ["FSDP_VERSION"])
    config = getattr(args, "fsdp_config", None) or {}
    return int(config.get("version", config.get("fsdp_version", 1)))


def cpu_fsdp_error(version: int) -> str | None:
    """Why FSDP `version` cannot run on CPU processes (one line with the fix), or None when it can (FSDP2)."""
    if version == 2:
        return None
    return (
        f"FSDP version {version} needs GPUs (or another accelerator) and does not run on CPU processes; use FSDP2: "
        "`fsdp_version: 2` in the accelerate config (recipes/accelerate/fsdp2.yaml), or DDP / DeepSpeed."
    )


@contextlib.contextmanager
def fsdp_on_cpu(args):
    """Within this context, an Accelerator created for a multi-process CPU launch that asks for FSDP2 shards the
    model with `fully_shard` (over gloo) instead of silently training with DDP.

    accelerate's `AcceleratorState` turns FSDP on only for multi-accelerator launches (its `MULTI_GPU`, `MULTI_XPU`,
    ... types); a multi-process CPU launch (`MULTI_CPU`) ignores the FSDP plugin. Here the process state is
    presented to `AcceleratorState` as a multi-device one while it is created, so that it takes its FSDP branch;
    the device stays the CPU and the backend gloo. FSDP1 on CPU processes is refused (`cpu_fsdp_error`). Other
    launches pass through unchanged.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    if not fsdp_requested(args) or AcceleratorState._shared_state:
        yield
        return
    _ = args.device  # sets up the process state (PartialState) and the process group
    shared = PartialState._shared_state
    if shared.get("distributed_type") != DistributedType.MULTI_CPU:
        yield
        return
    problem = cpu_fsdp_error(requested_fsdp_version(args))
    if problem:
        raise ValueError(problem)
    shared["distributed_type"] = DistributedType.MULTI_GPU
    try:
        yield
    finally:
        if shared.get("distributed_type") == DistributedType.MULTI_GPU:  # the Accelerator was not created
            shared["distributed_type"] = DistributedType.MULTI_CPU
