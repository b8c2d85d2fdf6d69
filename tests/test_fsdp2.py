"""FSDP2 (`fully_shard` over gloo) on 2 CPU processes gives DDP's numbers: first step, saved model, resumed run.

Two launches of tests/fsdp2_worker.py on the fitted tiny Llama, shared by the tests of this module: DDP under
`torchrun --nproc_per_node 2`, FSDP2 under `accelerate launch` with the bundled recipes/accelerate/fsdp2.yaml set
for CPU as its comment says (`use_cpu: true`, `num_processes: 2`, `mixed_precision: 'no'`); about 20 s each on 2
cores. Two more launches run the recipe through `hf-unlearn train --accelerate_config`, with FSDP2 and FSDP1.

Tolerances, derived as tests/test_multiprocess.py derives them: a first step's loss terms and gradient are float32
sums over at most 128 target tokens, which the two engines reduce in other orders (DDP all-reduces gradients, FSDP2
reduce-scatters them; accumulation splits the sums once more): at most ~128 x 1.2e-7 = 1.5e-5 of the largest
entry, so gradients agree to 2e-5 of their largest entry, and each logged term to 2e-5 of the step's largest term
(a KL term near 0 is a difference of log-probabilities of that size).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

from hf_unlearn import cli
from tests._support import data_flags, free_port, read_json, short_run_flags, write_jsonl
from tests.conftest import make_documents

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "fsdp2_worker.py")
BUNDLED = os.path.join(REPO, "recipes", "accelerate", "fsdp2.yaml")
METHODS = ("ga_descent", "ga_kl", "adversarial", "npo", "rmu")
BATCHINGS = ("2x1", "1x2")  # per-device batch x accumulation, 2 processes: 4 forget chunks per step either way
TERMS = ("loss", "forget_loss", "forget_nll", "retain_loss")
RTOL = 2e-5  # see the module docstring


def cpu_config(path, **fsdp_config) -> str:
    """The bundled fsdp2.yaml with the changes its comment names for 2 CPU processes (and `fsdp_config` entries),
    written to `path`."""
    with open(BUNDLED) as handle:
        config = yaml.safe_load(handle)
    config.update(use_cpu=True, num_processes=2, mixed_precision="no", main_process_port=free_port())
    config["fsdp_config"].update(fsdp_config)
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    return str(path)


def launch(command: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def run(command: list[str], what: str) -> None:
    done = launch(command)
    assert done.returncode == 0, f"{what} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


def recipe_command(model: str, out, data: dict, config: str) -> list[str]:
    """`hf-unlearn train --accelerate_config CONFIG` of a 2-step GA + KL recipe run into `out`."""
    flags = [*short_run_flags(model, out, "ga_kl"), *data_flags(data), "--mia_resamples", "20"]
    return [sys.executable, "-m", "hf_unlearn.cli", "train", "--accelerate_config", config, *flags]


@pytest.fixture(scope="module")
def recipe_data(out) -> dict[str, str]:
    return {
        name: write_jsonl(out / f"{name}.jsonl", make_documents(4, seed=seed))
        for name, seed in (("forget", 1), ("retain", 2), ("approximate", 3))
    }


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("fsdp2")


@pytest.fixture(scope="module")
def results(trained_model_dir, out) -> dict[str, dict]:
    """result.json of the DDP and the FSDP2 launch, by engine."""
    worker = [WORKER, "--model-dir", trained_model_dir, "--out", str(out)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    run([*torchrun, "--master_port", str(free_port()), *worker, "--engine", "ddp"], "DDP worker")
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", cpu_config(out / "cpu.yaml")]
    run([*accelerate, *worker, "--engine", "fsdp2"], "FSDP2 worker")
    return {engine: read_json(out / engine / "result.json") for engine in ("ddp", "fsdp2")}


@pytest.fixture(scope="module")
def initial(trained_model_dir) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {n: p.detach() for n, p in AutoModelForCausalLM.from_pretrained(trained_model_dir).named_parameters()}


def assert_terms_close(got: dict, want: dict, what) -> None:
    """Every logged term of `want` in `got`, to RTOL of the step's largest term."""
    present = [key for key in TERMS if key in want]
    scale = max(abs(want[key]) for key in present)
    for key in present:
        assert got[key] == pytest.approx(want[key], rel=0, abs=RTOL * scale), (what, key, got[key], want[key])


# ------------------------------------------------------------------ the bundled config (fast)


