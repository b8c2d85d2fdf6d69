"""Worker for tests/test_eval_sharding.py::test_two_processes_match_one: sharded evaluation and the evaluation
callback during gradient ascent, written to JSON by the main process.

Run as `python tests/eval_worker.py MODEL_DIR OUT.json PER_DEVICE_BATCH` (1 process; the test calls `run`
in-process instead) or under `torchrun --nproc_per_node 2` with half the per-device batch (same global batch).
The splits have odd sizes, so the 2-process shards are padded.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from accelerate import PartialState  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from hf_unlearn import chunk_documents, get_method  # noqa: E402
from hf_unlearn.callbacks import StoppingCriteria, UnlearningEvalCallback  # noqa: E402
from hf_unlearn.evaluation.generation import greedy_generate  # noqa: E402
from hf_unlearn.evaluation.scores import score_examples  # noqa: E402
from tests.conftest import make_documents  # noqa: E402


def run(model_dir: str, out: str | None, per_device_batch: int) -> dict:
    state = PartialState()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    forget = chunk_documents(make_documents(5, seed=21, min_words=3, max_words=30), tokenizer, max_length=32)
    approximate = chunk_documents(make_documents(5, seed=22, min_words=3, max_words=30), tokenizer, max_length=32)
    train = chunk_documents(make_documents(8, seed=23, min_words=20, max_words=30), tokenizer, max_length=32)
    if len(forget) % 2 == 0:  # an odd number, so that one of the 2 shards is padded (whatever the chunking gives)
        forget = forget.select(range(len(forget) - 1))

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    scores = score_examples(model, forget, tokenizer.pad_token_id, batch_size=3, accelerator=state, token_scores=True)
    prompts = [list(forget[i]["input_ids"][: 2 + i]) for i in range(5)]
    generated = greedy_generate(model, prompts, 5, tokenizer.pad_token_id, None, batch_size=2, accelerator=state)

    callback = UnlearningEvalCallback(
        {"forget": forget, "approximate": approximate},
        eval_steps=1,
        criteria=StoppingCriteria(stop_at_target=False),
        attacks=("loss", "min_k_20"),
        n_resamples=100,
    )
    args = get_method("ga").config_class(
        output_dir=os.path.join(os.path.dirname(out or model_dir), "ga"),
        per_device_train_batch_size=per_device_batch,
        max_steps=3,
        learning_rate=3e-3,
        warmup_steps=0,
        lr_scheduler_type="constant",
        report_to="none",
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        seed=0,
        dataloader_drop_last=True,
    )
    trainer = get_method("ga")(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    callback.attach(trainer)
    trainer.train()

    result = {
        "world_size": state.num_processes,
        "examples": len(forget),
        "nll_sum": scores.nll_sum.tolist(),
        "tokens": scores.tokens.tolist(),
        "correct": scores.correct.tolist(),
        "token_logprobs": [values.tolist() for values in scores.token_logprobs],
        "token_zscores": [values.tolist() for values in scores.token_zscores],
        # A digest, not the token ids: continuations of forget-set prefixes are never written out.
        "generated_sha256": hashlib.sha256(json.dumps(generated).encode()).hexdigest(),
        "history": [
            {"step": r.step, **r.nll, "auc": r.mia_auc, "min_k_20": r.attacks["min_k_20"]["auc"]}
            for r in callback.history
        ],
        "target": callback.target,
    }
    if out is not None and state.is_main_process:
        with open(out, "w") as handle:
            json.dump(result, handle)
    return result


if __name__ == "__main__":
    from tests.conftest import exit_worker

    run(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    exit_worker()
