"""Sharding the evaluation over processes (`hf_unlearn.evaluation.sharding`): every rank the same count, order
kept; two processes score, generate and evaluate in callbacks as one does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hf_unlearn.evaluation.sharding import map_batches, shard_indices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_shard_indices_pad_every_rank_to_the_same_count():
    """5 examples on 2 ranks: [0, 1, 2] and [3, 4, 4] (one repeat); 1 example on 3 ranks: every rank 1 item."""
    assert shard_indices(5, 0, 2) == ([0, 1, 2], 3)
    assert shard_indices(5, 1, 2) == ([3, 4, 4], 2)
    assert shard_indices(1, 2, 3) == ([0], 0)
    with pytest.raises(ValueError, match="empty"):
        shard_indices(0, 0, 1)


def test_map_batches_keeps_order_when_sorting():
    items = ["bb", "a", "dddd", "ccc"]
    calls = []

    def fn(batch):
        calls.append(batch)
        return [s.upper() for s in batch]

    assert map_batches(fn, items, batch_size=2, sort_key=len) == ["BB", "A", "DDDD", "CCC"]
    assert calls == [["dddd", "ccc"], ["bb", "a"]]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_match_one(trained_model_dir, tmp_path):
    """torchrun with 2 processes (gloo on CPU) gives the same per-example scores, token scores, greedy
    continuations and callback evaluations (gradient ascent, global batch 4 either way) as 1 process.

    The forget split has an odd number of examples, so one shard is padded (and its duplicate dropped)."""
    from tests.eval_worker import run

    single = run(trained_model_dir, None, per_device_batch=4)
    out = tmp_path / "two.json"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29547"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    result = subprocess.run(
        torchrun + [os.path.join(ROOT, "tests", "eval_worker.py"), trained_model_dir, str(out), "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    double = json.loads(out.read_text())
    assert (single["world_size"], double["world_size"]) == (1, 2) and single["examples"] % 2 == 1
    np.testing.assert_allclose(double["nll_sum"], single["nll_sum"], rtol=1e-5)
    assert double["tokens"] == single["tokens"] and double["correct"] == single["correct"]
    for key in ("token_logprobs", "token_zscores"):
        for a, b in zip(double[key], single[key], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert double["generated_sha256"] == single["generated_sha256"]
    assert [h["step"] for h in double["history"]] == [0, 1, 2, 3]
    for a, b in zip(double["history"], single["history"], strict=True):
        for key in ("forget", "approximate", "auc", "min_k_20"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), (a["step"], key)
    assert len({round(h["forget"], 6) for h in single["history"]}) == 4  # the model did change between evaluations
