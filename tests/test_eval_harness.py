"""lm-eval (`hf_unlearn.evaluation.harness`): the shipped local task runs offline on an in-memory model."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_lm_eval_local_task(tiny_model, tokenizer):
    """The shipped local lm-eval task runs offline on an in-memory model (12 three-way multiple-choice items)."""
    from hf_unlearn.evaluation import EXAMPLE_TASK, run_lm_eval

    results = run_lm_eval(tiny_model, tokenizer, [EXAMPLE_TASK], batch_size=4)
    accuracy = results["hf_unlearn_general_facts"]["acc,none"]
    assert 0 <= accuracy <= 1 and accuracy * 12 == pytest.approx(round(accuracy * 12))
