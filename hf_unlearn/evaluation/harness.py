"""Downstream utility through lm-evaluation-harness (`lm-eval`), on a model already in memory.

`run_lm_eval` wraps the model with `lm_eval.models.huggingface.HFLM(pretrained=model, tokenizer=tokenizer)` and
calls `lm_eval.simple_evaluate`. Tasks are either

- paths to local task YAML files (offline; `dataset_kwargs.data_files` may be relative to the YAML file, see
  `tasks/general_facts.yaml`, the example shipped here), or
- names of lm-eval's built-in tasks (`"hellaswag"`, `"arc_easy"`, ...), whose data comes from the Hugging Face
  Hub and so needs it to be reachable.

lm-eval is an optional dependency (`pip install lm-eval`, or the `eval` extra); it is imported here only. It runs
in one process on a full (not ZeRO-3-partitioned) model: evaluate the saved checkpoint after training, on the
main process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TASKS_DIR = Path(__file__).parent / "tasks"
EXAMPLE_TASK = str(TASKS_DIR / "general_facts.yaml")


def _resolve_data_files(data_files: Any, base: Path) -> Any:
    """Make relative local data file paths in a task config absolute (relative to the YAML's folder)."""
    if isinstance(data_files, str):
        candidate = base / data_files
        return str(candidate) if not os.path.isabs(data_files) and candidate.exists() else data_files
    if isinstance(data_files, dict):
        return {split: _resolve_data_files(value, base) for split, value in data_files.items()}
    if isinstance(data_files, list):
        return [_resolve_data_files(value, base) for value in data_files]
    return data_files


def local_task_config(path: str | os.PathLike) -> dict[str, Any]:
    """A local task YAML as an lm-eval config dict, its relative `data_files` resolved against its folder."""
    from lm_eval.tasks._yaml_loader import load_yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"lm-eval task file {str(path)!r} does not exist; pass an existing YAML or a task name."
        )
    config = load_yaml(path, resolve_func=True)
    kwargs = config.get("dataset_kwargs") or {}
    if "data_files" in kwargs:
        config["dataset_kwargs"] = {**kwargs, "data_files": _resolve_data_files(kwargs["data_files"], path.parent)}
    return config


def _is_task_file(task: str) -> bool:
    return task.endswith((".yaml", ".yml"))


def run_lm_eval(
    model,
    tokenizer,
    tasks: Sequence[str],
    batch_size: int = 8,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    include_path: str | None = None,
    **simple_evaluate_kwargs,
) -> dict[str, dict[str, float]]:
    """Evaluate an in-memory causal LM on lm-eval tasks.

    Args:
        model: a `PreTrainedModel` (unwrapped, full weights, in eval mode or not: lm-eval sets eval mode).
        tokenizer: its tokenizer.
        tasks: local task YAML paths and/or lm-eval task names (names need the Hub for their data).
        limit: at most this many documents per task (quick checks).
        include_path: an extra folder of task YAMLs whose tasks can then be named.
        simple_evaluate_kwargs: passed on to `lm_eval.simple_evaluate` (e.g. `apply_chat_template=True`).

    Returns:
        `{task: {metric: value}}` with lm-eval's metric names (e.g. "acc,none"); non-numeric entries dropped.
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as error:
        raise ImportError(
            "run_lm_eval needs lm-evaluation-harness: `pip install lm-eval` (or hf_unlearn[eval])."
        ) from error

    if not tasks:
        raise ValueError("No lm-eval task given; pass task YAML paths or task names (e.g. 'arc_easy').")
    specs = [local_task_config(task) if _is_task_file(task) else task for task in tasks]
    needs_registry = any(
        isinstance(spec, str) for spec in specs
    )  # indexing lm-eval's ~10k built-in YAMLs takes seconds
    task_manager = TaskManager(include_path=include_path, include_defaults=needs_registry)
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    output = lm_eval.simple_evaluate(
        model=wrapped,
        tasks=specs,
        task_manager=task_manager,
        limit=limit,
        num_fewshot=num_fewshot,
        log_samples=False,
        bootstrap_iters=simple_evaluate_kwargs.pop("bootstrap_iters", 0),
        **simple_evaluate_kwargs,
    )

    def numeric(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    return {
        task: {name: float(value) for name, value in metrics.items() if numeric(value)}
        for task, metrics in output["results"].items()
    }
