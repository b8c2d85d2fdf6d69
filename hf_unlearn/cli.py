"""`hf-unlearn`: a small command line in the manner of the `trl` CLI.

    hf-unlearn methods                                   list the registered methods
    hf-unlearn train --config my.yaml                    run hf_unlearn.scripts.unlearn (in this process)
    hf-unlearn train --accelerate_config zero3 --num_processes 8 --config ...
                                                         the same under `accelerate launch -m`
    hf-unlearn train --accelerate_config ddp --num_processes 16 --num_machines 2 --machine_rank R \\
        --main_process_ip HOST --main_process_port PORT --config ...
                                                         one of 2 machines (R = 0, 1), run on each
    hf-unlearn eval ...                                  run hf_unlearn.scripts.evaluate
    hf-unlearn tune [--config my.yaml] [--tune_* ...]    pick learning rate and steps (hf_unlearn.scripts.tune)
    hf-unlearn traces [--output_dir DIR] [--remove]      list (or remove) what runs left that can hold forget data
    hf-unlearn accelerate-configs                        list the bundled accelerate configs

Everything after `train` / `eval` (except the launcher options, accelerate's names) goes to the script unchanged;
`hf-unlearn train --help` lists the script's options (`--method NAME --help`: with that method's fields). The
scripts ship inside the package (`hf_unlearn.scripts`), so they work from any folder after `pip install`. The
accelerate configs are in the repository's `recipes/accelerate/` (a clone); elsewhere pass a file path.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys

from .launch import accelerate_arguments, check_machines, resolve_machines

EXIT_USER_ERROR = 2  # as the scripts' own argument errors
RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
SCRIPTS = {"train": "hf_unlearn.scripts.unlearn", "eval": "hf_unlearn.scripts.evaluate"}
COMMANDS = ("methods", "train", "eval", "tune", "traces", "accelerate-configs")


def accelerate_configs() -> dict[str, str]:
    """Bundled accelerate configs by name (file name without .yaml), from a repository clone's recipes/."""
    folder = os.path.join(RECIPES, "accelerate")
    if not os.path.isdir(folder):
        return {}
    return {
        name[: -len(".yaml")]: os.path.join(folder, name)
        for name in sorted(os.listdir(folder))
        if name.endswith(".yaml")
    }


def resolve_accelerate_config(name_or_path: str) -> str:
    if os.path.isfile(name_or_path):
        return name_or_path
    configs = accelerate_configs()
    if name_or_path not in configs:
        raise SystemExit(
            f"hf-unlearn: unknown accelerate config {name_or_path!r}; use a file path or one of: "
            f"{', '.join(configs) or '(none: the bundled configs are in a clone of the repository, recipes/accelerate)'}."
        )
    return configs[name_or_path]


def list_methods_table() -> str:
    from . import get_method, list_methods
    from .plan import run_plan

    lines = [f"{'name':<14} {'forget_loss':<13} {'retain_loss':<12} {'reference':<10} paper name"]
    for name in list_methods():
        cls = get_method(name)
        plan = run_plan(None, cls)  # with the method's default arguments
        lines.append(f"{name:<14} {plan.forget_loss:<13} {plan.retain_loss:<12} {plan.reference:<10} {cls.paper_name}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-unlearn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=COMMANDS)
    return parser


class _LauncherParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"hf-unlearn: error: {message}; `hf-unlearn {self.prog.split()[-1]} --help` lists the options.\n")


def _launcher_parser(command: str) -> argparse.ArgumentParser:
    parser = _LauncherParser(prog=f"hf-unlearn {command}", add_help=False)
    parser.add_argument("--accelerate_config", help="bundled accelerate config name (see accelerate-configs) or a path")
    parser.add_argument("--num_processes", type=int, help="processes for accelerate launch, over all machines")
    parser.add_argument("--num_machines", type=int, help="machines of the launch (run the command on each)")
    parser.add_argument("--machine_rank", type=int, help="this machine's rank in [0, num_machines); 0: the main one")
    parser.add_argument("--main_process_ip", help="address of the main machine (rank 0), the same on every machine")
    parser.add_argument("--main_process_port", type=int, help="free port on the main machine, the same on every one")
    return parser


def run_script(command: str, argv: list[str]) -> int:
    """Run `hf-unlearn train|eval` in this process (its exit status: 0, or the script's SystemExit code)."""
    launcher = _launcher_parser(command)
    known, rest = launcher.parse_known_args(argv)
    help_asked = any(arg in ("-h", "--help") for arg in rest)
    if help_asked:
        print(
            f"usage: hf-unlearn {command} [--accelerate_config NAME_OR_PATH] [--num_processes N] [--num_machines N "
            "--machine_rank R --main_process_ip HOST --main_process_port PORT] [script options]\n"
        )
        options_help = launcher.format_help().split("options:\n", 1)[1]  # without argparse's usage lines
        print(f"Launcher options (passed to accelerate launch):\n{options_help}")
        print(f"Script options ({SCRIPTS[command]}):")
        sys.stdout.flush()
    module = SCRIPTS[command]
    options = {name: value for name, value in vars(known).items() if name != "accelerate_config"}
    launched = known.accelerate_config is not None or any(value is not None for value in options.values())
    if help_asked or not launched:  # the script's own help lists its options
        return run_in_process(importlib.import_module(module).main, rest)
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    config = None if known.accelerate_config is None else resolve_accelerate_config(known.accelerate_config)
    try:
        check_machines(resolve_machines(options, config))
    except ValueError as error:
        print(f"hf-unlearn: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    if config is not None:
        launch += ["--config_file", config]
    return subprocess.call(launch + accelerate_arguments(options) + ["-m", module] + rest)


def run_in_process(script_main, argv: list[str]) -> int:
    """Call a script's `main(argv)` here; its exit status (0, or its SystemExit code)."""
    try:
        script_main(argv)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _parser().parse_args(argv[:1] or ["--help"])  # prints the help (exit 0) or the choices (exit 2)
        return 2
    command, rest = argv[0], argv[1:]
    if command in SCRIPTS:
        return run_script(command, rest)
    if command == "tune":  # one process: no launcher options
        from .scripts.tune import main as tune_main

        return run_in_process(tune_main, rest)
    if command == "traces":
        from .traces import main as traces_main

        return traces_main(rest)
    descriptions = {
        "methods": "List the registered unlearning methods.",
        "accelerate-configs": "List the bundled accelerate configs.",
    }
    argparse.ArgumentParser(prog=f"hf-unlearn {command}", description=descriptions[command]).parse_args(rest)
    if command == "methods":
        print(list_methods_table())
        return 0
    for name, path in accelerate_configs().items():  # accelerate-configs
        print(f"{name:<16} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