def test_bundled_fsdp2_config_is_fsdp2_with_a_full_state_dict():
    """`--accelerate_config fsdp2` names the bundled FSDP2 config; FSDP1 is not bundled (GPUs only, untested)."""
    from accelerate.commands.config.config_args import load_config_from_file

    assert cli.resolve_accelerate_config("fsdp2") == BUNDLED and "fsdp" not in cli.accelerate_configs()
    config = load_config_from_file(BUNDLED)
    assert str(config.distributed_type).endswith("FSDP")
    assert config.fsdp_config["fsdp_version"] == 2
    assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # save_model writes loadable weights
    with open(BUNDLED) as handle:
        comment = handle.read().split("compute_environment")[0]
    for change in ("use_cpu: true", "num_processes: N", "mixed_precision: 'no'"):
        assert change in comment


def test_fsdp1_on_cpu_processes_is_refused_with_the_fix():
    from hf_unlearn.distributed import cpu_fsdp_error

    assert cpu_fsdp_error(2) is None
    message = cpu_fsdp_error(1)
    assert "FSDP version 1" in message and "fsdp2.yaml" in message and "\n" not in message


@pytest.mark.parametrize("kind", ["SHARDED_STATE_DICT", "FULL_STATE_DICT"])
def test_sharded_state_dict_is_warned_before_loading(monkeypatch, caplog, kind):
    """With a sharded state-dict type `save_model` writes no weights: the launch check says so, with the fix."""
    import logging

    from hf_unlearn.distributed import check_launch

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_STATE_DICT_TYPE", kind)
    with caplog.at_level(logging.WARNING, logger="hf_unlearn.distributed"):
        check_launch(type("Args", (), {"deepspeed": None})())
    warned = [r.getMessage() for r in caplog.records if "save_model will write no model weights" in r.getMessage()]
    assert len(warned) == (kind == "SHARDED_STATE_DICT")
    assert all("FULL_STATE_DICT" in message for message in warned)


# ------------------------------------------------------------------ first step, saving, resuming (2 processes)


@pytest.mark.parametrize("engine", ["ddp", "fsdp2"])
@pytest.mark.slow
@pytest.mark.multiprocess
def test_fsdp2_shards_policy_and_reference(results, engine):
    """Under the FSDP2 config the trainer runs FSDP2 (not DDP) without mixed precision, and both the policy and the
    frozen reference hold shards (DTensors) of their weights on each process; under DDP both are full replicas."""
    result = results[engine]
    assert result["engine"]["world_size"] == 2 and result["engine"]["mixed_precision"] == "no"
    assert result["engine"]["fsdp2"] == (engine == "fsdp2")
    for role in ("policy", "reference"):
        held = result[role]
        if engine == "fsdp2":
            assert held["dtensors"] > 0 and held["local_numel"] < held["full_numel"], role
        else:
            assert held["dtensors"] == 0 and held["local_numel"] == held["full_numel"], role
    assert not result["reference"]["requires_grad"] and not result["reference"]["training"]


