"""Two processes (torchrun, gloo on CPU) compute the same unlearning step as one process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mp_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_match_one(trained_model_dir, tmp_path):
    """Global batch 4 either way: 1 process x 4, or 2 processes x 2.

    What the invariance promises is the first step: the same loss, terms and gradient (later AdamW steps amplify
    float-order noise, so a trajectory is no test of it). The gradient is read from
    one plain SGD step with lr 1 (weights - gradient), without clipping. It is a float32 sum over at most 128
    target tokens, reduced in another order (2 partial sums and an all-reduce): at most ~128 x 1.2e-7 = 1.5e-5 of
    the largest gradient entry in the worst case, so the tolerance is 2e-5 of it; the losses (means of those sums)
    get 2e-5 relative. Also `train_loss` when the last steps are not logged (rank 0 must gather the
    remainder, not report P x its share) must agree, with lr 0 so every step sees the same model. The adversarial run
    shares a cache folder: the 2-process run reads the entry the 1-process run wrote (rank 0 decides, broadcasts).
    Both runs compute the summed terms' gradients in the forward pass (`loss_gradient_in_forward`), which under DDP
    reach the parameters in backward like any other gradient.
    """
    one, two, cache = tmp_path / "one", tmp_path / "two", tmp_path / "cache"
    one.mkdir(), two.mkdir()
    run([sys.executable, WORKER, trained_model_dir, str(one), "4", str(cache)])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    run(torchrun + [WORKER, trained_model_dir, str(two), "2", str(cache)])
    single, double = json.loads((one / "result.json").read_text()), json.loads((two / "result.json").read_text())
    assert single["world_size"] == 1 and double["world_size"] == 2
    # Both runs compute the summed terms' gradients in the forward pass (DDP all-reduces them in backward).
    assert all(single["gradient_in_forward"].values()) and all(double["gradient_in_forward"].values())
    from transformers import AutoModelForCausalLM

    initial = dict(AutoModelForCausalLM.from_pretrained(trained_model_dir).named_parameters())
    for method, logged in single["first_step"].items():
        other = double["first_step"][method]
        for key in ("loss", "forget_loss", "forget_nll", "retain_loss"):
            if key in logged:
                assert other[key] == pytest.approx(logged[key], rel=2e-5), (method, key, logged[key], other[key])
        after_one, after_two = torch.load(one / f"{method}.pt"), torch.load(two / f"{method}.pt")
        gradient = {n: initial[n].detach() - after_one[n] for n in after_one}  # zero where RMU freezes
        scale = max(g.abs().max().item() for g in gradient.values())
        assert scale > 0, method
        worst = max((after_one[n] - after_two[n]).abs().max().item() for n in after_one)
        assert worst <= 2e-5 * scale, (method, worst, scale)
        assert double["train_loss"][method] == pytest.approx(single["train_loss"][method], rel=2e-5), method
