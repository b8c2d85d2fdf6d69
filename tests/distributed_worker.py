"""Worker for tests/test_deepspeed.py: GA + KL (method `ga_kl`) under one backend, then a resumed run.

    torchrun --nproc_per_node 2 tests/distributed_worker.py --backend zero3 --work-dir DIR

DIR holds `model/` (a tiny Llama and its tokenizer, also the reference model) and `forget.jsonl` /
`retain.jsonl` (written by the test). The worker

1. trains `--max-steps` optimizer steps, saving a checkpoint every `--save-steps`, and saves the final model
   (under ZeRO-3 the 16-bit weights gathered by `save_model`) to `DIR/<backend>/final`; `UnlearningEvalCallback`
   (as recipes/unlearn.py uses it) evaluates the forget set at the start (`history[0]`, the model before any
   update) and at the last step (`history[-1]`);
2. resumes from the first checkpoint in a new trainer and trains to the same last step;
3. writes `DIR/<backend>/result.json` (rank 0): both loss histories, the evaluations and how the reference
   model is held.

Batch arithmetic: 2 per device x 2 accumulation x 2 processes = 8 forget chunks (x 32 tokens) per step, the same
for every backend, so the trajectories must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from hf_unlearn.callbacks import UnlearningEvalCallback  # noqa: E402
from hf_unlearn.distributed import setup_distributed  # noqa: E402
from tests._support import METHOD_CONFIG  # noqa: E402
from tests.conftest import exit_worker  # noqa: E402

BACKENDS = ("ddp", "zero2", "zero3")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Read before any Trainer exists: accelerate sets ACCELERATE_USE_DEEPSPEED itself once a DeepSpeed run has started.
LAUNCHED_WITH_ACCELERATE_DEEPSPEED = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def deepspeed_config(backend: str) -> str | None:
    """The shipped DeepSpeed JSON of a backend; None for DDP, and under `accelerate launch` (its YAML names the JSON)."""
    if backend == "ddp" or LAUNCHED_WITH_ACCELERATE_DEEPSPEED:
        return None
    return os.path.join(REPO, "recipes", "deepspeed", f"{backend}.json")


def reference_layout(ref_model) -> dict:
    """How the reference is held on this process: partitioned (ZeRO-3) or a full replica."""
    params = list(ref_model.parameters())
    return {
        "type": type(ref_model).__name__,
        "partitioned": all(hasattr(p, "ds_id") for p in params),
        "local_numel": sum(p.numel() for p in params),
        "full_numel": sum(getattr(p, "ds_numel", p.numel()) for p in params),
        "requires_grad": any(p.requires_grad for p in params),
        "training": bool(getattr(ref_model, "module", ref_model).training),
    }


def build_trainer(work_dir: str, backend: str, output_dir: str, max_steps: int, save_steps: int, method: str = "ga_kl"):
    """The trainer of one run; `save_steps` 0 saves no checkpoints."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_unlearn import chunk_documents, get_method

    cls = get_method(method)
    # The arguments come first: with a ZeRO-3 config they make from_pretrained partition the model while loading.
    args = cls.config_class(
        output_dir=output_dir,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=max_steps,
        learning_rate=1e-3,
        warmup_steps=0,
        lr_scheduler_type="constant",
        report_to="none",
        logging_steps=1,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        seed=0,
        deepspeed=deepspeed_config(backend),
        use_cpu=not torch.cuda.is_available(),  # DeepSpeed on CPU counts processes only with use_cpu
        dataloader_drop_last=True,
        # Every backend takes the same loss route (DeepSpeed recomputes the chunked head in backward; DDP could
        # compute its gradient in the forward pass): the comparison is of the engines, over 4 AdamW steps that
        # amplify float-order differences (tests/test_chunked_loss.py and test_multiprocess.py cover that route).
        loss_gradient_in_forward=False,
        **METHOD_CONFIG.get(method, {}),
    )
    setup_distributed(args)
    model_dir = os.path.join(work_dir, "model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    forget = chunk_documents(os.path.join(work_dir, "forget.jsonl"), tokenizer, max_length=32)
    retain = chunk_documents(os.path.join(work_dir, "retain.jsonl"), tokenizer, max_length=32)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return cls(
        model=model,
        args=args,
        train_dataset=forget,
        eval_dataset=forget,
        retain_dataset=retain,
        processing_class=tokenizer,
        ref_model=model_dir,
    )


def losses(trainer) -> list[dict]:
    return [
        {k: h[k] for k in ("step", "loss", "forget_nll", "retain_loss") if k in h}
        for h in trainer.state.log_history
        if "loss" in h
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--save-steps", type=int, default=2)
    parser.add_argument(
        "--methods",
        nargs="*",
        default=None,
        help="instead of the ga_kl run: train each of these methods (no resume) and write methods.json",
    )
    options = parser.parse_args()
    torch.set_num_threads(1)  # two processes on two cores
    if options.methods:
        train_methods(options)
        return

    out = os.path.join(options.work_dir, options.backend)
    full = build_trainer(
        options.work_dir, options.backend, os.path.join(out, "full"), options.max_steps, options.save_steps
    )
    layout = reference_layout(full.ref_model)
    # Evaluated at the start (inside train(), once the model is wrapped: DeepSpeed cannot train a model that an
    # earlier evaluate() wrapped for inference) and at the last step, as recipes/unlearn.py does.
    monitor = UnlearningEvalCallback({"forget": full.eval_dataset}, eval_steps=options.max_steps, batch_size=3).attach(
        full
    )
    full.train()
    full.save_model(os.path.join(out, "final"))
    result = {
        "world_size": full.accelerator.num_processes,
        "reference": layout,
        "evaluation_steps": [record.step for record in monitor.history],
        "forget_nll_before": monitor.history[0].nll["forget"],
        "forget_nll_after": monitor.history[-1].nll["forget"],
        "full": losses(full),
    }
    del full

    checkpoint = os.path.join(out, "full", f"checkpoint-{options.save_steps}")
    resumed = build_trainer(
        options.work_dir, options.backend, os.path.join(out, "resumed"), options.max_steps, options.save_steps
    )
    resumed.train(resume_from_checkpoint=checkpoint)
    result["resumed"] = losses(resumed)
    if resumed.is_world_process_zero():
        with open(os.path.join(out, "result.json"), "w") as handle:
            json.dump(result, handle, indent=1)


def train_methods(options) -> None:
    """Train each method of `--methods` for `--max-steps` steps; rank 0 writes their losses to methods.json."""
    out = os.path.join(options.work_dir, options.backend)
    result = {}
    for method in options.methods:
        trainer = build_trainer(
            options.work_dir, options.backend, os.path.join(out, method), options.max_steps, save_steps=0, method=method
        )  # nothing to resume here: no checkpoints
        trainer.train()
        result[method] = [
            {k: h[k] for k in ("step", "loss", "forget_loss", "retain_loss") if k in h}
            for h in trainer.state.log_history
            if "loss" in h
        ]
        del trainer
    if int(os.environ.get("RANK", "0")) == 0:
        with open(os.path.join(out, "methods.json"), "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
    exit_worker()
