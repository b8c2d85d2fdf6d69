"""The README's main-job table is what the main job prints.

Runs the real embedded default job (SmolLM2-135M-Instruct from PyPI, converted once into the hf_unlearn cache; ~2
min on 2 cores after that), so it is marked `demo` and is not part of CI: run it with `pytest -m demo`. The job is
deterministic on a given machine (seeded data selection, frozen non-member snapshot, fp32 on CPU); another CPU's
kernels could change the last printed digit.
"""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_table() -> list[str]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    block = re.search(r"```\n( +before +after\n.*?)\n\n", text, re.S)
    assert block, "the README has no main-job table"
    return block.group(1).splitlines()


@pytest.mark.demo
def test_readme_table_is_the_main_jobs_output(tmp_path, capsys):
    from hf_unlearn.scripts.unlearn import main

    main(["--output_dir", str(tmp_path / "demo")])
    printed = capsys.readouterr().out.splitlines()
    table = readme_table()
    assert table[0].split() == ["before", "after"]
    start = next(i for i, line in enumerate(printed) if line.split() == ["before", "after"])
    assert printed[start : start + len(table)] == table
