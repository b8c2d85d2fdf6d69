"""`UnlearningTrainer` as a drop-in for `transformers.Trainer`: what a Trainer script does works with the class
swapped."""

import datasets
import pytest

from hf_unlearn import GradientAscentTrainer, chunk_documents
from tests.conftest import make_documents, unlearning_args


def test_raw_eval_sets_are_tokenised_like_the_forget_set(tiny_model, tokenizer, tmp_path):
    """Evaluation during training on raw data (a `text` set, and a dict holding a `prompt`/`completion` set) runs, and
    each eval loss is the one of the same data tokenised by hand (chunk_documents / encode_prompt_completion): the
    same examples in the same order, so the same mean NLL up to float32 summation order (1e-5 relative)."""
    from hf_unlearn.data import encode_prompt_completion

    texts = make_documents(4, seed=3)
    pairs = [{"prompt": "Question: who sleeps\nAnswer: ", "completion": "the small cat"}] * 2
    raw = {"text": datasets.Dataset.from_dict({"text": texts}), "qa": datasets.Dataset.from_list(pairs)}
    args = unlearning_args("ga", tmp_path, max_steps=2, eval_strategy="steps", eval_steps=1, max_length=32)
    forget = datasets.Dataset.from_dict({"text": make_documents(8, seed=1)})
    trainer = GradientAscentTrainer(
        model=tiny_model, args=args, train_dataset=forget, eval_dataset=raw, processing_class=tokenizer
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "eval_text_loss" in entry]
    assert [entry["step"] for entry in logged] == [1, 2]
    by_hand = {
        "text": chunk_documents(texts, tokenizer, max_length=32),
        "qa": datasets.Dataset.from_list(
            [encode_prompt_completion(tokenizer, p["prompt"], p["completion"], 32) for p in pairs]
        ),
    }
    for name, dataset in by_hand.items():
        expected = trainer.evaluate(eval_dataset=dataset)["eval_loss"]
        assert trainer.evaluate(eval_dataset=raw[name])["eval_loss"] == pytest.approx(expected, rel=1e-5)
        assert trainer.evaluate()[f"eval_{name}_loss"] == pytest.approx(expected, rel=1e-5)
