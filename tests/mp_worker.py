"""Worker for tests/test_multiprocess.py: unlearn with each method and write the log history as JSON.

Run as `python tests/mp_worker.py MODEL_DIR OUT.json PER_DEVICE_BATCH` (1 process) or under
`torchrun --nproc_per_node 2` with half the per-device batch (the same global batch).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from hf_unlearn import chunk_documents, get_method  # noqa: E402
from hf_unlearn.distributed import finish_distributed  # noqa: E402
from tests.conftest import make_documents  # noqa: E402

METHODS = ("ga_descent", "ga_kl")


def main(model_dir: str, out: str, batch: int) -> None:
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    forget = chunk_documents(make_documents(16, seed=11, min_words=3, max_words=30), tokenizer, max_length=32)
    retain = chunk_documents(make_documents(16, seed=12, min_words=3, max_words=30), tokenizer, max_length=32)
    histories = {}
    for method in METHODS:
        cls = get_method(method)
        args = cls.config_class(
            output_dir=os.path.join(os.path.dirname(out), method), per_device_train_batch_size=batch, max_steps=4,
            learning_rate=3e-3, warmup_steps=0, lr_scheduler_type="constant", report_to="none", use_cpu=True,
            logging_steps=1, save_strategy="no", seed=0, dataloader_drop_last=True,
        )
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        trainer = cls(model=model, args=args, train_dataset=forget, retain_dataset=retain, processing_class=tokenizer)
        trainer.train()
        histories[method] = [h for h in trainer.state.log_history if "loss" in h]
    if int(os.environ.get("RANK", "0")) == 0:
        with open(out, "w") as handle:
            json.dump({"world_size": int(os.environ.get("WORLD_SIZE", "1")), "histories": histories}, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    finish_distributed()
