"""Worker for tests/test_multiprocess.py: what each method does on its first step, and train_loss, as files.

Run as `python tests/mp_worker.py MODEL_DIR OUT_DIR PER_DEVICE_BATCH CACHE_DIR` (1 process) or under
`torchrun --nproc_per_node 2` with half the per-device batch (the same global batch of 4). Writes
`OUT_DIR/result.json` (first-step logs, train_loss of a 4-step run logged only at step 3) and
`OUT_DIR/<method>.pt` (the parameters after one plain SGD step with lr 1, i.e. the initial weights minus the
first gradient).
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from hf_unlearn import chunk_documents  # noqa: E402
from tests._support import METHOD_CONFIG, build_trainer  # noqa: E402
from tests.conftest import exit_worker, make_documents  # noqa: E402

METHODS = ("ga_descent", "ga_kl", "adversarial", "npo", "rmu")  # settings of RMU: tests._support.METHOD_CONFIG


def make_trainer(method, model_dir, out, batch, tokenizer, forget, retain, cache_dir, **overrides):
    """(trainer, model) for `method` at per-device batch `batch`: SGD without clipping, a constant schedule."""
    values = dict(
        output_dir=os.path.join(out, method),
        per_device_train_batch_size=batch,
        dataloader_drop_last=True,
        optim="sgd",
        max_grad_norm=0.0,
        cache_dir=cache_dir,
        **METHOD_CONFIG.get(method, {}),
    )
    values.update(overrides)
    return build_trainer(method, model_dir, forget, retain, Path(out), tokenizer, **values)


def main(model_dir: str, out: str, batch: int, cache_dir: str) -> None:
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    forget = chunk_documents(make_documents(16, seed=11, min_words=3, max_words=30), tokenizer, max_length=32)
    retain = chunk_documents(make_documents(16, seed=12, min_words=3, max_words=30), tokenizer, max_length=32)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    result = {
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "first_step": {},
        "train_loss": {},
        "gradient_in_forward": {},
    }
    for method in METHODS:
        trainer, model = make_trainer(
            method, model_dir, out, batch, tokenizer, forget, retain, cache_dir, max_steps=1, learning_rate=1.0
        )
        trainer.train()
        result["first_step"][method] = trainer.state.log_history[0]
        result["gradient_in_forward"][method] = trainer.gradient_in_forward()
        if rank0:
            torch.save({n: p.detach().clone() for n, p in model.named_parameters()}, os.path.join(out, f"{method}.pt"))
        # train_loss when the last step is not logged (logging_steps 3 of 4 steps); lr 0 keeps the model fixed.
        trainer, _ = make_trainer(
            method,
            model_dir,
            out,
            batch,
            tokenizer,
            forget,
            retain,
            cache_dir,
            max_steps=4,
            learning_rate=0.0,
            logging_steps=3,
        )
        result["train_loss"][method] = trainer.train().training_loss
    if rank0:
        with open(os.path.join(out, "result.json"), "w") as handle:
            json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
    exit_worker()
