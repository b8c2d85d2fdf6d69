"""GPU check: GA and GA + KL on a Llama-2-7B-shaped model under DeepSpeed ZeRO-3, peak memory and tokens/s.

One process, one GPU. A randomly initialised Llama with Llama-2-7B's shapes (hidden 4096, 32 layers, 32 heads,
MLP 11008, vocabulary 32000; 6.74B parameters) is built partitioned (`deepspeed.zero.Init`) in bf16, with
activation checkpointing, and trained through `hf_unlearn`'s ga_kl trainer with the shipped
recipes/deepspeed/zero3.json plus CPU offload of the optimizer: on one 80 GB GPU the bf16 parameters (13.5 GB),
gradients (13.5 GB) and the partitioned bf16 reference model (13.5 GB) fit, the fp32 master weights and Adam
states (6.74B x 12 B = 81 GB) do not, so they live in CPU memory and DeepSpeedCPUAdam updates them there.

Steps (each step = micro-batch x accumulation sequences of seq-len tokens):
  1 warm-up + --ga-steps  of GA        (retain_weight 0: no retain or reference forward pass)
  1 warm-up + --kl-steps  of GA + KL   (retain_weight 1: policy on forget and retain, reference on retain)
Warm-up steps are excluded from the timings. The reference model is loaded (partitioned) for the whole run, so the
GA phase's peak memory includes it; `reference_gib` says how much that is.

Run on the GPU machine (benchmarks/gpu_check.sh does this, with the wheels and a hard timeout):
    python3 -m torch.distributed.run --nproc_per_node 1 benchmarks/gpu_check.py --out $OUT/gpu_check.json
and on CPU, the same code path with a tiny model (tests/test_gpu_check.py):
    torchrun --nproc_per_node 1 benchmarks/gpu_check.py --tiny --out /tmp/gpu_check.json

The JSON is rewritten after every step, so a run stopped by its timeout still reports what it measured.

`--setting single`: one GPU, no DeepSpeed, no offload, chunked losses (`loss_chunk_size`, default
512): a plain `transformers.Trainer` step, GA, GA + KL and NPO on the same model shape, batch and config, one after
the other in the same process (a fresh model per phase, the same seed), each 1 warm-up + --steps timed steps;
tokens/s, MFU and peak GPU memory per phase. bf16 weights with torch AdamW (states in bf16: 8 bytes/parameter,
54 GB for 6.74B) or, with --optim8bit and bitsandbytes importable, the 8-bit AdamW (skipped with a message
otherwise); activation checkpointing, SDPA attention. MFU = model FLOPs per step (6 x P x tokens per trained
sequence, 2 x P x tokens per no-grad reference forward; recomputation not counted) / step time / peak bf16 FLOP/s
(--peak-tflops, default 989 for an H100/H200 SXM; none on CPU). Tiny CPU mode (tests/test_gpu_check.py):
    python benchmarks/gpu_check.py --setting single --tiny --out /tmp/gpu_single.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback

START = time.time()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from benchmarks import harness  # noqa: E402

LLAMA_2_7B = dict(
    hidden_size=4096,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    intermediate_size=11008,
    vocab_size=32000,
)
TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    intermediate_size=256,
    vocab_size=512,
)
GIB = 2**30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write (e.g. $OUT/gpu_check.json)")
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (or GPU): the same code path, for CI")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 4096; tiny: 64)")
    parser.add_argument("--micro-batch", type=int, default=1, help="sequences per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=4, help="micro-batches per optimizer step")
    parser.add_argument("--ga-steps", type=int, default=3, help="timed GA steps (after 1 warm-up step)")
    parser.add_argument("--kl-steps", type=int, default=3, help="timed GA + KL steps (after 1 warm-up step)")
    parser.add_argument(
        "--layers", type=int, default=None, help="override the number of layers (e.g. if CPU RAM is short)"
    )
    parser.add_argument(
        "--no-offload", action="store_true", help="keep the optimizer on the accelerator (small models)"
    )
    parser.add_argument(
        "--setting",
        choices=("zero3", "single"),
        default="zero3",
        help="zero3: ZeRO-3 + CPU optimizer offload (GA, GA + KL); single: one GPU, no offload, chunked "
        "losses (plain step, GA, GA + KL, NPO)",
    )
    parser.add_argument("--steps", type=int, default=2, help="single: timed steps per phase (after 1 warm-up step)")
    parser.add_argument("--optim8bit", action="store_true", help="single: bitsandbytes 8-bit AdamW (if importable)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="single: the GPU's peak bf16 TFLOP/s (MFU)")
    parser.add_argument("--loss-chunk-size", type=int, default=None, help="single: loss_chunk_size (default: config's)")
    options = parser.parse_args(argv)
    if options.seq_len is None:
        options.seq_len = 64 if options.tiny else 4096
    return options


class Report:
    """The JSON result, rewritten on every update by rank 0."""

    def __init__(self, path: str):
        self.path = path
        self.data: dict = {"status": "starting", "setup_seconds": {}, "phases": {}}
        self.rank0 = int(os.environ.get("RANK", "0")) == 0

    def update(self, **values) -> None:
        self.data.update(values)
        self.write()

    def write(self) -> None:
        if not self.rank0:
            return
        self.data["elapsed_seconds"] = round(time.time() - START, 1)
        self.data["host"] = host_memory()
        harness.write_json(self.path, self.data)


def host_memory() -> dict:
    import psutil

    memory = psutil.virtual_memory()
    return {
        "process_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 2),
        "process_rss_gib": round(psutil.Process().memory_info().rss / GIB, 2),
        "system_used_gib": round((memory.total - memory.available) / GIB, 2),
        "system_total_gib": round(memory.total / GIB, 2),
    }


def gpu_memory() -> dict:
    if not torch.cuda.is_available():
        return {}
    return {
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 2),
    }


def device_name(info: dict) -> str:
    """The GPU's name, or "cpu (<model>)" without one, from `harness.machine_info()`'s record."""
    return info["gpu"] or f"cpu ({info['cpu_model']})"


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build_cpu_adam(report: Report) -> str | None:
    """Compile DeepSpeedCPUAdam now (ninja; about a minute) so its cost is reported apart; the error if it fails."""
    start = time.time()
    try:
        from deepspeed.ops.op_builder import CPUAdamBuilder

        CPUAdamBuilder().load()
    except Exception as error:  # a missing compiler or header: fall back to torch's AdamW on the CPU
        report.data["setup_seconds"]["cpu_adam_build"] = round(time.time() - start, 1)
        return f"{type(error).__name__}: {error}"[:2000]
    report.data["setup_seconds"]["cpu_adam_build"] = round(time.time() - start, 1)
    return None


def deepspeed_config(offload: bool, cpu_adam_error: str | None) -> dict:
    """recipes/deepspeed/zero3.json, plus optimizer offload to CPU."""
    with open(os.path.join(REPO, "recipes", "deepspeed", "zero3.json")) as handle:
        config = json.load(handle)
    if offload:
        config["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if cpu_adam_error is not None:
            config["zero_force_ds_cpu_optimizer"] = False  # torch AdamW steps the offloaded states instead
    return config


def random_sequences(count: int, length: int, vocab: int, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(3, vocab, (length,), generator=generator)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return out


class Phases(TrainerCallback):
    """Times every step and micro-batch, switches GA -> GA + KL, and tracks peak memory per phase."""

    def __init__(self, trainer_ref: dict, report: Report, plan: list[tuple[str, int]], tokens_per_step: dict):
        self.trainer_ref, self.report, self.tokens_per_step = trainer_ref, report, tokens_per_step
        # plan: [(phase, number of steps including its warm-up step)]
        self.phase_of_step = {}
        step = 0
        for name, count in plan:
            for i in range(count):
                step += 1
                self.phase_of_step[step] = (name, i == 0)
        self.last = None
        self.substeps: list[float] = []
        self.train_called = None

    def on_train_begin(self, args, state, control, **kwargs):
        synchronize()
        now = time.time()
        self.report.data["setup_seconds"]["engine_init"] = round(now - self.train_called, 1)
        engine = self.trainer_ref["trainer"].model_wrapped
        inner = getattr(getattr(engine, "optimizer", None), "optimizer", None)
        self.report.data["optimizer"] = type(inner).__name__ if inner is not None else type(engine.optimizer).__name__
        self.report.update(status="training")
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.last = now
        return control

    def on_substep_end(self, args, state, control, **kwargs):
        synchronize()
        now = time.time()
        self.substeps.append(now - self.last)
        self.last = now
        return control

    def on_step_end(self, args, state, control, **kwargs):
        synchronize()
        now = time.time()
        step = state.global_step
        name, warmup = self.phase_of_step[step]
        seconds = now - self.last + sum(self.substeps)
        record = {
            "step": step,
            "warmup": warmup,
            "seconds": round(seconds, 3),
            "micro_batch_seconds": [round(s, 3) for s in self.substeps],
            **gpu_memory(),
        }
        self.substeps, self.last = [], now
        phase = self.report.data["phases"].setdefault(name, {"steps": []})
        phase["steps"].append(record)
        phase.update(self.summary(name, phase["steps"]))
        next_phase = self.phase_of_step.get(step + 1, (None, False))[0]
        if next_phase is not None and next_phase != name:
            self.trainer_ref["trainer"].args.retain_weight = 1.0  # GA -> GA + KL
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
        self.report.write()
        return control

    def summary(self, name: str, steps: list[dict]) -> dict:
        timed = [s["seconds"] for s in steps if not s["warmup"]]
        out = {"timed_steps": len(timed)}
        if timed:
            mean = statistics.mean(timed)
            out["mean_step_seconds"] = round(mean, 3)
            out["forget_tokens_per_s"] = round(self.tokens_per_step["forget"] / mean, 1)
            policy_tokens = self.tokens_per_step["forget"] * (2 if name == "ga_kl" else 1)
            out["policy_tokens_per_s"] = round(policy_tokens / mean, 1)
        micro = [m for s in steps if not s["warmup"] for m in s["micro_batch_seconds"]]
        if micro:
            out["median_micro_batch_seconds"] = round(statistics.median(micro), 3)
        peaks = [s.get("peak_allocated_gib", 0) for s in steps]
        if any(peaks):
            out["peak_gpu_allocated_gib"] = max(peaks)
            out["peak_gpu_reserved_gib"] = max(s.get("peak_reserved_gib", 0) for s in steps)
        return out


def run(options: argparse.Namespace, report: Report) -> None:
    import deepspeed
    from transformers import AutoModelForCausalLM, LlamaConfig

    from hf_unlearn import get_method
    from hf_unlearn.distributed import setup_distributed

    shape = dict(TINY if options.tiny else LLAMA_2_7B)
    if options.layers:
        shape["num_hidden_layers"] = options.layers
    offload = not options.no_offload
    info = harness.machine_info()
    report.update(
        status="setup",
        device=device_name(info),
        versions={
            **{k: info[k] for k in ("python", "torch", "transformers")},
            "deepspeed": deepspeed.__version__,
            "cuda": torch.version.cuda,
            "cpu_threads": torch.get_num_threads(),
        },
    )
    report.data["setup_seconds"]["imports"] = round(time.time() - START, 1)

    cpu_adam_error = build_cpu_adam(report) if offload else None
    steps_ga, steps_kl = options.ga_steps, options.kl_steps
    if cpu_adam_error is not None:
        steps_ga, steps_kl = min(steps_ga, 1), min(steps_kl, 1)  # torch AdamW on 6.7B CPU states is slow
    report.update(cpu_adam_error=cpu_adam_error)

    cls = get_method("ga_kl")
    plan = [("ga", 1 + steps_ga), ("ga_kl", 1 + steps_kl)]
    # bf16 on the GPU; the CPU run (tiny mode, tests) computes in fp32: bf16 matrix products on CPU need AVX-512
    # kernels that a CPU without them (or ATEN_CPU_CAPABILITY=default) does not have.
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    max_steps = sum(count for _, count in plan)
    with tempfile.TemporaryDirectory() as scratch:
        args = cls.config_class(
            output_dir=scratch,
            max_steps=max_steps,
            per_device_train_batch_size=options.micro_batch,
            gradient_accumulation_steps=options.grad_accum,
            learning_rate=2e-5,
            lr_scheduler_type="constant",
            warmup_steps=0,
            bf16=cuda,
            activation_checkpointing=True,
            deepspeed=deepspeed_config(offload, cpu_adam_error),
            retain_weight=0.0,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=0,
            disable_tqdm=True,
            dataloader_drop_last=True,
            use_cpu=not cuda,
        )
        setup_distributed(args)
        processes = args.world_size
        forget_tokens = options.micro_batch * options.grad_accum * processes * options.seq_len
        report.update(
            model={
                **shape,
                "parameters": None,
                "dtype": str(dtype).removeprefix("torch."),
                "activation_checkpointing": True,
            },
            batch={
                "seq_len": options.seq_len,
                "micro_batch": options.micro_batch,
                "grad_accum": options.grad_accum,
                "processes": processes,
                "forget_tokens_per_step": forget_tokens,
                "arithmetic": f"{options.micro_batch} x {options.grad_accum} x {processes} x {options.seq_len} = "
                f"{forget_tokens:,} forget tokens per step (+ as many retain tokens in GA + KL)",
            },
            deepspeed_zero=args.hf_deepspeed_config.config["zero_optimization"],
        )

        # Both models are built partitioned (ZeRO-3 is active once `args` exists), from the same seed: the reference
        # starts equal to the policy, as in a real run.
        config = LlamaConfig(
            **shape,
            max_position_embeddings=max(4096, options.seq_len),
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
        )
        start = time.time()
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        synchronize()
        report.data["setup_seconds"]["build_policy"] = round(time.time() - start, 1)
        report.data["model"]["parameters"] = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
        start = time.time()
        torch.manual_seed(0)
        reference = AutoModelForCausalLM.from_config(config, dtype=dtype)
        count = processes * options.micro_batch * options.grad_accum * max_steps
        forget = random_sequences(count, options.seq_len, shape["vocab_size"], seed=1)
        retain = random_sequences(count, options.seq_len, shape["vocab_size"], seed=2)
        trainer_ref: dict = {}
        phases = Phases(trainer_ref, report, plan, {"forget": forget_tokens})
        trainer = cls(
            model=model, args=args, train_dataset=forget, retain_dataset=retain, ref_model=reference, callbacks=[phases]
        )
        trainer_ref["trainer"] = trainer
        synchronize()
        report.data["setup_seconds"]["build_reference_and_trainer"] = round(time.time() - start, 1)
        ref_params = list(trainer.ref_model.parameters())
        report.data["reference"] = {
            "type": type(trainer.ref_model).__name__,
            "partitioned": all(hasattr(p, "ds_id") for p in ref_params),
            "gib": round(sum(getattr(p, "ds_numel", p.numel()) for p in ref_params) * 2 / GIB, 2),
        }
        if torch.cuda.is_available():
            report.data["gpu_memory_after_setup_gib"] = round(torch.cuda.memory_allocated() / GIB, 2)
        report.write()

        phases.train_called = time.time()
        trainer.train()
        report.update(
            status="done",
            losses=[
                {k: h[k] for k in ("step", "loss", "forget_nll", "retain_loss") if k in h}
                for h in trainer.state.log_history
                if "loss" in h
            ],
        )


SINGLE_PHASES = ("plain", "ga", "ga_kl", "npo")


def run_single(options: argparse.Namespace, report: Report) -> None:
    """One device, no DeepSpeed: plain Trainer step, GA, GA + KL and NPO, each with a fresh model (see docstring)."""
    import importlib.util

    from transformers import AutoModelForCausalLM, LlamaConfig, Trainer, TrainingArguments

    from hf_unlearn import get_method, run_plan
    from hf_unlearn.data import UnlearningCollator

    cuda = torch.cuda.is_available()
    shape = dict(TINY if options.tiny else LLAMA_2_7B)
    if options.layers:
        shape["num_hidden_layers"] = options.layers
    optim, optim_note = "adamw_torch", None
    if options.optim8bit:
        if importlib.util.find_spec("bitsandbytes") is not None and cuda:
            optim = "adamw_bnb_8bit"
        else:
            optim_note = "8-bit AdamW skipped: bitsandbytes is not importable (or no GPU); torch AdamW used"
            print(optim_note, flush=True)
    dtype = torch.bfloat16 if cuda else torch.float32
    info = harness.machine_info()
    config = LlamaConfig(
        **shape,
        max_position_embeddings=max(4096, options.seq_len),
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    tokens_per_step = options.micro_batch * options.grad_accum * options.seq_len
    report.update(
        setting="single",
        status="setup",
        optimizer=optim,
        optimizer_note=optim_note,
        device=device_name(info),
        versions={k: info[k] for k in ("python", "torch", "transformers")},
        model={**shape, "dtype": str(dtype).removeprefix("torch."), "activation_checkpointing": True},
        batch={
            "seq_len": options.seq_len,
            "micro_batch": options.micro_batch,
            "grad_accum": options.grad_accum,
            "forget_tokens_per_step": tokens_per_step,
        },
    )
    steps = 1 + options.steps
    count = options.micro_batch * options.grad_accum * steps
    forget = random_sequences(count, options.seq_len, shape["vocab_size"], seed=1)
    retain = random_sequences(count, options.seq_len, shape["vocab_size"], seed=2)

    def build():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
        return model.to("cuda") if cuda else model

    class Timer(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_step_begin(self, args, state, control, **kwargs):
            synchronize()
            self.marks.append(time.time())

        def on_step_end(self, args, state, control, **kwargs):
            synchronize()
            self.marks[-1] = time.time() - self.marks[-1]

    for phase in SINGLE_PHASES:
        if cuda:
            torch.cuda.empty_cache()
        model = build()
        parameters = sum(p.numel() for p in model.parameters())
        values = dict(
            output_dir=tempfile.mkdtemp(prefix=f"gpu_single_{phase}_"),
            max_steps=steps,
            per_device_train_batch_size=options.micro_batch,
            gradient_accumulation_steps=options.grad_accum,
            learning_rate=2e-5,
            lr_scheduler_type="constant",
            warmup_steps=0,
            optim=optim,
            gradient_checkpointing=True,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=0,
            disable_tqdm=True,
            use_cpu=not cuda,
        )
        timer = Timer()
        reference = None
        if phase == "plain":
            trainer = Trainer(
                model=model,
                args=TrainingArguments(**values),
                train_dataset=forget,
                data_collator=UnlearningCollator(0),
                callbacks=[timer],
            )
            trained, no_grad = 1, 0
        else:
            cls = get_method(phase)
            extra = {} if options.loss_chunk_size is None else {"loss_chunk_size": options.loss_chunk_size}
            args = cls.config_class(**values, **extra)
            plan = run_plan(args, cls)
            kwargs = {"retain_dataset": retain} if plan.uses_retain_data else {}
            reference = build() if plan.reference != "no" else None
            for p in reference.parameters() if reference is not None else ():
                p.requires_grad_(False)
            trainer = cls(
                model=model, args=args, train_dataset=forget, ref_model=reference, callbacks=[timer], **kwargs
            )
            if phase == "npo":
                reference = None  # released after the precomputation
            trained = 2 if plan.uses_retain_data else 1
            no_grad = 1 if phase == "ga_kl" else 0
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        timed = timer.marks[1:]
        mean = statistics.mean(timed)
        flops = (6 * trained + 2 * no_grad) * parameters * tokens_per_step
        entry = {
            "step_seconds": [round(t, 4) for t in timer.marks],
            "mean_step_seconds": round(mean, 4),
            "forget_tokens_per_s": round(tokens_per_step / mean, 1),
            "model_flops_per_step": flops,
            "mfu": round(flops / mean / (options.peak_tflops * 1e12), 4) if cuda else None,
            "peak_gpu_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 2) if cuda else None,
            "parameters": parameters,
            "loss_chunk_size": getattr(trainer.args, "loss_chunk_size", None),
        }
        report.data["phases"][phase] = entry
        report.update(status=f"done {phase}")
        del trainer, model, reference
    plain = report.data["phases"]["plain"]
    for phase in SINGLE_PHASES[1:]:
        entry = report.data["phases"][phase]
        entry["time_per_forget_token_vs_plain"] = round(entry["mean_step_seconds"] / plain["mean_step_seconds"], 3)
    report.update(status="done")


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    report = Report(options.out)
    report.update(argv=sys.argv[1:], tiny=options.tiny)
    try:
        run_single(options, report) if options.setting == "single" else run(options, report)
    except BaseException as error:
        report.update(
            status=f"failed: {type(error).__name__}: {error}"[:2000], traceback=traceback.format_exc()[-6000:]
        )
        raise
    if report.rank0:
        summary = {
            name: {k: v for k, v in phase.items() if k != "steps"} for name, phase in report.data["phases"].items()
        }
        data = report.data
        print(json.dumps({"setup_seconds": data["setup_seconds"], "phases": summary, "host": data["host"]}, indent=1))


if __name__ == "__main__":
    main()
