"""IDK fine-tuning (TOFU, Maini et al. 2024): answer every forget question with an "I don't know"-style refusal.

    forget_loss = NLL(idk answers to the forget questions)        (descent; normaliser `idk_tokens`)

The "idk" stream is built one-to-one from the forget set: forget example i's prompt (its masked prefix, so the
forget data must be question/answer records) with a refusal drawn for it from `IDK_ANSWERS`, seeded by
(`idk_seed`, i). The true answers are not trained on (no `forget_nll` term: the evaluation callback measures
them). Default: retain NLL weight 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data import encode_prompt_completion
from ..losses import IGNORE_INDEX, nll_sum
from .base import LossTerm, Objective, Pass, register_objective

IDK = "idk"


@dataclass
class IdkParams:
    """The hyperparameters of the objectives that answer forget questions with refusals (idk, idk_dpo).

    Parameters:
        idk_seed (`int`, *optional*, defaults to `0`):
            Seed of the refusal drawn for each forget question (with the question's index).
    """

    idk_seed: int = field(default=0, metadata={"help": "Seed of the refusal drawn for each forget question."})


# Refusals written for hf_unlearn (TOFU ships a similar list of 100); one is drawn per forget question.
IDK_ANSWERS = (
    "I don't know.",
    "I'm not sure about that.",
    "I don't have that information.",
    "I can't answer that.",
    "That's something I don't know.",
    "I have no information on that.",
    "I'm unable to say.",
    "I don't have an answer to that question.",
    "I'm afraid I can't help with that.",
    "That is not something I know about.",
    "I couldn't tell you.",
    "I have no idea.",
    "Sorry, I don't know the answer.",
    "I'm not able to answer that.",
    "I don't have any details about that.",
    "That's beyond what I know.",
)


def idk_examples(forget, tokenizer, seed: int, max_length: int | None = None) -> list[dict]:
    """For each prompt-masked forget example, the same prompt answered with a seeded refusal."""
    if tokenizer is None:
        raise ValueError("IDK objectives build refusal answers and need `processing_class=tokenizer`.")
    out = []
    for index in range(len(forget)):
        example = forget[index]
        labels = example["labels"]
        start = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), 0)
        if start == 0:
            raise ValueError(
                f"Forget example {index} has no masked prompt: IDK objectives need question/answer forget data "
                "(data_format: qa, or `prompt`/`completion` records), whose prompt they answer with a refusal."
            )
        prompt = tokenizer.decode(example["input_ids"][:start], skip_special_tokens=True)
        rng = np.random.default_rng([seed, index])
        answer = IDK_ANSWERS[int(rng.integers(len(IDK_ANSWERS)))]
        completion = answer if prompt[-1:].isspace() else " " + answer
        out.append(encode_prompt_completion(tokenizer, prompt, completion, max_length))
    return out


class IdkStream(Objective):
    """Base of the objectives that read the forget stream and its aligned "idk" stream."""

    kind = stream = "forget"
    aligned = (IDK,)
    params = IdkParams

    def aligned_streams(self, forget):
        import datasets

        records = idk_examples(forget, self.setup.processing_class, self.args.idk_seed, self.args.max_length)
        return {IDK: self.prepare_idk(datasets.Dataset.from_list(records))}

    def prepare_idk(self, dataset):
        return dataset

    def select(self, inputs):
        return inputs


@register_objective("idk")
class IdkFineTuning(IdkStream):
    terms = ("forget_loss",)
    normalisers = ("idk_tokens",)

    def passes(self):
        return {"idk": Pass(IDK)}

    def loss_terms(self, inputs, outputs):
        idk = inputs[IDK]
        total, count = nll_sum(outputs["idk"], idk["labels"], idk.get("attention_mask"), self.chunk_size)
        return {"forget_loss": LossTerm(total, count, "idk_tokens", self.args.forget_weight)}
