"""Checks of a launch over one or more machines, each a one-line error before anything is started or loaded.

Two places check:

- `hf-unlearn train` with launcher options (`check_machines`), before it starts `accelerate launch`: the number of
  machines and processes, the machine's rank in [0, num_machines), and the rendezvous address (the main machine's
  IP and port) that every machine of a multi-machine launch needs. The options come from the command line, else
  from the accelerate config file (`--accelerate_config`), as `accelerate launch` takes them.
- the unlearning script (`check_launch_environment`), from the environment that the launcher (torchrun,
  `accelerate launch`, the `deepspeed` launcher, a cluster script) set: every rank in [0, its size), MASTER_ADDR and
  MASTER_PORT with WORLD_SIZE > 1 (before the training arguments start the process group), then a requested
  `global_batch_size` against per-device batch x accumulation x world size (`check_global_batch`).

A global batch depends on the world size, so a config written for 8 GPUs silently trains with a quarter of its
batch on 2: `global_batch_size` in a config states the batch it is written for, and a launch that does not give it
stops with the accumulation (or per-device batch) that does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

MAX_PORT = 65535
# (rank variable, size variable) pairs set by torchrun, accelerate launch and the deepspeed launcher.
RANK_VARIABLES = (
    ("RANK", "WORLD_SIZE"),
    ("LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    ("LOCAL_RANK", "LOCAL_SIZE"),
    ("GROUP_RANK", "GROUP_WORLD_SIZE"),
    ("CROSS_RANK", "CROSS_SIZE"),
)
RENDEZVOUS_VARIABLES = ("MASTER_ADDR", "MASTER_PORT")


class LaunchEnvironmentError(ValueError):
    """A launcher's environment that cannot start the process group; each process reports its own (the main
    process may be on another machine, with a correct environment)."""


@dataclass(frozen=True)
class Machines:
    """What `accelerate launch` is asked to start, with accelerate's option names.

    Attributes:
        num_processes: processes over all machines (accelerate divides them evenly); `None`: the config file's.
        num_machines: machines of the launch; each runs `accelerate launch` with the same options but its rank.
        machine_rank: this machine's rank, in [0, num_machines); 0 is the main machine.
        main_process_ip: address of the main machine (rank 0) that the others reach; needed with num_machines > 1.
        main_process_port: port on the main machine for the rendezvous; needed with num_machines > 1.
    """

    num_processes: int | None = None
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None


LAUNCH_OPTIONS = tuple(field.name for field in fields(Machines))


def accelerate_config_values(path: str | None) -> dict:
    """The launch options that an accelerate config file sets (those of `Machines`); {} without a file."""
    if path is None:
        return {}
    import yaml

    with open(path) as handle:
        try:
            config = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            raise ValueError(
                f"accelerate config {path!r} is not valid YAML ({type(error).__name__}); fix the file."
            ) from None
    if not isinstance(config, dict):
        raise ValueError(
            f"accelerate config {path!r} does not hold a YAML mapping; start from recipes/accelerate/ddp.yaml."
        )
    values = {name: config[name] for name in LAUNCH_OPTIONS if config.get(name) is not None}
    for name, value in values.items():
        if name != "main_process_ip" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name}: {value!r} in accelerate config {path!r} must be a whole number.")
    return values


def resolve_machines(options: Mapping[str, object], config_path: str | None = None) -> Machines:
    """The launch that `accelerate launch` will make: each option from `options` (the command line) when given,
    else from the accelerate config file at `config_path`, else `Machines`' default."""
    values = accelerate_config_values(config_path)
    values.update({name: value for name, value in options.items() if name in LAUNCH_OPTIONS and value is not None})
    return Machines(**values)


def check_machines(machines: Machines) -> None:
    """Raise a one-line ValueError for a launch of `machines` that cannot rendezvous or divide its processes."""
    n, rank = machines.num_machines, machines.machine_rank
    if n < 1:
        raise ValueError(f"num_machines={n} must be at least 1; use --num_machines 1 for one machine.")
    if not 0 <= rank < n:
        raise ValueError(
            f"machine_rank={rank} is out of range for num_machines={n}: use a rank in [0, {n - 1}], 0 on the main "
            "machine (the one at --main_process_ip) and a different rank on each other machine."
        )
    port = machines.main_process_port
    if port is not None and not 0 <= port <= MAX_PORT:
        raise ValueError(f"main_process_port={port} is not a port; use a free port in [1, {MAX_PORT}], e.g. 29500.")
    if n > 1:
        missing = [f"--{name}" for name in ("main_process_ip", "main_process_port") if getattr(machines, name) is None]
        if missing:
            raise ValueError(
                f"num_machines={n} needs the rendezvous address of the main machine: pass {' and '.join(missing)} "
                "(the same on every machine: the main machine's IP, reachable from the others, and a free port on it)."
            )
        if port == 0:
            raise ValueError(
                f"main_process_port=0 (a free port of each machine's choosing) cannot work with num_machines={n}: "
                "every machine must name the same port; pass a free port of the main machine, e.g. 29500."
            )
    processes = machines.num_processes
    if processes is not None and (processes < n or processes % n):
        raise ValueError(
            f"num_processes={processes} does not divide evenly over num_machines={n}: --num_processes is the total "
            f"over all machines (e.g. {n} machines x 8 GPUs = --num_processes {8 * n}); pass a multiple of {n}."
        )


