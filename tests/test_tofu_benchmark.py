"""The TOFU benchmark (benchmarks/tofu/run.py) at its tiny size, end to end, and its protocol invariants; extraction
strength by hand."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from hf_unlearn import list_methods
from hf_unlearn.evaluation.tofu import extraction_strength_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "benchmarks", "tofu", "run.py")


def load_run():
    spec = importlib.util.spec_from_file_location("tofu_run", RUN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_extraction_strength_by_hand():
    labels = np.array(
        [
            [-100, -100, 5, 6, 7, 8],  # 4 answer tokens
            [-100, -100, 5, 6, 7, 8],
            [-100, -100, 5, 6, 7, 8],
            [-100, -100, -100, -100, -100, -100],  # no target
        ]
    )
    predictions = np.array(
        [
            [0, 0, 5, 6, 7, 8],  # all right: greedy from the bare prompt reproduces it: k = 0, ES = 1
            [0, 0, 5, 9, 7, 8],  # last wrong at answer position 1: needs the first 2 tokens, ES = 1 - 2/4
            [0, 0, 5, 6, 7, 0],  # last token wrong: k = 4, ES = 0
            [0, 0, 0, 0, 0, 0],
        ]
    )
    es = extraction_strength_of(predictions, labels)
    assert es[:3].tolist() == [1.0, 0.5, 0.0]
    assert np.isnan(es[3])


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def tiny_report(request, tmp_path_factory):
    """The tiny run in this process, and with its methods in two spawned worker processes."""
    out = tmp_path_factory.mktemp("tofu_tiny")
    argv = ["--size", "tiny", "--out-dir", str(out), "--cache-dir", str(out / "cache"), "--source", "vendored"]
    report = load_run().run([*argv, "--tune-epochs", "2", "--seeds", "2", "--workers", str(request.param)])
    assert report["workers"] == request.param
    return report, out


@pytest.mark.slow
def test_tiny_run_writes_every_output(tiny_report):
    report, out = tiny_report
    for ext in ("json", "md", "png"):
        assert (out / f"tofu_tiny.{ext}").stat().st_size > 0
    assert json.loads((out / "tofu_tiny.json").read_text())["finished"] is True
    assert report["complete"] and not report["skipped"]
    assert "Unfinished" not in (out / "tofu_tiny.md").read_text()


@pytest.mark.slow
def test_protocol_invariants(tiny_report):
    report, _ = tiny_report
    rows = report["splits"]["forget01"]["rows"]
    retain = rows["retain (exact retraining)"]["metrics"]
    # The KS test of a sample against itself: statistic 0, p-value exactly 1.
    assert retain["forget_quality"] == 1.0
    assert retain["privleak"] == 0.0
    assert 0.0 <= rows["full (no unlearning)"]["metrics"]["forget_quality"] <= 1.0
    for name in ["retain (exact retraining)", "full (no unlearning)", *list_methods()]:
        row = rows[name]
        assert row["metrics"]["model_utility"] is not None, name
        assert set(row["attacks"]["quantization"]) >= {"before", "8bit", "4bit"}, name
        assert set(row["attacks"]["relearning"]) >= {"before", "after"}, name
        assert "forget_quality" in row["attacks"]["quantization"]["4bit"], name
    table = load_run().markdown(report)
    for method in list_methods():
        assert rows[method]["train"]["optimizer_steps"] >= 1, method
        assert f"| {method} |" in table
        # Every method is tuned; a chosen setting is a tuned row trained for exactly the chosen number of steps,
        # and it comes from a trajectory whose last evaluation met the criterion.
        tuning = rows[method]["tuning"]
        chosen = tuning["chosen"]
        assert (chosen is None) == (f"{method} (tuned)" not in rows), method
        if chosen is not None:
            assert rows[f"{method} (tuned)"]["train"]["optimizer_steps"] == chosen["steps"]
            path = next(
                t
                for t in tuning["trajectories"]
                if (t["learning_rate"], t["epochs"]) == (chosen["learning_rate"], chosen["epochs"])
            )
            assert path["points"][-1]["status"] == "met" and path["points"][-1]["step"] == chosen["steps"]
        # The grid: the default row's trajectory (the size's schedule), then --tune-epochs' schedule, while none met.
        schedules = [t["epochs"] for t in tuning["trajectories"]]
        assert schedules[0] is None and all(e == 2.0 for e in schedules[1:]), (method, schedules)
        met = [t["met_step"] is not None for t in tuning["trajectories"]]
        assert not any(met[:-1]), (method, met)  # no trajectory runs after one met
    assert "### Default vs tuned" in table
    # Rows in the methods' order (workers finish in any order), every method's tuned row right after it.
    expected = ["retain (exact retraining)", "full (no unlearning)"]
    for method in report["methods"]:
        expected += [method] + ([f"{method} (tuned)"] if rows[method]["tuning"]["chosen"] else [])
    assert list(rows) == expected


@pytest.mark.slow
def test_mia_intervals_and_gaps(tiny_report):
    report, _ = tiny_report
    rows = report["splits"]["forget01"]["rows"]
    assert rows["retain (exact retraining)"]["metrics"]["mia_auc_gap"] == [0.0, 0.0, 0.0]
    retain_auc = rows["retain (exact retraining)"]["metrics"]["mia_auc"]
    for name, row in rows.items():
        metrics = row["metrics"]
        low, high = metrics["mia_auc_interval"]
        assert 0.0 <= low <= high <= 1.0, name
        gap, gap_low, gap_high = metrics["mia_auc_gap"]
        assert gap == pytest.approx(metrics["mia_auc"] - retain_auc, abs=1e-12), name
        assert -1.0 <= gap_low <= gap_high <= 1.0, name
        assert not any(key.startswith("_") for key in metrics), name  # the private MIA scores stay in memory


@pytest.mark.slow
def test_further_seeds(tiny_report):
    """--seeds 2: every method's default setting again with seed 1, scored teacher forced against the same retain
    model's references, after (and timed apart from) the methods' own rows."""
    report, _ = tiny_report
    split = report["splits"]["forget01"]
    rows, retain_auc = split["rows"], split["rows"]["retain (exact retraining)"]["metrics"]["mia_auc"]
    assert split["timing"]["methods_wall_s"] > 0 and split["timing"]["seeds_wall_s"] > 0
    table = load_run().markdown(report)
    seeds_table = table[table.index("### Seeds") :]
    for method in list_methods():
        (run,) = rows[method]["seeds"]
        metrics = run["metrics"]
        assert run["seed"] == 1 and run["train"]["optimizer_steps"] == rows[method]["train"]["optimizer_steps"]
        assert 0.0 <= metrics["forget_quality"] <= 1.0 and 0.0 <= metrics["extraction_strength"] <= 1.0, method
        gap = metrics["mia_auc_gap"]
        assert gap[0] == pytest.approx(metrics["mia_auc"] - retain_auc, abs=1e-12) and gap[1] <= gap[2], method
        assert not any(key.startswith("_") for key in metrics), method
        assert f"| {method} |" in seeds_table
    assert "seeds 0, 1" in seeds_table


@pytest.mark.parametrize("flag", ["--workers", "--seeds"])
def test_counts_must_be_positive(flag, capsys):
    with pytest.raises(SystemExit):
        load_run().run(["--size", "tiny", flag, "0"])
    assert f"{flag} 0" in capsys.readouterr().err


@pytest.mark.slow
def test_outputs_hold_no_tofu_text(tiny_report):
    _, out = tiny_report
    written = (out / "tofu_tiny.json").read_text() + (out / "tofu_tiny.md").read_text()
    data = os.path.join(ROOT, "benchmarks", "tofu", "data")
    with open(os.path.join(data, "forget01_perturbed.jsonl")) as handle:
        records = [json.loads(line) for line in handle]
    for record in records:
        for key in ("question", "answer", "paraphrased_answer"):
            assert record[key][:40] not in written


def test_gpu_size_uses_the_same_path_and_asks_for_the_full_data():
    run = load_run()
    gpu = run.SIZES["gpu"]
    assert gpu.forget_splits == ("forget01", "forget05", "forget10") and gpu.model == run.SIZES["cpu"].model
    data = run.TofuData(run.VENDORED)
    with pytest.raises(ValueError, match="not in"):
        run.split_data(data, gpu, "forget10", seed=0)
    assert run.SIZES["cpu"].forget_splits == ("forget05",)
    cpu = run.split_data(data, run.SIZES["cpu"], "forget05", seed=0)
    assert cpu.forget_authors == [190, 191, 192, 193, 194]  # the first half of forget05's authors
    assert len(cpu.forget_train) == 100 and len(cpu.eval_sets["forget"]) == 100
    assert len(cpu.holdout) == 100 and len(cpu.unseen) == 100
    assert not {r["question"] for r in cpu.unseen} & {r["question"] for r in cpu.holdout}
    assert not {r["question"] for r in cpu.forget_train} & {r["question"] for r in cpu.train_retain}
    assert {r["question"] for r in cpu.train_full} == (
        {r["question"] for r in cpu.train_retain} | {r["question"] for r in cpu.forget_train}
    )
