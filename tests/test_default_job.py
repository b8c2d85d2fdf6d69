"""The embedded default job's data and report (the model download itself is exercised by `make demo`)."""

import os

from hf_unlearn.callbacks import EvalRecord
from hf_unlearn.scripts.demo import FORGET_MODULES, RETAIN_MODULES, default_splits, own_source_texts, summary_table


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
    # Without samples (show_forget_samples=False, the default) no forget text is shown.
    private = summary_table(before, after, "target reached")
    assert "2.500" in private and "heappush" not in private and "verbatim" not in private


def test_embedded_default_config_ships_in_the_package_and_may_show_samples():
    """The default job's YAML is package data (works after pip install); its public stdlib data may be shown."""
    from hf_unlearn.scripts.args import DEFAULT_CONFIG, parse_args

    assert DEFAULT_CONFIG.startswith(os.path.dirname(__import__("hf_unlearn").__file__)) and os.path.isfile(DEFAULT_CONFIG)
    args, script = parse_args(["--config", DEFAULT_CONFIG])
    assert script.show_forget_samples and script.model_name_or_path is None and args.method == "ga_descent"
    _, default = parse_args(["--output_dir", "x"])
    assert not default.show_forget_samples  # private by default


def test_default_job_runs_from_the_packaged_config(tokenizer, tmp_path, monkeypatch, capsys):
    """`hf-unlearn train` without arguments: the packaged YAML, the stdlib splits, the verbatim sample (public data).
    A tiny model stands in for SmolLM2 (the download itself is exercised by `make demo`)."""
    from hf_unlearn.scripts import demo
    from hf_unlearn.scripts.unlearn import main
    from hf_unlearn.testing import build_llama

    model_dir = tmp_path / "tiny"
    build_llama(len(tokenizer), hidden_size=16, layers=1, heads=2).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    monkeypatch.setattr(demo, "default_model_dir", lambda cache_dir=None: str(model_dir))
    monkeypatch.chdir(tmp_path)  # from any folder
    result = main(["--max_steps", "1", "--output_dir", str(tmp_path / "out"), "--eval_max_examples", "4"])
    out = capsys.readouterr().out
    assert "forget NLL (to unlearn)" in out and "verbatim continuation of a forget chunk" in out
    assert result["after"].step == 1 and (tmp_path / "out" / "model.safetensors").exists()
