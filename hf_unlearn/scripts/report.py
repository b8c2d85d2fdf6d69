"""The run report: what every unlearning run prints at its end (`summary_table`), and the verbatim continuation
samples it shows when asked (`VerbatimSampleCallback`, only with `show_forget_samples=True`: they are forget text).

Application code of `hf_unlearn.scripts.unlearn`, not library API.
"""

from __future__ import annotations

from transformers import TrainerCallback

from ..evaluation.verdict import format_auc, gap_warning, missed_window, strongest_attack, verdict_lines


def most_memorized_index(model, dataset, pad_token_id: int, accelerator=None) -> int:
    """Index of the example with the lowest mean NLL (the best candidate to show verbatim memorization)."""
    from ..evaluation.scores import score_examples

    return int(score_examples(model, dataset, pad_token_id, accelerator=accelerator).example_nll.argmin())


def continuation_sample(
    model, tokenizer, example, prefix_tokens: int = 48, new_tokens: int = 24, accelerator=None
) -> dict:
    """Greedy continuation of one chunk's prefix, with the true continuation (verbatim memorization)."""
    from ..evaluation.generation import greedy_generate
    from ..evaluation.metrics import common_prefix_length

    ids = list(example["input_ids"])
    prefix, truth = ids[:prefix_tokens], ids[prefix_tokens : prefix_tokens + new_tokens]
    generated = greedy_generate(model, [prefix], new_tokens, tokenizer.pad_token_id, accelerator=accelerator)[0]
    return {
        "prefix": tokenizer.decode(prefix),
        "truth": tokenizer.decode(truth),
        "generated": tokenizer.decode(generated),
        "exact_match_tokens": common_prefix_length(generated, truth),
    }


class VerbatimSampleCallback(TrainerCallback):
    """Greedy continuation of the most memorized example of `dataset` at the start and at the end of training.

    Runs inside `train()`, with the trainer's wrapped model on every process, so it also works under DeepSpeed
    ZeRO-3 (where the model cannot run before the trainer has wrapped it). Results: `before`, `after`.
    """

    def __init__(self, trainer, tokenizer, dataset):
        self.trainer, self.tokenizer, self.dataset = trainer, tokenizer, dataset
        self.example = self.before = self.after = None
        trainer.add_callback(self)

    def _sample(self) -> dict:
        return continuation_sample(
            self.trainer.model_wrapped, self.tokenizer, self.example, accelerator=self.trainer.accelerator
        )

    def on_train_begin(self, args, state, control, **kwargs):
        index = most_memorized_index(
            self.trainer.model_wrapped, self.dataset, self.tokenizer.pad_token_id, self.trainer.accelerator
        )
        self.example = self.dataset[index]
        self.before = self._sample()

    def on_train_end(self, args, state, control, **kwargs):
        self.after = self._sample()


def summary_table(
    before,
    after,
    stop_reason: str | None,
    sample_before: dict | None = None,
    sample_after: dict | None = None,
    held_out_retain: bool = False,
    history=None,
) -> str:
    """Before/after table of two `EvalRecord`s and the stopping reason: each split's NLL, the LOSS attack's AUC and
    the strongest attack's (largest |AUC - 0.5| after unlearning) with their bootstrap 95 percent intervals, a
    warning when the starting gap is not established, and the verdict of the attacks (over-unlearning included).
    The verbatim continuation samples (forget text) are shown only when given, which the script does only with
    `show_forget_samples=True`. `held_out_retain`: the "retain" split is held-out chunks, not the descent data
    (the embedded default job), and its row says so. `history`: every `EvalRecord` of the run, to say when no
    evaluation was forgotten by every attack because the attacks disagree (`missed_window`)."""
    width = 22
    lines = ["", f"{'':<34}{'before':>{width}}{'after':>{width}}"]
    labels = {
        "forget": "forget NLL (to unlearn)",
        "approximate": "unseen NLL (approximate set)",
        "retain": "retain NLL (held-out, to keep)" if held_out_retain else "retain NLL (to keep)",
    }
    for split, value in before.nll.items():
        lines.append(f"{labels.get(split, split + ' NLL'):<34}{value:>{width}.3f}{after.nll[split]:>{width}.3f}")
    strongest = strongest_attack(after.attacks)
    if strongest is not None and before.attacks and strongest in before.attacks and "loss" in before.attacks:
        lines.append(
            f"{'LOSS attack AUC':<34}{format_auc(before.attacks['loss']):>{width}}"
            f"{format_auc(after.attacks['loss']):>{width}}"
        )
        label = f"strongest: {strongest} AUC"
        lines.append(
            f"{label:<34}{format_auc(before.attacks[strongest]):>{width}}"
            f"{format_auc(after.attacks[strongest]):>{width}}"
        )
        lines.append(
            f"  (AUC forget vs unseen, 0.5 = indistinguishable, [bootstrap 95% interval]; strongest = largest "
            f"|AUC - 0.5| of {len(after.attacks)} attacks after unlearning)"
        )
    elif before.mia_auc is not None:
        lines.append(f"{'MIA AUC forget vs unseen (0.5 =':<34}{before.mia_auc:>{width}.3f}{after.mia_auc:>{width}.3f}")
        lines.append("  indistinguishable from unseen data)")
    window = missed_window([(r.step, r.attacks) for r in history]) if history else None
    for message in (gap_warning(before.attacks), verdict_lines(after.attacks), window):
        if message is not None:
            lines.append(message)
    lines.append(f"stopped at step {after.step}: {stop_reason or 'end of the schedule'}")
    if sample_before is not None and sample_after is not None:
        lines.append(
            "\nverbatim continuation of a forget chunk (greedy, 24 tokens; shown because show_forget_samples=True):"
        )
        lines.append(f"  prefix   : {sample_before['prefix'][-120:]!r}")
        lines.append(f"  true     : {sample_before['truth']!r}")
        lines.append(
            f"  before   : {sample_before['generated']!r} ({sample_before['exact_match_tokens']} tokens exact)"
        )
        lines.append(f"  after    : {sample_after['generated']!r} ({sample_after['exact_match_tokens']} tokens exact)")
    return "\n".join(lines)
