"""benchmarks/gpu_check.py in --tiny mode on CPU: the code path the GPU check runs, kept from rotting in CI.

One `torchrun --nproc_per_node 1` launch (DeepSpeed needs a launcher): about 40 s, plus about 3 minutes on 2 cores
the first time DeepSpeed compiles its CPU-Adam op (cached in ~/.cache/torch_extensions afterwards).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "gpu_check.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_tiny_mode_reports_memory_and_throughput(tmp_path):
    out = tmp_path / "gpu_check.json"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "1",
        "--master_port",
        str(free_port()),
        SCRIPT,
        "--tiny",
        "--ga-steps",
        "2",
        "--kl-steps",
        "2",
        "--out",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    report = json.loads(out.read_text())
    assert report["status"] == "done"
    assert report["optimizer"] == "DeepSpeedCPUAdam" and report["cpu_adam_error"] is None
    assert report["reference"]["type"] == "DeepSpeedEngine" and report["reference"]["partitioned"]
    assert report["deepspeed_zero"]["stage"] == 3 and report["deepspeed_zero"]["offload_optimizer"]["device"] == "cpu"
    assert report["batch"]["forget_tokens_per_step"] == 1 * 4 * 1 * 64
    for name in ("ga", "ga_kl"):
        phase = report["phases"][name]
        assert [s["warmup"] for s in phase["steps"]] == [True, False, False]
        assert phase["timed_steps"] == 2 and phase["forget_tokens_per_s"] > 0 and phase["mean_step_seconds"] > 0
        assert all(len(s["micro_batch_seconds"]) == 3 for s in phase["steps"])  # 4 micro-batches, 3 before the last
    kl = report["phases"]["ga_kl"]
    assert kl["policy_tokens_per_s"] == pytest.approx(2 * kl["forget_tokens_per_s"], rel=1e-3)
    # GA steps run no retain term; GA + KL steps add the KL on retain data.
    losses = report["losses"]
    assert "retain_loss" not in losses[0] and "retain_loss" in losses[-1]
    assert report["setup_seconds"]["engine_init"] > 0 and report["host"]["process_peak_rss_gib"] > 0


def test_wrapper_is_valid_bash_and_pins_the_wheels():
    wrapper = os.path.join(REPO, "benchmarks", "gpu_check.sh")
    subprocess.run(["bash", "-n", wrapper], check=True)
    text = open(wrapper).read()
    for pin in ("transformers==5.24.0", "trl==1.16.0", "datasets==5.2.0", "deepspeed==0.19.8"):
        assert pin in text
    assert "benchmarks/gpu_check.py" in text and "timeout" in text


def test_deepspeed_config_is_the_shipped_zero3_plus_offload():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    with open(os.path.join(REPO, "recipes", "deepspeed", "zero3.json")) as handle:
        shipped = json.load(handle)
    config = gpu_check.deepspeed_config(offload=True, cpu_adam_error=None)
    assert config["zero_optimization"].pop("offload_optimizer") == {"device": "cpu", "pin_memory": True}
    assert config == shipped
    assert (
        gpu_check.deepspeed_config(offload=True, cpu_adam_error="no compiler")["zero_force_ds_cpu_optimizer"] is False
    )


@pytest.mark.slow
def test_single_device_setting_tiny_mode(tmp_path):
    """--setting single (one device, no DeepSpeed, chunked losses) in its tiny CPU mode: every phase (plain Trainer
    step, GA, GA + KL, NPO) trains its steps and reports tokens/s; the methods use the chunked losses; the 8-bit
    optimizer is skipped with a message where bitsandbytes (or a GPU) is missing."""
    out = tmp_path / "gpu_single.json"
    env = dict(os.environ, OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [
            sys.executable,
            SCRIPT,
            "--setting",
            "single",
            "--tiny",
            "--steps",
            "1",
            "--optim8bit",
            "--loss-chunk-size",
            "16",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    report = json.loads(out.read_text())
    assert report["status"] == "done" and report["setting"] == "single"
    assert set(report["phases"]) == {"plain", "ga", "ga_kl", "npo"}
    for name, phase in report["phases"].items():
        assert len(phase["step_seconds"]) == 2 and phase["forget_tokens_per_s"] > 0
        assert phase["model_flops_per_step"] > 0
        if name != "plain":
            assert phase["loss_chunk_size"] == 16 and phase["time_per_forget_token_vs_plain"] > 0
    assert report["phases"]["ga_kl"]["model_flops_per_step"] == 14 * report["phases"]["ga"]["model_flops_per_step"] // 6
    if report["optimizer"] == "adamw_torch":
        assert "8-bit AdamW skipped" in report["optimizer_note"]
