"""Keeps benchmarks/overhead.py from rotting: its --quick smoke run must produce a result for every method that runs on
document data (idk and idk_dpo need question/answer data and are listed as not measured), for the npo_forget_only
variant and its NPO-vs-GA comparison, and for both precomputations."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_overhead_benchmark_quick(tmp_path):
    from hf_unlearn import list_methods

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import overhead
    finally:
        sys.path.pop(0)
    configs = [m for m in list_methods() if m not in overhead.SKIPPED] + list(overhead.VARIANTS)
    assert set(overhead.SKIPPED) <= {"idk", "idk_dpo"}
    # Budgets follow each configuration's run plan: GA 1 pass; a retain term 1 more; a reference in training 1
    # no-grad forward; NPO's precomputed reference and the variant without a retain stream cost nothing extra.
    budgets = {name: overhead.inherent_cost(name) for name in configs}
    assert budgets["ga"] == (1, 0) and budgets["ga_descent"] == (2, 0) and budgets["ga_kl"] == (2, 1)
    assert budgets["npo"] == (2, 0) and budgets["npo_forget_only"] == (1, 0) and budgets["undial"] == (2, 1)

    out = tmp_path / "results"
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "overhead.py"), "--quick", "--out-dir", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "overhead.json").read_text())
    assert report["quick"] is True
    for key in ("cpu_model", "cpu_count", "torch", "transformers"):
        assert report["machine"][key]
    assert "overhead.py" in report["command"] and report["date"]
    summary = report["summary"]
    plain = summary["plain"]
    assert plain["step_s"] > 0 and plain["fwd_bwd_s"] > 0 and plain["nograd_forward_s"] > 0
    assert plain["peak_over_baseline_mb"] > 0
    for method in configs:
        entry = summary[method]
        assert entry["step_s"] > 0 and entry["budget_s"] > 0 and entry["peak_over_baseline_mb"] > 0
        assert isinstance(entry["time_within_target"], bool)
        assert report["runs"][method][0]["steps_run"] == report["settings"]["warmup"] + report["settings"]["steps"]
    assert summary["adversarial"]["precompute_s"] > 0 and summary["npo"]["precompute_s"] > 0
    assert summary["npo_forget_only"]["precompute"] == "npo_precompute"
    assert summary["rmu"]["trainable_parameters"] < report["setup"]["parameters"]
    assert set(report["skipped"]) == set(overhead.SKIPPED) & set(list_methods())
    comparison = {(c["config"], c["reference"]): c for c in report["comparisons"]}[("npo_forget_only", "ga")]
    assert comparison["memory_ratio"] > 0 and comparison["time_ratio"] > 0
    assert isinstance(comparison["memory_within_target"], bool)
    table = (out / "overhead.md").read_text()
    for method in configs:
        assert f"| {method} |" in table
    assert "| npo_forget_only vs ga |" in table and "npo_precompute" in table
    assert "every run in one process (smoke run)" in table
    for method in report["skipped"]:
        assert f"{method}: it needs" in table


@pytest.mark.slow
def test_overhead_large_vocabulary_quick(tmp_path):
    """The large-vocabulary case (--large-vocab) in its smoke size, two methods: plain, each method chunked and with
    full logits, in the JSON and in the table."""
    out = tmp_path / "results"
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "benchmarks", "overhead.py"),
            "--large-vocab",
            "--quick",
            "--methods",
            "ga",
            "ga_descent",
            "--out-dir",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "overhead_large_vocab.json").read_text())
    assert report["setup"]["vocab_size"] == 4096 > report["setup"]["tokenizer_vocab_size"]
    assert set(report["runs"]) == {"plain", "ga", "ga@full", "ga_descent", "ga_descent@full"}
    assert report["runs"]["ga@full"]["config_overrides"] == {"loss_chunk_size": 0}
    for method in ("ga", "ga_descent"):
        entry = report["summary"][method]
        assert entry["chunked_peak_mb"] > 0 and entry["full_logits_peak_mb"] > 0 and entry["chunked_over_full"] > 0
    table = (out / "overhead_large_vocab.md").read_text()
    assert "| ga |" in table and "| ga_descent |" in table and "| plain Trainer |" in table
