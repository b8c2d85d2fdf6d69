"""Keeps benchmarks/testbed/ from rotting: build, run_methods and grid in --tiny mode (a ~50k-parameter Llama
pre-trained for three steps on a few stdlib modules; synthetic sizes, never ../shared) must produce their reports.

The pieces that make the testbed an *exact* retrain are checked too: the retrained model's data order is the
original's with the forget chunks deleted, and both models start from the same weights.
"""

from __future__ import annotations

import json
import os
import shutil
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

    # every method run is tuned by default (the same learning rates for each)
    report = run_methods.main(base + ["--methods", "ga", "ga_kl", "--seeds", "1", "--tune-lrs", "2e-4", "5e-4"])
    assert [r["method"] for r in report["methods"]] == ["ga", "ga_kl"]
    for r in report["methods"]:
        assert r["train_tokens"] > 0 and r["flops"] > 0 and 0 <= r["mia_auc"] <= 1
        assert r["kl_to_retrained"]["forget"] >= 0 and r["compute_ratio_flops"] > 0
    assert report["methods"][1]["token_detail"]["reference_on_retain"] > 0
    assert json.loads(open(os.path.join(out, "methods.json")).read())["machine"]["cpu_count"]
    assert "## Verdict" in open(os.path.join(out, "methods.md")).read()
    assert os.path.getsize(os.path.join(out, "methods.png")) > 1000
    assert report["floor"]["kl_forget"] >= 0 and report["floor"]["run"]["seed"] == 1  # the second retrained model
    assert set(report["tuning"]) == {"ga", "ga_kl"}
    for method, pick in report["tuning"].items():
        assert [g["learning_rate"] for g in pick["grid"]] == [2e-4, 5e-4], method
        tuned = f"{method} (tuned lr {pick['learning_rate']:g})"
        assert (tuned in report["summary"]) == (pick["learning_rate"] != 2e-4), method
    assert {"ga (default)", "ga_kl (default)"} <= set(report["summary"]) and set(report["skipped"]) == {
        "idk",
        "idk_dpo",
    }
    # a method added to that report: its runs kept for ga and ga_kl, ga_descent run now, the methods in registry order
    earlier = os.path.join(str(tmp_path), "earlier.json")
    shutil.copy(os.path.join(out, "methods.json"), earlier)
    grid_args = ["--seeds", "1", "--tune-lrs", "2e-4", "5e-4", "--add-to", earlier]
    merged = run_methods.main(base + ["--methods", "ga_descent", *grid_args])
    assert [r["method"] for r in merged["methods"]] == ["ga", "ga_descent", "ga_kl"]
    assert set(merged["tuning"]) == {"ga", "ga_descent", "ga_kl"}
    kept = {tuple(r["key"]): r["mia_auc"] for r in report["runs"]}
    assert {tuple(r["key"]): r["mia_auc"] for r in merged["runs"] if r["method"] != "ga_descent"} == kept
    assert merged["command"].endswith("(the earlier runs kept for the others)")
    with pytest.raises(SystemExit):  # another protocol: its runs cannot be merged
        run_methods.main(base + ["--methods", "ga_descent", "--seeds", "2", "--add-to", earlier])
    with pytest.raises(SystemExit):  # a set value is part of the protocol too
        run_methods.main(base + ["--methods", "ga_descent", *grid_args, "--set", "forget_weight=0.5"])

    # --set: a config value beyond the presets', applied to every run and reported; a field a method lacks: an error
    tail = run_methods.main(
        base
        + ["--methods", "unseen_match_tail", "--seeds", "1", "--tune", "--no-floor", "--set", "unseen_match_tail_k=0.3"]
    )
    assert tail["settings"]["set"] == {"unseen_match_tail_k": 0.3}
    assert "unseen_match_tail_k 0.3" in open(os.path.join(out, "methods.md")).read()
    with pytest.raises(SystemExit):
        run_methods.main(base + ["--methods", "ga", "--seeds", "1", "--set", "unseen_match_tail_k=0.3"])

    # another retain weight than the presets' is applied and reported
    weighted = run_methods.main(
        base + ["--methods", "ga_kl", "--seeds", "1", "--tune", "--no-floor", "--retain-weight", "3"]
    )
    assert weighted["methods"][0]["retain_weight"] == 3.0 and weighted["settings"]["retain_weight"] == 3.0
    assert "defaults but retain weight 3," in open(os.path.join(out, "methods.md")).read()

    report = grid.main(base + ["--methods", "ga"])
    assert len(report["cells"]) == 4 and 0 <= report["share_in_band"]["ga"] <= 1
    assert os.path.getsize(os.path.join(out, "grid_ga.png")) > 1000
    assert "Share of the grid inside the band" in open(os.path.join(out, "grid.md")).read()


@pytest.fixture(scope="module")
def sequential_modules():
    sys.path.insert(0, TESTBED)
    try:
        import common
        import scaling
        import sequential

        yield common, sequential, scaling
    finally:
        sys.path.remove(TESTBED)


