"""The embedded default job's data and report (the model download itself is exercised by `make demo`)."""

import os

from hf_unlearn.callbacks import EvalRecord
from hf_unlearn.default_job import FORGET_MODULES, RETAIN_MODULES, default_splits, own_source_texts, summary_table


def test_default_splits_are_full_chunks_of_disjoint_sources(tokenizer):
    splits = default_splits(tokenizer, max_length=32)
    assert set(splits) == {"forget", "retain", "approximate"}
    for name, data in splits.items():
        assert len(data) == 16, name
        assert all(len(ids) == 32 for ids in data["input_ids"]), name
    assert not set(FORGET_MODULES) & set(RETAIN_MODULES)
    # The unseen set is this package's own source code.
    import hf_unlearn

    assert len(own_source_texts()) == len([f for _, _, fs in os.walk(os.path.dirname(hf_unlearn.__file__)) for f in fs if f.endswith(".py")])


def test_summary_table_reports_every_number():
    before = EvalRecord(step=0, nll={"forget": 2.5, "approximate": 3.0, "retain": 2.4}, mia_auc=0.75)
    after = EvalRecord(step=6, nll={"forget": 3.1, "approximate": 3.2, "retain": 2.6}, mia_auc=0.45)
    sample = {"prefix": "def heappush(heap, item):", "truth": " heap.append", "generated": " heap.append", "exact_match_tokens": 3}
    text = summary_table(before, after, "target reached", sample, {**sample, "generated": " x", "exact_match_tokens": 0})
    for expected in ("2.500", "3.100", "0.750", "0.450", "stopped at step 6: target reached", "3 tokens exact", "0 tokens exact"):
        assert expected in text, expected