@pytest.mark.parametrize("batching", BATCHINGS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.slow
@pytest.mark.multiprocess
def test_first_step_matches_ddp(results, out, initial, method, batching):
    """FSDP2's first step (2 per device, or 1 per device with accumulation 2) equals DDP's without accumulation:
    the loss, every term and the gradient, read from one plain SGD step with lr 1 (weights minus gradient).
    ga_kl runs the sharded reference; adversarial and npo precompute their targets / reference values with it
    into a cache keyed by the sharded weights' fingerprint (the second batching reads the entry the first
    wrote); rmu hooks a decoder layer and trains two matrices only (the others stay bit for bit)."""
    key = f"{method}-{batching}"
    for want in (f"{method}-2x1", key):  # DDP without accumulation, and DDP with the same batching
        assert_terms_close(results["fsdp2"]["first_step"][key], results["ddp"]["first_step"][want], (key, want))
    ddp, fsdp2 = torch.load(out / "ddp" / f"{method}-2x1.pt"), torch.load(out / "fsdp2" / f"{key}.pt")
    assert fsdp2.keys() == ddp.keys() == initial.keys()
    scale = max((initial[n] - ddp[n]).abs().max().item() for n in ddp)
    assert scale > 0
    worst = max((fsdp2[n] - ddp[n]).abs().max().item() for n in ddp)
    assert worst <= RTOL * scale, (key, worst, scale)
    if method == "rmu":
        moved = {n for n in fsdp2 if not torch.equal(fsdp2[n], initial[n])}
        assert moved == {f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1)}


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_backward_passes_are_switched_off_by_the_route(results):
    """The worker asks for one backward per objective; with 2 processes the one routing rule (`loss_route`) turns
    it off under either engine, and under FSDP2 also the gradient in the forward pass (FSDP's hooks partition the
    gradients): the route the log line names is the one that gave DDP's numbers above."""
    for key in results["fsdp2"]["route"]:
        assert results["fsdp2"]["route"][key].endswith("gradient recomputed in backward, one backward per micro-batch")
        assert results["ddp"]["route"][key].endswith("gradient in the forward pass, one backward per micro-batch")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_saved_model_loads_with_ddp_weights(results, out, initial):
    """`save_model` after 4 SGD steps (1 per device x accumulation 2) gathers a full state dict into a folder that
    `from_pretrained` loads, with DDP's weights after the same steps.

    Tolerance: each step's gradient agrees to RTOL of its largest entry G_k (module docstring), and SGD with
    momentum b moves the weights by lr x sum_k sum_{j<=k} b^(k-j) g_j, so the weights differ by at most
    RTOL x lr x sum_k sum_{j<=k} b^(k-j) G_j; doubled for the later gradients' dependence on the weights, which
    differ by that much."""
    from transformers import AutoModelForCausalLM

    saved = {e: AutoModelForCausalLM.from_pretrained(out / e / "final").state_dict() for e in ("ddp", "fsdp2")}
    assert saved["fsdp2"].keys() == saved["ddp"].keys()
    sizes, setting = results["ddp"]["gradient_sizes"], results["ddp"]["run"]
    steps, lr, momentum = setting["max_steps"], setting["learning_rate"], setting["momentum"]
    assert len(sizes) == steps
    bound = 2 * RTOL * lr * sum(momentum ** (k - j) * sizes[j] for k in range(steps) for j in range(k + 1))
    worst = max((saved["fsdp2"][n] - saved["ddp"][n]).abs().max().item() for n in saved["ddp"])
    assert worst <= bound, (worst, bound)
    assert all(not torch.equal(saved["fsdp2"][n], initial[n]) for n in initial), "every weight moves in 4 steps"
    manifest = read_json(out / "fsdp2" / "final" / "unlearning_manifest.json")
    assert (manifest["engine"]["name"], manifest["engine"]["version"]) == ("fsdp", 2)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_resume_continues_the_trajectory(results):
    """Resumed from the step-2 checkpoint (sharded weights, momentum and RNG states), FSDP2 logs steps 3 and 4 as
    the uninterrupted run did; that run follows DDP's 4-step trajectory."""
    full, resumed = results["fsdp2"]["full"], results["fsdp2"]["resumed"]
    steps, saved_at = results["fsdp2"]["run"]["max_steps"], results["fsdp2"]["run"]["save_steps"]
    assert [h["step"] for h in full] == list(range(1, steps + 1))
    assert [h["step"] for h in resumed if h["step"] > saved_at] == list(range(saved_at + 1, steps + 1))
    for step in range(saved_at + 1, steps + 1):
        later = next(h for h in resumed if h["step"] == step)
        assert_terms_close(later, full[step - 1], ("resumed", step))
    for ours, theirs in zip(full, results["ddp"]["full"]):
        assert_terms_close(ours, theirs, ("ddp", ours["step"]))


@pytest.mark.slow
@pytest.mark.multiprocess
def test_recipe_runs_under_fsdp2_through_the_cli(trained_model_dir, out, recipe_data):
    """`hf-unlearn train --accelerate_config <the CPU copy of fsdp2.yaml>`: GA + KL through the recipe (evaluations
    before and after included) on 2 processes ends with a loadable model whose manifest names FSDP2."""
    from transformers import AutoModelForCausalLM

    saved = out / "recipe"
    run(recipe_command(trained_model_dir, saved, recipe_data, cpu_config(out / "cli.yaml")), "hf-unlearn train")
    manifest = read_json(saved / "unlearning_manifest.json")
    assert (manifest["engine"]["name"], manifest["engine"]["version"]) == ("fsdp", 2)
    assert manifest["batch"]["world_size"] == 2
    assert AutoModelForCausalLM.from_pretrained(saved).num_parameters() > 0


@pytest.mark.slow
@pytest.mark.multiprocess
def test_fsdp1_on_cpu_processes_stops_before_training(trained_model_dir, out, recipe_data):
    """The same launch with `fsdp_version: 1` (which accelerate would run as DDP on CPU) stops with the one-line
    error and writes no output folder."""
    saved = out / "fsdp1"
    config = cpu_config(out / "fsdp1.yaml", fsdp_version=1, fsdp_sharding_strategy="FULL_SHARD")
    done = launch(recipe_command(trained_model_dir, saved, recipe_data, config))
    assert done.returncode != 0
    assert "error: FSDP version 1 needs GPUs" in done.stdout + done.stderr
    assert not saved.exists()
