"""`hf-unlearn`: a small command line in the manner of the `trl` CLI.

    hf-unlearn methods                                   list the registered methods
    hf-unlearn train --config recipes/configs/x.yaml     run recipes/unlearn.py (in this process)
    hf-unlearn train --accelerate_config zero3 --num_processes 8 --config ...
                                                         the same under `accelerate launch` with a bundled config
    hf-unlearn eval ...                                  run recipes/evaluate.py

Everything after the sub-command (except the two launcher options) goes to the recipe unchanged. The recipes and
the bundled accelerate configs live in the repository's `recipes/` folder, so install hf_unlearn from a clone
(`pip install -e .`) to use `train` and `eval`.
"""

from __future__ import annotations

import argparse
import os
import runpy
import subprocess
import sys

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
SCRIPTS = {"train": "unlearn.py", "eval": "evaluate.py"}


def accelerate_configs() -> dict[str, str]:
    """Bundled accelerate configs by name (file name without .yaml)."""
    folder = os.path.join(RECIPES, "accelerate")
    if not os.path.isdir(folder):
        return {}
    return {name[: -len(".yaml")]: os.path.join(folder, name) for name in sorted(os.listdir(folder)) if name.endswith(".yaml")}


def resolve_accelerate_config(name_or_path: str) -> str:
    if os.path.isfile(name_or_path):
        return name_or_path
    configs = accelerate_configs()
    if name_or_path not in configs:
        raise SystemExit(
            f"hf-unlearn: unknown accelerate config {name_or_path!r}; use a file path or one of: "
            f"{', '.join(configs) or '(none found in ' + RECIPES + ')'}."
        )
    return configs[name_or_path]


def recipe_path(command: str) -> str:
    path = os.path.join(RECIPES, SCRIPTS[command])
    if not os.path.isfile(path):
        raise SystemExit(
            f"hf-unlearn: {path} not found. The recipes ship with the repository: clone it and `pip install -e .`."
        )
    return path


def list_methods_table() -> str:
    from . import get_method, list_methods

    lines = [f"{'name':<14} {'retain':<7} {'reference':<10} paper name"]
    for name in list_methods():
        cls = get_method(name)
        reference = "yes" if cls.needs_reference else ("once" if name == "adversarial" else "no")
        lines.append(f"{name:<14} {'yes' if cls.needs_retain else 'no':<7} {reference:<10} {cls.paper_name}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="hf-unlearn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["methods", "train", "eval", "accelerate-configs"])
    parser.add_argument("--accelerate_config", help="bundled accelerate config name (see accelerate-configs) or a path")
    parser.add_argument("--num_processes", type=int, help="processes for accelerate launch")
    known, rest = parser.parse_known_args(argv)

    if known.command == "methods":
        print(list_methods_table())
        return 0
    if known.command == "accelerate-configs":
        for name, path in accelerate_configs().items():
            print(f"{name:<16} {path}")
        return 0

    script = recipe_path(known.command)
    if known.accelerate_config is None and known.num_processes is None:
        namespace = runpy.run_path(script, run_name="hf_unlearn_cli")
        namespace["main"](rest)
        return 0
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    if known.accelerate_config is not None:
        launch += ["--config_file", resolve_accelerate_config(known.accelerate_config)]
    if known.num_processes is not None:
        launch += ["--num_processes", str(known.num_processes)]
    return subprocess.call(launch + [script] + rest)


if __name__ == "__main__":
    sys.exit(main())