def test_partial_retrain_order(sequential_modules):
    """A model retrained without some forget documents reads the original stream minus exactly their chunks."""
    import dataclasses

    import datasets

    common = sequential_modules[0]
    docs = ["a", "b", "c", "code"]
    train = datasets.Dataset.from_dict(
        {"is_forget": [i % 4 != 3 for i in range(24)], "doc": [docs[i % 4] for i in range(24)]}
    )
    config = dataclasses.replace(common.TINY, epochs=2)
    original = common.stream_order(train, config, drop_forget=False)
    partial = common.stream_order(train, config, drop_forget=True, dropped_docs=("a", "c"))
    assert partial == [i for i in original if i % 4 not in (0, 2)]
    assert common.stream_order(train, config, drop_forget=True, dropped_docs=docs[:3]) == common.stream_order(
        train, config, drop_forget=True
    )


def test_requests_and_nested_stages(sequential_modules):
    """Requests are disjoint, of equal size, in the forget documents' order; the stages nest."""
    from types import SimpleNamespace

    sequential = sequential_modules[1]
    docs = [f"m{i}" for i in range(9)]  # 9 = 4 x 2 + 1: the remainder stays out of every request
    requests = sequential.requests_of(SimpleNamespace(meta={"documents": {"forget": docs}}))
    assert requests == [docs[0:2], docs[2:4], docs[4:6], docs[6:8]]
    stages = sequential.stages_of(requests)
    assert list(stages) == ["half1", "r1", "r12", "r123", "r1234"]
    names = list(stages.values())
    assert all(set(a) < set(b) for a, b in zip(names, names[1:])) and stages["r1234"] == docs[:8]
    with pytest.raises(ValueError, match="at least 8"):
        sequential.requests_of(SimpleNamespace(meta={"documents": {"forget": docs[:7]}}))


@pytest.mark.slow
def test_sequential_and_scaling_tiny(sequential_modules, tmp_path, monkeypatch):
    common, sequential, scaling = sequential_modules
    monkeypatch.setattr(common, "DEFAULT_DATA_DIR", str(tmp_path / "no_shared_data"))  # tiny mode must not read it
    cache, out = str(tmp_path / "cache"), str(tmp_path / "results")
    base = ["--tiny", "--cache-dir", cache, "--out-dir", out, "--jobs", "1", "--threads", "1"]
    base += ["--data-dir", str(tmp_path / "none")]

    reports = sequential.main(base + ["--methods", "ga_descent", "npo", "--with-scaling"])
    seq = reports["sequential"]
    root = os.path.join(cache, "testbed", seq["testbed"]["version"])
    assert sorted(os.listdir(root)) == sorted(
        ["extra_splits", "last_sequential_results.json", "meta.json", "original", "retrained", "splits", "tokenizer"]
        + ["train_chunks"]
        + [f"retrained_without_{n}" for n in ("half1", "r1", "r12", "r123")]
    )
    assert [c["method"] for c in seq["sequential"]] == ["ga_descent", "npo"]
    for chain in seq["sequential"]:
        assert [s["request"] for s in chain["steps"]] == [1, 2, 3, 4]
        assert [s["stage"] for s in chain["steps"]] == ["r1", "r12", "r123", "r1234"]
        assert [len(s["earlier"]) for s in chain["steps"]] == [0, 1, 2, 3]
        flops = [s["cumulative_flops"] for s in chain["steps"]]
        assert all(a < b for a, b in zip(flops, flops[1:]))
        for s in chain["steps"]:
            assert s["kl_forget"] >= 0 and s["retrain_each_over_unlearn"] >= s["retrain_over_unlearn"] > 0
    # forget chunks of stage r1..k: the sum of requests 1..k
    sizes = [seq["stages"][f"r{''.join(str(i) for i in range(1, k + 1))}"]["chunks"] for k in range(1, 5)]
    assert [s["forget_chunks"] for s in seq["sequential"][0]["steps"]] == [sizes[0]] + [
        b - a for a, b in zip(sizes, sizes[1:])
    ]
    assert sorted((b["method"], b["requests"]) for b in seq["batched"]) == [
        ("ga_descent", 2),
        ("ga_descent", 4),
        ("npo", 2),
        ("npo", 4),
    ]
    assert "## Earlier requests after later ones" in open(os.path.join(out, "sequential.md")).read()
    assert os.path.getsize(os.path.join(out, "sequential.png")) > 1000
    assert [r["stage"] for r in reports["scaling"]["runs"]] == ["half1", "r1", "r12", "r1234"] * 2

    # the reports from the kept run: its results, date, command and settings, whatever this call's flags say
    again = sequential.main(base + ["--methods", "ga_descent", "--reuse-results"])["sequential"]
    assert again["sequential"] == json.loads(json.dumps(seq["sequential"], default=float))
    assert (again["date"], again["command"], again["settings"]) == (seq["date"], seq["command"], seq["settings"])

    report = scaling.main(base + ["--methods", "ga_descent"])["scaling"]  # the same build, from the cache
    assert [r["stage"] for r in report["runs"]] == ["half1", "r1", "r12", "r1234"]
    shares = [r["share"] for r in report["runs"]]
    assert all(a < b for a, b in zip(shares, shares[1:]))
    assert json.loads(open(os.path.join(out, "scaling.json")).read())["settings"]["methods"] == ["ga_descent"]
    assert os.path.getsize(os.path.join(out, "scaling.png")) > 1000