def accelerate_arguments(options: Mapping[str, object]) -> list[str]:
    """`accelerate launch` arguments for the launch options given on the command line (the others stay unset, so
    that accelerate takes them from its config file)."""
    out: list[str] = []
    for name in LAUNCH_OPTIONS:
        value = options.get(name)
        if value is not None:
            out += [f"--{name}", str(value)]
    return out


# ------------------------------------------------------------------ in the launched script


def _integer(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise LaunchEnvironmentError(
            f"environment variable {name}={value!r} is not an integer; the launcher (torchrun, accelerate launch, "
            "deepspeed) or the cluster script that sets it must give a whole number."
        ) from None


def check_ranks(environ: Mapping[str, str]) -> None:
    """Every rank variable the launcher set lies in [0, its size): RANK < WORLD_SIZE, LOCAL_RANK < LOCAL_WORLD_SIZE,
    the machine's GROUP_RANK / CROSS_RANK < the number of machines."""
    for rank_name, size_name in RANK_VARIABLES:
        rank, size = _integer(environ, rank_name), _integer(environ, size_name)
        if size is not None and size < 1:
            raise LaunchEnvironmentError(f"{size_name}={size} must be at least 1; check the launcher's process counts.")
        if rank is not None and size is not None and not 0 <= rank < size:
            raise LaunchEnvironmentError(
                f"{rank_name}={rank} is out of range for {size_name}={size}: each rank must lie in [0, {size - 1}]; "
                "check the machine rank (--machine_rank / --node_rank, in [0, number of machines)) and process counts "
                "given to the launcher."
            )


def check_rendezvous(environ: Mapping[str, str]) -> None:
    """With WORLD_SIZE > 1, the processes meet at MASTER_ADDR:MASTER_PORT: both must be set, the port a port."""
    world = _integer(environ, "WORLD_SIZE")
    if world is None or world <= 1:
        return
    missing = [name for name in RENDEZVOUS_VARIABLES if not environ.get(name)]
    if missing:
        raise LaunchEnvironmentError(
            f"WORLD_SIZE={world} but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: the "
            "processes cannot find each other. Start the script with a launcher (torchrun --nnodes N --node_rank R "
            "--master_addr H --master_port P, or hf-unlearn train --num_machines N --machine_rank R "
            "--main_process_ip H --main_process_port P), or set MASTER_ADDR to the main machine's address and "
            "MASTER_PORT to a free port on it."
        )
    port = _integer(environ, "MASTER_PORT")
    if not 1 <= port <= MAX_PORT:
        raise LaunchEnvironmentError(
            f"MASTER_PORT={port} is not a port; set a free port of the main machine in [1, {MAX_PORT}]."
        )


def batch_advice(global_batch: int, world: int, per_device: int) -> str:
    """The flags that give `global_batch` at `world` processes (whose count divides it), keeping the per-device
    batch when it divides each process's share, else the largest per-device batch below it that does."""
    share = global_batch // world
    if share % per_device == 0:
        return f"--gradient_accumulation_steps {share // per_device}"
    device = max(d for d in range(1, per_device + 1) if share % d == 0)
    return f"--per_device_train_batch_size {device} --gradient_accumulation_steps {share // device}"


def check_global_batch(global_batch: int | None, world: int, per_device: int, accumulation: int) -> None:
    """A requested global batch (examples per optimizer step over all processes) must equal per-device batch x
    accumulation x world size; the error names the flags that give it at this world size."""
    if global_batch is None:
        return
    if global_batch % world:
        raise ValueError(
            f"global_batch_size={global_batch} is not divisible by the world size {world} (processes over all "
            f"machines): launch a number of processes that divides {global_batch}, or set a global_batch_size that "
            f"is a multiple of {world}."
        )
    actual = per_device * accumulation * world
    if actual != global_batch:
        raise ValueError(
            f"global_batch_size={global_batch} but per_device_train_batch_size {per_device} x "
            f"gradient_accumulation_steps {accumulation} x world size {world} = {actual}: at world size {world} pass "
            f"{batch_advice(global_batch, world, per_device)}."
        )


def check_launch_environment(environ: Mapping[str, str] | None = None) -> None:
    """The script's checks of the launcher's environment (`environ`, default: this process's): the ranks and the
    rendezvous address. Call it before the training arguments are built: they start the process group, which
    with a bad environment hangs or fails far from the cause."""
    environ = os.environ if environ is None else environ
    check_ranks(environ)
    check_rendezvous(environ)
