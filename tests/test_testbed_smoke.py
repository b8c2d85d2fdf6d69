"""Keeps benchmarks/testbed/ from rotting: build, run_methods and grid in --tiny mode (a ~50k-parameter Llama
pre-trained for three steps on a few stdlib modules; synthetic sizes, never ../shared) must produce their reports.

The pieces that make the testbed an *exact* retrain are checked too: the retrained model's data order is the
original's with the forget chunks deleted, and both models start from the same weights.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTBED = os.path.join(REPO, "benchmarks", "testbed")


@pytest.fixture(scope="module")
def testbed_modules():
    sys.path.insert(0, TESTBED)
    try:
        import build
        import common
        import grid
        import run_methods

        yield common, build, run_methods, grid
    finally:
        sys.path.remove(TESTBED)


def test_same_recipe_order(testbed_modules):
    """The retrained stream is the original stream minus the forget chunks, epoch by epoch."""
    import dataclasses

    import datasets

    common = testbed_modules[0]
    train = datasets.Dataset.from_dict({"is_forget": [i % 5 == 0 for i in range(23)]})
    config = dataclasses.replace(common.TINY, epochs=3)
    original = common.stream_order(train, config, drop_forget=False)
    retrained = common.stream_order(train, config, drop_forget=True)
    assert len(original) == 3 * 23 and len(retrained) == 3 * (23 - 5)
    assert retrained == [i for i in original if i % 5 != 0]
    assert original[:23] != original[23:46]  # a new permutation every epoch


@pytest.mark.slow
def test_testbed_tiny_pipeline(testbed_modules, tmp_path, monkeypatch):
    common, build, run_methods, grid = testbed_modules
    monkeypatch.setattr(common, "DEFAULT_DATA_DIR", str(tmp_path / "no_shared_data"))  # tiny mode must not read it
    cache, out = str(tmp_path / "cache"), str(tmp_path / "results")
    base = [
        "--tiny",
        "--cache-dir",
        cache,
        "--out-dir",
        out,
        "--jobs",
        "1",
        "--threads",
        "1",
        "--data-dir",
        str(tmp_path / "none"),
    ]

    meta = build.main(base)
    assert meta["runs"]["original"]["optimizer_steps"] == meta["runs"]["retrained"]["optimizer_steps"] == 3
    assert meta["forget_chunks_in_training"] == meta["splits"]["forget"] > 0
    root = os.path.join(cache, "testbed", meta["version"])
    assert os.path.exists(os.path.join(root, "original", "config.json"))
    assert build.main(base)["built"] == meta["built"]  # second call: from the cache

    report = run_methods.main(base + ["--methods", "ga", "ga_kl", "--seeds", "1", "--tune"])
    assert [r["method"] for r in report["methods"]] == ["ga", "ga_kl"]
    for r in report["methods"]:
        assert r["train_tokens"] > 0 and r["flops"] > 0 and 0 <= r["mia_auc"] <= 1
        assert r["kl_to_retrained"]["forget"] >= 0 and r["compute_ratio_flops"] > 0
    assert report["methods"][1]["token_detail"]["reference_on_retain"] > 0
    assert json.loads(open(os.path.join(out, "methods.json")).read())["machine"]["cpu_count"]
    assert "## Verdict" in open(os.path.join(out, "methods.md")).read()
    assert os.path.getsize(os.path.join(out, "methods.png")) > 1000
    assert report["floor"]["kl_forget"] >= 0 and report["floor"]["run"]["seed"] == 1  # the second retrained model
    assert set(report["summary"]) == {"ga (default)", "ga_kl (default)"} and set(report["skipped"]) == {
        "idk",
        "idk_dpo",
    }

    report = grid.main(base + ["--methods", "ga"])
    assert len(report["cells"]) == 4 and 0 <= report["share_in_band"]["ga"] <= 1
    assert os.path.getsize(os.path.join(out, "grid_ga.png")) > 1000
    assert "Share of the grid inside the band" in open(os.path.join(out, "grid.md")).read()
