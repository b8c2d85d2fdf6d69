#!/usr/bin/env python
"""How far the same unlearning run drifts apart under DDP, DeepSpeed ZeRO-3 and FSDP2 on 2 CPU processes.

What is run
    One configuration (GA + KL, AdamW lr 1e-3, constant schedule, no clipping, fp32, 1 per device x accumulation 2
    x 2 processes = 4 forget chunks of 32 tokens per step, seed 0) on one tiny Llama built here (hidden 32, 2
    layers, fitted for a few epochs to the forget and retain documents so there is something to forget), trained
    for `--steps` optimizer steps under each engine:

    ddp          torchrun --nproc_per_node 2
    zero3        torchrun --nproc_per_node 2, --deepspeed recipes/deepspeed/zero3.json (the reference partitioned)
    fsdp2        accelerate launch with recipes/accelerate/fsdp2.yaml set for CPU (use_cpu, 2 processes, no mixed
                 precision), policy and reference sharded with fully_shard
    ddp_fwdgrad  DDP with its default loss route: the chunked head's gradient computed in the forward pass (the
                 three runs above all recompute it in backward, the only route DeepSpeed and FSDP take)

    After every step each engine's full weights are gathered and saved; this process then scores every saved
    model the same way (one process, the same batches): the mean next-token NLL of the forget and the retain
    chunks.

What is reported, per step and per pair of runs
    weights: max |w_a - w_b| over all parameters (and the parameter where it is largest), and that divided by
    max |w_a - w_initial| (the drift relative to how far training moved the weights); forget / retain NLL: |NLL_a - NLL_b| and the values themselves.
    The first step is equal to float precision (the engines reduce the same sums in other orders); AdamW
    divides each update by the root of its second moment, so later steps amplify those differences.

    python benchmarks/engine_drift.py                   # 5 steps, writes benchmarks/results/engine_drift.{json,md}
    python benchmarks/engine_drift.py --tiny --out-dir /tmp/drift   # 2 steps, DDP and FSDP2 only (smoke test)

A worker mode (`--worker ENGINE`) is what the launchers start; it is not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINES = ("ddp", "zero3", "fsdp2", "ddp_fwdgrad")
TINY_ENGINES = ("ddp", "fsdp2")
LEARNING_RATE, MAX_LENGTH, DOCUMENTS = 1e-3, 32, 48
FSDP2_YAML = os.path.join(REPO, "recipes", "accelerate", "fsdp2.yaml")
ZERO3_JSON = os.path.join(REPO, "recipes", "deepspeed", "zero3.json")


# ------------------------------------------------------------------ data and model (this process)


def documents(seed: int) -> list[str]:
    """Synthetic pseudo-English documents (no real data)."""
    import random

    words = (
        "the quick brown fox jumps over lazy dog while a small cat sleeps near warm fire and old man reads "
        "long book about river mountain city garden winter summer light dark stone water tree bird song"
    ).split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) + "." for _ in range(DOCUMENTS)]


def prepare(work: str) -> None:
    """A tokenizer, a tiny Llama fitted to forget + retain for 10 epochs (saved to `work/model`), and the data."""
    import datasets
    import torch
    from transformers import Trainer, TrainingArguments

    from hf_unlearn import chunk_documents
    from hf_unlearn.data import UnlearningCollator
    from hf_unlearn.testing import build_llama, build_tokenizer

    tokenizer = build_tokenizer(documents(123) + documents(124), vocab_size=300)
    model = build_llama(len(tokenizer), hidden_size=32, layers=2, heads=2)
    for name, seed in (("forget", 11), ("retain", 12)):
        with open(os.path.join(work, f"{name}.jsonl"), "w") as handle:
            handle.writelines(json.dumps({"text": text}) + "\n" for text in documents(seed))
    train = datasets.concatenate_datasets(
        [
            chunk_documents(os.path.join(work, f"{n}.jsonl"), tokenizer, max_length=MAX_LENGTH)
            for n in ("forget", "retain")
        ]
    )
    torch.manual_seed(0)
    args = TrainingArguments(
        output_dir=os.path.join(work, "fit"),
        per_device_train_batch_size=8,
        num_train_epochs=10,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        logging_strategy="no",
    )
    Trainer(model=model, args=args, train_dataset=train, data_collator=UnlearningCollator(0)).train()
    model.save_pretrained(os.path.join(work, "model"))
    tokenizer.save_pretrained(os.path.join(work, "model"))


def cpu_fsdp2_config(path: str, port: int) -> str:
    """The bundled fsdp2.yaml with the changes its header names for 2 CPU processes."""
    import yaml

    with open(FSDP2_YAML) as handle:
        config = yaml.safe_load(handle)
    config.update(use_cpu=True, num_processes=2, mixed_precision="no", main_process_port=port)
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(engine: str, work: str, steps: int) -> None:
    """Run the worker of `engine` on 2 processes; raise with its output's tail if it fails."""
    worker = [os.path.abspath(__file__), "--worker", engine, "--work-dir", work, "--steps", str(steps)]
    if engine == "fsdp2":
        config = cpu_fsdp2_config(os.path.join(work, "fsdp2_cpu.yaml"), free_port())
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, *worker]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        command += ["--master_port", str(free_port()), *worker]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} run failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def score(work: str, engines: tuple[str, ...], steps: int) -> dict:
    """Forget / retain NLL of every engine's model after every step, and the weight drift between engines."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_unlearn import chunk_documents
    from hf_unlearn.evaluation import mean_nll

    tokenizer = AutoTokenizer.from_pretrained(os.path.join(work, "model"))
    data = {
        n: chunk_documents(os.path.join(work, f"{n}.jsonl"), tokenizer, max_length=MAX_LENGTH)
        for n in ("forget", "retain")
    }
    model = AutoModelForCausalLM.from_pretrained(os.path.join(work, "model"))
    initial = {n: t.detach().clone() for n, t in model.state_dict().items()}
    pairs = [(a, b) for i, a in enumerate(engines) for b in engines[i + 1 :]]
    rows = []
    for step in range(1, steps + 1):
        weights = {e: torch.load(os.path.join(work, e, f"step-{step}.pt")) for e in engines}
        nll = {}
        for engine in engines:
            model.load_state_dict(weights[engine])
            nll[engine] = {n: mean_nll(model, data[n], tokenizer.pad_token_id) for n in data}
        row = {"step": step, "nll": nll, "pairs": {}}
        for a, b in pairs:
            by_name = {n: (weights[a][n] - weights[b][n]).abs().max().item() for n in initial}
            worst = max(by_name, key=by_name.get)
            drift = by_name[worst]
            moved = max((weights[a][n] - initial[n]).abs().max().item() for n in initial)
            row["pairs"][f"{a}-{b}"] = {
                "weights_max_abs": drift,
                "worst_parameter": worst,
                "weights_relative": drift / moved if moved else float("nan"),
                **{f"{n}_nll_abs": abs(nll[a][n] - nll[b][n]) for n in data},
            }
        rows.append(row)
    return {"steps": rows, "pairs": [f"{a}-{b}" for a, b in pairs]}


def markdown(report: dict) -> str:
    info, settings = report["machine"], report["settings"]
    lines = [
        "# Engine drift: the same run under " + ", ".join(settings["engines"]) + " (2 CPU processes)",
        "",
        f"- Date: {report['date']}; {info['cpu_model']}, {info['cpus_available']} CPUs available; torch "
        f"{info['torch']}, transformers {info['transformers']}, accelerate {info['accelerate']}, deepspeed "
        f"{report['deepspeed']}.",
        f"- Command: `{report['command']}`",
        f"- Run: {settings['method']}, AdamW lr {settings['learning_rate']}, {settings['per_device']} per device x "
        f"accumulation {settings['accumulation']} x 2 processes, fp32, tiny Llama (hidden 32, 2 layers) fitted to "
        "the synthetic forget + retain documents; every saved model scored in one process on the same chunks.",
        "- Weights: max |w_a - w_b|, and relative = that / max |w_a - w_initial|. NLL: |NLL_a - NLL_b| (mean "
        "next-token NLL).",
        "",
        "| step | pair | weights max abs | weights relative | worst parameter | forget NLL abs | retain NLL abs |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["result"]["steps"]:
        for pair, drift in row["pairs"].items():
            lines.append(
                f"| {row['step']} | {pair} | {drift['weights_max_abs']:.2e} | {drift['weights_relative']:.2e} | "
                f"`{drift['worst_parameter']}` | {drift['forget_nll_abs']:.2e} | {drift['retain_nll_abs']:.2e} |"
            )
    lines += ["", "| step | " + " | ".join(f"{e} forget / retain NLL" for e in settings["engines"]) + " |"]
    lines.append("|---|" + "---|" * len(settings["engines"]))
    for row in report["result"]["steps"]:
        cells = [f"{row['nll'][e]['forget']:.6f} / {row['nll'][e]['retain']:.6f}" for e in settings["engines"]]
        lines.append(f"| {row['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per engine (default 5)")
    parser.add_argument("--tiny", action="store_true", help="2 steps, DDP and FSDP2 only (a smoke test)")
    parser.add_argument("--out-dir", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.worker:
        worker(options.worker, options.work_dir, options.steps)
        return
    steps, engines = (2, TINY_ENGINES) if options.tiny else (options.steps, ENGINES)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from overhead import machine_info

    info = machine_info()
    with tempfile.TemporaryDirectory() as work:
        prepare(work)
        for engine in engines:
            launch(engine, work, steps)
        result = score(work, engines, steps)
    import deepspeed

    report = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", os.path.relpath(os.path.abspath(__file__), REPO), *(argv or sys.argv[1:])]),
        "machine": info,
        "deepspeed": deepspeed.__version__,
        "tiny": options.tiny,
        "settings": {
            "engines": list(engines),
            "steps": steps,
            "method": "ga_kl",
            "learning_rate": LEARNING_RATE,
            "per_device": 1,
            "accumulation": 2,
        },
        "result": result,
    }
    os.makedirs(options.out_dir, exist_ok=True)
    with open(os.path.join(options.out_dir, "engine_drift.json"), "w") as handle:
        json.dump(report, handle, indent=1)
    with open(os.path.join(options.out_dir, "engine_drift.md"), "w") as handle:
        handle.write(markdown(report))
    print(markdown(report))


# ------------------------------------------------------------------ worker (each launched process)


def worker(engine: str, work: str, steps: int) -> None:
    """Train GA + KL for `steps` steps under `engine`; rank 0 saves the full weights after every step."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from hf_unlearn import chunk_documents, get_method
    from hf_unlearn.distributed import finish_distributed, setup_distributed

    torch.set_num_threads(1)
    out = os.path.join(work, engine)
    os.makedirs(out, exist_ok=True)
    cls = get_method("ga_kl")
    args = cls.config_class(  # before the model: with ZeRO-3 it partitions the model while loading
        output_dir=out,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=2,
        max_steps=steps,
        learning_rate=LEARNING_RATE,
        warmup_steps=0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=0,
        use_cpu=True,
        dataloader_drop_last=True,
        deepspeed=ZERO3_JSON if engine == "zero3" else None,
        # One loss route for every engine (the head's gradient recomputed in backward, as DeepSpeed and FSDP need);
        # ddp_fwdgrad is DDP with its default route, the gradient of the chunked head computed in the forward pass.
        loss_gradient_in_forward=engine == "ddp_fwdgrad",
    )
    setup_distributed(args)
    model_dir = os.path.join(work, "model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = {
        n: chunk_documents(os.path.join(work, f"{n}.jsonl"), tokenizer, max_length=MAX_LENGTH)
        for n in ("forget", "retain")
    }
    trainer = cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=data["forget"],
        retain_dataset=data["retain"],
        processing_class=tokenizer,
    )

    class SaveWeights(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            wrapped = trainer.deepspeed if trainer.is_deepspeed_enabled else trainer.model
            weights = trainer.accelerator.get_state_dict(wrapped)  # every rank takes part in the gather
            if trainer.is_world_process_zero():
                full = {n: t.detach().float().cpu().clone() for n, t in weights.items()}
                torch.save(full, os.path.join(out, f"step-{state.global_step}.pt"))

    trainer.add_callback(SaveWeights())
    trainer.train()
    # Leave the process group and exit without interpreter teardown, where a library's native thread can abort a
    # rank after the work is done.
    finish_distributed()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
