"""Unlearn a forget set from a causal language model.

Launch commands:

    # the embedded default job (no Hub, no GPU; SmolLM2-135M from PyPI unlearns stdlib modules):
    python recipes/unlearn.py
    accelerate launch recipes/unlearn.py

    # a config file, with command-line overrides on top:
    python recipes/unlearn.py --config recipes/configs/embedded_default.yaml --method ga_kl --learning_rate 1e-3
    accelerate launch --config_file recipes/accelerate/zero3.yaml recipes/unlearn.py --config recipes/configs/yi-6b/arxiv/ga.yaml
    torchrun --nproc_per_node 8 recipes/unlearn.py --config recipes/configs/yi-6b/arxiv/ga.yaml --deepspeed recipes/deepspeed/zero3.json

    # DeepSpeed ZeRO-3 on 2 CPU processes (a launcher is required for DeepSpeed; plain python says so):
    torchrun --nproc_per_node 2 recipes/unlearn.py --config recipes/configs/small/ga_kl_zero3_cpu.yaml

Steps: parse the config -> load model and tokenizer -> build forget / retain / approximate data -> trainer (the
reference model is loaded only by methods that need it) -> attach the evaluation / stopping callback -> train
(evaluated at the start, every `eval_every_steps` and at the end) -> print before/after -> save -> optional push.
"""

from __future__ import annotations

import os
import sys

from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn import get_method
from hf_unlearn.data import build_examples
from hf_unlearn.callbacks import StoppingCriteria, UnlearningEvalCallback
from hf_unlearn.default_job import VerbatimSampleCallback, default_model_dir, default_splits, summary_table
from hf_unlearn.distributed import finish_distributed, setup_distributed
from hf_unlearn.script_args import parse_args

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "embedded_default.yaml")


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No config and no model: the embedded default job (its config, with any command-line overrides on top).
    if not any(a.split("=")[0] in ("--config", "--model_name_or_path", "--help", "-h") for a in argv):
        argv = ["--config", DEFAULT_CONFIG] + argv
    args, script = parse_args(argv)
    setup_distributed(args)  # fails early on a launch that cannot work (e.g. DeepSpeed under plain python)

    # Model and tokenizer.
    model_path = script.model_name_or_path or default_model_dir(args.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=script.dtype)

    # Data.
    if script.model_name_or_path is None:
        splits = default_splits(tokenizer, args.max_length)
    else:
        sources = {"forget": script.forget_data, "retain": script.retain_data, "approximate": script.approximate_data}
        splits = {
            name: build_examples(
                source, tokenizer, script.data_format, args.max_length, script.text_column,
                script.question_column, script.answer_column, script.max_examples,
                split=getattr(script, f"{name}_split"),
            )
            for name, source in sources.items()
            if source is not None
        }

    # Trainer.
    trainer_class = get_method(args.method)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=splits["forget"],
        retain_dataset=splits.get("retain") if trainer_class.needs_retain else None,
        ref_model=script.ref_model_name_or_path,  # None: the model's own checkpoint (or its adapter-free base)
        processing_class=tokenizer,
    )

    # Evaluation during unlearning: forget / approximate / retain NLL and the MIA AUC every few steps, on all
    # processes; with an approximate (unseen) set, stop where the paper says: forget NLL = unseen NLL at the start.
    criteria = None
    if "approximate" in splits and (script.stop_at_unseen_nll or script.max_retain_nll_increase is not None):
        criteria = StoppingCriteria(stop_at_target=script.stop_at_unseen_nll,
                                    max_retain_nll_increase=script.max_retain_nll_increase if "retain" in splits else None)
    monitor = UnlearningEvalCallback(splits, eval_steps=script.eval_every_steps, criteria=criteria,
                                     batch_size=args.per_device_eval_batch_size,
                                     max_examples=script.eval_max_examples).attach(trainer)

    # Unlearn, with a verbatim-continuation sample of the most memorized forget chunk before and after.
    sample = VerbatimSampleCallback(trainer, tokenizer, splits["forget"])
    trainer.train()
    before, after = monitor.history[0], monitor.history[-1]
    trainer.evaluation_results = {"before": before.logs("eval"), "after": after.logs("eval")}
    if trainer.is_world_process_zero():
        print(summary_table(before, after, monitor.stop_reason, sample.before, sample.after))

    # Save (16-bit weights are gathered under ZeRO-3 by save_model; the model card records the results).
    trainer.save_model(args.output_dir)
    if args.push_to_hub:
        trainer.push_to_hub()
    return {"before": before, "after": after, "stop_reason": monitor.stop_reason}


if __name__ == "__main__":
    main()
    finish_distributed()
