"""What unlearning runs leave on disk that can hold forget-derived data, and its removal (`hf-unlearn traces`).

    hf-unlearn traces                              list hf_unlearn's cache entries of precomputed per-example values
    hf-unlearn traces --output_dir outputs/run     ... and the run's checkpoints, TensorBoard logs, best/ model
    hf-unlearn traces --output_dir outputs/run --remove     delete exactly what is listed, and say what was removed

Listed (and only these are ever removed):

- in `--output_dir`: `checkpoint-*` (partly unlearned models, optimizer states), `runs/` (TensorBoard logs),
  `best/` (the evaluation selected by `save_best`), and `_push-staging-*` (a push interrupted before clean-up);
- in hf_unlearn's cache (`--cache_dir`, else `$HF_UNLEARN_CACHE`, else `~/.cache/hf_unlearn`): the entries of
  `precomputed/` (per-example targets of methods such as `adversarial`, keyed by the forget tokens) and of the
  older `adversarial/` folder.

Not listed: the unlearned model itself in `--output_dir` (the result), the demo's converted model in the cache,
and the Hugging Face `datasets` cache, which hf_unlearn does not write for local files (Hub datasets loaded by
id are kept there by `datasets`; `hf cache` manages them).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import sys
from dataclasses import dataclass

OUTPUT_PATTERNS = {
    "checkpoint-*": "checkpoint (partly unlearned model and optimizer state)",
    "runs": "TensorBoard logs",
    "best": "best evaluation's model (save_best)",
    "_push-staging-*": "files staged for an interrupted push",
}
CACHE_FOLDERS = {"precomputed": "precomputed per-example values", "adversarial": "adversarial targets (older runs)"}


@dataclass
class Trace:
    path: str
    kind: str
    size: int


def _size(path: str) -> int:
    if os.path.islink(path) or os.path.isfile(path):
        return os.lstat(path).st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def find_traces(output_dir: str | None = None, cache_dir: str | None = None) -> list[Trace]:
    """Every path a run may have left that can hold forget-derived data (see the module docstring)."""
    from .config import default_cache_dir

    traces = []
    if output_dir is not None:
        if not os.path.isdir(output_dir):
            raise FileNotFoundError(f"--output_dir {output_dir!r} is not a folder; pass the output_dir of a run.")
        for name in sorted(os.listdir(output_dir)):
            for pattern, kind in OUTPUT_PATTERNS.items():
                if fnmatch.fnmatch(name, pattern):
                    path = os.path.join(output_dir, name)
                    traces.append(Trace(path, kind, _size(path)))
                    break
    cache = default_cache_dir(cache_dir)
    for folder, kind in CACHE_FOLDERS.items():
        root = os.path.join(cache, folder)
        if os.path.isdir(root) and not os.path.islink(root):
            for name in sorted(os.listdir(root)):
                path = os.path.join(root, name)
                traces.append(Trace(path, kind, _size(path)))
    return traces


def remove_trace(trace: Trace, allowed_roots: list[str]) -> None:
    """Delete one listed path, after checking it lies directly in one of `allowed_roots` (never follows links)."""
    parent = os.path.realpath(os.path.dirname(os.path.abspath(trace.path)))
    if parent not in {os.path.realpath(root) for root in allowed_roots}:
        raise ValueError(f"Refusing to remove {trace.path!r}: it is not inside a folder that traces lists.")
    if os.path.islink(trace.path) or not os.path.isdir(trace.path):
        os.unlink(trace.path)
    else:
        shutil.rmtree(trace.path)


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hf-unlearn traces", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", help="output_dir of a run: list its checkpoints, TensorBoard logs and best/")
    parser.add_argument("--cache_dir", help="hf_unlearn's cache (default: $HF_UNLEARN_CACHE or ~/.cache/hf_unlearn)")
    parser.add_argument("--remove", action="store_true", help="delete everything listed, and print each removed path")
    options = parser.parse_args(argv)
    from .config import default_cache_dir

    try:
        traces = find_traces(options.output_dir, options.cache_dir)
    except FileNotFoundError as error:
        print(f"hf-unlearn traces: {error}", file=sys.stderr)
        return 2
    if not traces:
        where = f"{options.output_dir!r} and " if options.output_dir else ""
        print(f"No traces found in {where}{default_cache_dir(options.cache_dir)!r}.")
        return 0
    if not options.remove:
        for trace in traces:
            print(f"{_human(trace.size):>9}  {trace.path}  ({trace.kind})")
        print(f"{len(traces)} trace(s); `hf-unlearn traces {_flags(options)}--remove` deletes them.")
        return 0
    cache = default_cache_dir(options.cache_dir)
    roots = [os.path.join(cache, folder) for folder in CACHE_FOLDERS]
    if options.output_dir:
        roots.append(options.output_dir)
    for trace in traces:
        remove_trace(trace, roots)
        print(f"removed {trace.path}  ({trace.kind}, {_human(trace.size)})")
    print(f"Removed {len(traces)} trace(s).")
    return 0


def _flags(options) -> str:
    out = ""
    if options.output_dir:
        out += f"--output_dir {options.output_dir} "
    if options.cache_dir:
        out += f"--cache_dir {options.cache_dir} "
    return out


if __name__ == "__main__":
    sys.exit(main())
