"""Memory that LoRA's adapter-free reference saves: GA + KL with a LoRA adapter, reference = the policy with its
adapter disabled (hf_unlearn's default) against a second copy of the original model loaded from disk.

    python benchmarks/lora_reference_memory.py [--hidden 512 --layers 8] [--out benchmarks/results]

Each configuration runs in a fresh process; peak memory = resident-set high-water mark during `train()` minus the
resident set before the trainer is built (so the second model, if any, is counted). fp32, CPU, batch 4 x 256.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import harness  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def worker(mode: str, model_dir: str) -> dict:
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from hf_unlearn import get_method

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    vocab = model.config.vocab_size
    rows = [torch.randint(3, vocab, (256,)).tolist() for _ in range(16)]
    data = [{"input_ids": r, "attention_mask": [1] * 256, "labels": r} for r in rows]
    cls = get_method("ga_kl")
    args = cls.config_class(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=4,
        max_steps=3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        warmup_steps=0,
    )
    before = rss_mb()
    with open("/proc/self/clear_refs", "w") as handle:  # reset the high-water mark
        handle.write("5")
    trainer = cls(
        model=model,
        args=args,
        train_dataset=data,
        retain_dataset=data,
        peft_config=LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
        ref_model=model_dir if mode == "second_copy" else None,
    )
    trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": mode,
        "peak_over_baseline_mb": round(peak - before, 1),
        "reference_loaded": trainer.ref_model is not None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "MODEL_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    from hf_unlearn.testing import build_llama

    with tempfile.TemporaryDirectory() as model_dir:
        model = build_llama(8192, hidden_size=args.hidden, layers=args.layers, heads=8)
        params = sum(p.numel() for p in model.parameters())
        model.save_pretrained(model_dir)
        results = []
        for mode in ("adapter_disabled", "second_copy"):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", mode, model_dir], capture_output=True, text=True, check=True
            )
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    saved = results[1]["peak_over_baseline_mb"] - results[0]["peak_over_baseline_mb"]
    report = {
        "command": harness.command_line(__file__, argv),
        "machine": {"cpu": harness.cpu_model(), "cores": os.cpu_count()},
        "model_parameters": params,
        "model_fp32_mb": round(params * 4 / 2**20, 1),
        "results": results,
        "saved_mb": round(saved, 1),
    }
    harness.write_json(os.path.join(args.out, "lora_reference_memory.json"), report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
