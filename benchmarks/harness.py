"""What every benchmark script shares: the machine it ran on, when and how it was started, report files written
atomically, number and table formatting, and which registered methods run on document data.

Importable as `benchmarks.harness` from the repository root; the scripts, run as files, put the repository root on
`sys.path` first (each does so in its header), then `from benchmarks import harness`.

Method classes
    A method is question/answer-only when one of its objectives builds aligned streams (`Objective.aligned`, e.g.
    the refusal answers of "idk" and "idk_dpo"): those streams answer each forget example's prompt, so the forget
    set must be prompt/answer records. Every other method also runs on document chunks. The classification reads
    the registry (`hf_unlearn.list_methods()`, `hf_unlearn.run_plan`) each time it is asked, so a method
    registered by outside code is classified like a built-in one.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ============================================================================ machine


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (`platform.processor()` where that file is missing)."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpus_available() -> int | None:
    """CPUs this process may run on (its affinity mask; None where the platform does not expose it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return None


def load_average() -> list[float] | None:
    """The 1 / 5 / 15-minute load averages (None where the platform has none)."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def gpu_name() -> str | None:
    """The first CUDA device's name; None without one."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def git_state() -> tuple[str | None, bool | None]:
    """(commit, whether the work tree has changes) of the repository; (None, None) without git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout)
    except OSError:
        return None, None
    return commit or None, dirty


def machine_info() -> dict[str, Any]:
    """The machine and software a result was measured on. Keys: cpu_model, cpu_count, cpus_available,
    load_average (1/5/15 min, now), platform, python, torch, transformers, gpu (None without CUDA)."""
    import torch
    import transformers

    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": cpus_available(),
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": gpu_name(),
    }


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def command_line(script: str | None = None, argv: list[str] | None = None) -> str:
    """The command that reproduces this run from the repository root: `python <script> <arguments>`, shell-quoted.

    Args:
        script: the script's path (default `sys.argv[0]`), shown relative to the repository root.
        argv: its arguments (default `sys.argv[1:]`; pass a `main(argv)`'s own list when called in-process).
    """
    script = script if script is not None else (sys.argv[0] if sys.argv else "")
    arguments = sys.argv[1:] if argv is None else list(argv)
    shown = os.path.relpath(os.path.abspath(script), REPO) if script else ""
    return " ".join(shlex.quote(a) for a in ["python", shown, *arguments] if a)


# ============================================================================ files


def _write_atomic(path: str, write) -> None:
    """Run `write(handle)` on a temporary file beside `path`, then move it onto `path`; on any error the temporary
    file is removed and `path` is left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "x") as handle:
            write(handle)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def write_json(path: str, payload: Any) -> None:
    """Write `payload` to `path` as indented JSON, atomically (numbers JSON lacks, e.g. numpy scalars, as floats)."""
    _write_atomic(path, lambda handle: json.dump(payload, handle, indent=1, default=float))


def write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically."""
    _write_atomic(path, lambda handle: handle.write(text))


def write_report(out_dir: str, stem: str, payload: Any, markdown: str) -> tuple[str, str]:
    """Write `<out_dir>/<stem>.json` (the payload) and `<out_dir>/<stem>.md` (the Markdown), each atomically;
    returns their paths."""
    json_path, md_path = os.path.join(out_dir, f"{stem}.json"), os.path.join(out_dir, f"{stem}.md")
    write_json(json_path, payload)
    write_text(md_path, markdown)
    return json_path, md_path


# ============================================================================ formatting


def fmt(value: Any, digits: int = 3, large: float = 1e5) -> str:
    """A table cell: "-" for None, floats with `digits` decimals (scientific notation from `large` up and below
    1e-3, zero excepted), anything else as `str`."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= large or abs(value) < 1e-3):
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; cells go through `fmt` (strings unchanged)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ============================================================================ methods


def aligned_objectives(method: str) -> list[type]:
    """The objectives of registered method `method` that build aligned streams (see the module docstring)."""
    from hf_unlearn import get_method, run_plan

    return [o for o in run_plan(None, get_method(method)).objectives if o.aligned]


def qa_methods() -> list[str]:
    """Registered methods that need question/answer data (`hf_unlearn.list_methods()` order)."""
    from hf_unlearn import list_methods

    return [m for m in list_methods() if aligned_objectives(m)]


def document_methods() -> list[str]:
    """Registered methods that also run on document data (`hf_unlearn.list_methods()` order)."""
    from hf_unlearn import list_methods

    return [m for m in list_methods() if not aligned_objectives(m)]


def qa_reason(method: str) -> str:
    """Why question/answer-only method `method` cannot run on document data, one clause starting "needs"."""
    built = "; ".join(
        f"its {o.name!r} objective builds the {', '.join(repr(s) for s in o.aligned)} stream from the forget prompts"
        for o in aligned_objectives(method)
    )
    return f"needs question/answer data: {built}, and document chunks have no prompt"


def skipped_on_documents() -> dict[str, str]:
    """{method: `qa_reason`} for every question/answer-only registered method."""
    return {m: qa_reason(m) for m in qa_methods()}
