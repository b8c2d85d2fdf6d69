"""Worker for tests/test_fsdp2.py: every method's first step, a saved model and a resumed run under one engine.

    torchrun --nproc_per_node 2 tests/fsdp2_worker.py --engine ddp --model-dir MODEL --out DIR
    accelerate launch --config_file FSDP2_CPU.yaml tests/fsdp2_worker.py --engine fsdp2 --model-dir MODEL --out DIR

MODEL is a saved tiny Llama with its tokenizer (policy and reference load from it). The worker writes into
`DIR/<engine>/`, from rank 0:

- `result.json`: the engine as the trainer sees it and how the policy and the reference are held; per method and
  batching ("2x1": 2 per device without accumulation, "1x2": 1 per device with accumulation 2; 4 forget chunks per
  step on 2 processes either way) the first step's log entry and the loss route; the loss history of a 4-step
  GA + KL run (1 x 2 batching, SGD with momentum, checkpoints every 2 steps), the largest gradient entry of each
  of its steps, the history of the same run resumed from its step-2 checkpoint, and that run's settings;
- `<method>-<batching>.pt`: the full weights after one plain SGD step with lr 1 and no clipping (the initial
  weights minus the first gradient);
- `final/`: `save_model` at the end of the 4-step run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from transformers import AutoTokenizer, TrainerCallback  # noqa: E402

from hf_unlearn import chunk_documents  # noqa: E402
from tests._support import METHOD_CONFIG  # noqa: E402
from tests._support import build_trainer as build_method_trainer  # noqa: E402
from tests.conftest import exit_worker, make_documents  # noqa: E402

METHODS = ("ga_descent", "ga_kl", "adversarial", "npo", "rmu")
BATCHINGS = {"2x1": (2, 1), "1x2": (1, 2)}
# RMU on the 2-layer test model: steer layer 1, train both layers' MLP down projections.
# SGD with momentum (an optimizer with a state to checkpoint and restore).
RUN_STEPS, SAVE_STEPS, RUN_LR, RUN_MOMENTUM = 4, 2, 0.1, 0.5


def full_weights(trainer) -> dict[str, torch.Tensor]:
    """The whole model's weights on rank 0 (gathered from the shards under FSDP2; empty on other ranks there).
    Every rank must call it."""
    state = trainer.accelerator.get_state_dict(trainer.model)
    return {name: tensor.detach().float().cpu().clone() for name, tensor in state.items()}


def layout(model) -> dict:
    """How a model's parameters are held on this process: DTensor shards (FSDP2) or full tensors (a unit that
    stays gathered after the forward pass, such as the final norm + output head, holds full tensors)."""
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    return {
        "type": type(model).__name__,
        "dtensors": sum(isinstance(p, DTensor) for p in params),
        "local_numel": sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params),
        "full_numel": sum(p.numel() for p in params),
        "requires_grad": any(p.requires_grad for p in params),
        "training": bool(model.training),
    }


class GradientSizes(TrainerCallback):
    """The largest absolute gradient entry of every optimizer step, over all processes' shards."""

    def __init__(self, trainer):
        self.trainer, self.sizes = trainer, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        from torch.distributed.tensor import DTensor

        grads = [p.grad for p in self.trainer.model.parameters() if p.grad is not None]
        local = [g.to_local() if isinstance(g, DTensor) else g for g in grads]
        size = torch.stack([g.abs().max() for g in local if g.numel()]).max().reshape(1).float()
        torch.distributed.all_reduce(size, op=torch.distributed.ReduceOp.MAX)
        self.sizes.append(size.item())


def build_trainer(method, model_dir, output_dir, tokenizer, forget, retain, batching, **overrides):
    """`method`'s trainer for one SGD step (lr 1, no clipping) at `batching`; precomputed values (adversarial
    targets, NPO's reference log-probabilities) are cached in `<output_dir>/../cache`, so a method's second
    batching reads what its first wrote."""
    batch, accumulation = BATCHINGS[batching]
    values = dict(
        output_dir=output_dir,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        max_grad_norm=0.0,
        dataloader_drop_last=True,
        backward_per_objective=True,  # the route decides whether it applies (never under 2 processes)
        cache_dir=os.path.join(os.path.dirname(output_dir), "cache"),
        **METHOD_CONFIG.get(method, {}),
    )
    values.update(overrides)
    trainer, _ = build_method_trainer(method, model_dir, forget, retain, Path(output_dir), tokenizer, **values)
    return trainer


def losses(trainer) -> list[dict]:
    return [
        {k: h[k] for k in ("step", "loss", "forget_loss", "retain_loss") if k in h}
        for h in trainer.state.log_history
        if "loss" in h
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("ddp", "fsdp2"), required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    torch.set_num_threads(1)  # two processes on two cores
    out = os.path.join(options.out, options.engine)
    tokenizer = AutoTokenizer.from_pretrained(options.model_dir)
    forget = chunk_documents(make_documents(16, seed=11, min_words=3, max_words=30), tokenizer, max_length=32)
    retain = chunk_documents(make_documents(16, seed=12, min_words=3, max_words=30), tokenizer, max_length=32)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    result: dict = {"first_step": {}, "route": {}}

    def build(method, output_dir, batching, **overrides):
        return build_trainer(method, options.model_dir, output_dir, tokenizer, forget, retain, batching, **overrides)

    for method in METHODS:
        for batching in BATCHINGS:
            trainer = build(method, os.path.join(out, f"{method}-{batching}"), batching)
            trainer.train()
            key = f"{method}-{batching}"
            result["first_step"][key] = trainer.state.log_history[0]
            result["route"][key] = trainer.loss_route().describe()
            weights = full_weights(trainer)
            if rank0:
                torch.save(weights, os.path.join(out, f"{key}.pt"))
            if key == "ga_kl-1x2":
                result["engine"] = {
                    "distributed_type": str(trainer.accelerator.distributed_type),
                    "fsdp2": bool(trainer.accelerator.is_fsdp2),
                    "world_size": trainer.accelerator.num_processes,
                    "mixed_precision": trainer.accelerator.mixed_precision,
                }
                result["policy"] = layout(trainer.model)
                result["reference"] = layout(trainer.ref_model)
            del trainer

    run = dict(
        max_steps=RUN_STEPS,
        learning_rate=RUN_LR,
        optim_args=f"momentum={RUN_MOMENTUM}",
        save_strategy="steps",
        save_steps=SAVE_STEPS,
    )
    full = build("ga_kl", os.path.join(out, "full"), "1x2", **run)
    sizes = GradientSizes(full)
    full.add_callback(sizes)
    full.train()
    full.save_model(os.path.join(out, "final"))
    result["full"], result["gradient_sizes"] = losses(full), sizes.sizes
    result["run"] = {
        "max_steps": RUN_STEPS,
        "save_steps": SAVE_STEPS,
        "learning_rate": RUN_LR,
        "momentum": RUN_MOMENTUM,
    }
    del full
    resumed = build("ga_kl", os.path.join(out, "resumed"), "1x2", **run)
    resumed.train(resume_from_checkpoint=os.path.join(out, "full", f"checkpoint-{SAVE_STEPS}"))
    result["resumed"] = losses(resumed)
    if rank0:
        with open(os.path.join(out, "result.json"), "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
    exit_worker()
