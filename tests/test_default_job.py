"""The embedded default job's data and report (the model download itself is exercised by `make demo`)."""

import os

from hf_unlearn.callbacks import EvalRecord
from hf_unlearn.scripts.demo import FORGET_MODULES, RETAIN_MODULES, default_splits, summary_table, unseen_texts


def test_default_splits_are_full_chunks_of_disjoint_sources(tokenizer):
    splits = default_splits(tokenizer, max_length=32)
    assert set(splits) == {"forget", "retain", "approximate"}
    for name, data in splits.items():
        assert len(data) == 16, name
        assert all(len(ids) == 32 for ids in data["input_ids"]), name
    assert not set(FORGET_MODULES) & set(RETAIN_MODULES)
    # The unseen set is a frozen, checksummed snapshot of this package's November 2026 source (issue 14 item 7: the
    # live source made the demo's numbers drift with every code change).
    texts = unseen_texts()
    assert len(texts) == 72 and any("class UnlearningTrainer" in text for text in texts)


def test_unseen_snapshot_is_verified(tmp_path, monkeypatch):
    """A snapshot that is not the demo's fixed set is refused rather than silently changing the numbers."""
    import gzip
    import json

    import pytest

    from hf_unlearn.scripts import demo

    other = tmp_path / "other.jsonl.gz"
    with gzip.open(other, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"path": "x.py", "text": "print(1)"}) + "\n")
    monkeypatch.setattr(demo, "UNSEEN_SNAPSHOT", str(other))
    with pytest.raises(RuntimeError, match="does not hold the demo's fixed non-member set"):
        demo.unseen_texts()


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


def attacks(**values):
    """{attack: {"auc", "auc_low", "auc_high"}} from attack=(auc, low, high)."""
    return {name: {"auc": a, "auc_low": lo, "auc_high": hi} for name, (a, lo, hi) in values.items()}


NLL = {"forget": 2.5, "approximate": 3.0, "retain": 2.4}


def test_summary_shows_loss_and_the_strongest_attack_with_intervals():
    """The strongest attack is the largest |AUC - 0.5| *after* unlearning (min_k_20 here), not before (min_k_plus_plus_10)."""
    before = EvalRecord(step=0, nll=NLL, mia_auc=0.80, attacks=attacks(
        loss=(0.80, 0.66, 0.93), min_k_20=(0.93, 0.85, 0.99), min_k_plus_plus_10=(0.97, 0.90, 1.0)))
    after = EvalRecord(step=6, nll=NLL, mia_auc=0.56, attacks=attacks(
        loss=(0.56, 0.37, 0.74), min_k_20=(0.80, 0.64, 0.93), min_k_plus_plus_10=(0.45, 0.27, 0.64)))
    text = summary_table(before, after, "target reached")
    loss_row = next(line for line in text.splitlines() if line.startswith("LOSS attack AUC"))
    assert "0.800 [0.660, 0.930]" in loss_row and "0.560 [0.370, 0.740]" in loss_row
    strongest_row = next(line for line in text.splitlines() if line.startswith("strongest:"))
    assert "min_k_20" in strongest_row and "0.930 [0.850, 0.990]" in strongest_row and "0.800 [0.640, 0.930]" in strongest_row
    assert "NOT FORGOTTEN" in text and "1 of 3 attacks" in text  # min_k_20 still separates: not declared a success
    assert "WARNING" not in text and "OVER-UNLEARNED" not in text  # the start gap is established


def test_summary_warns_when_the_start_gap_is_not_established():
    before = EvalRecord(step=0, nll=NLL, mia_auc=0.62, attacks=attacks(loss=(0.62, 0.49, 0.74), min_k_20=(0.65, 0.52, 0.78)))
    after = EvalRecord(step=3, nll=NLL, mia_auc=0.52, attacks=attacks(loss=(0.52, 0.38, 0.66), min_k_20=(0.55, 0.41, 0.69)))
    text = summary_table(before, after, "target reached")
    assert "WARNING" in text and "[0.490, 0.740] contains 0.5" in text and "not established" in text
    assert "All 2 attacks' AUC intervals contain 0.5" in text
    # The same run with a start interval above 0.5: no warning.
    established = EvalRecord(step=0, nll=NLL, mia_auc=0.62, attacks=attacks(loss=(0.62, 0.51, 0.74), min_k_20=(0.65, 0.52, 0.78)))
    assert "WARNING" not in summary_table(established, after, "target reached")


def test_summary_reports_over_unlearning_as_such():
    before = EvalRecord(step=0, nll=NLL, mia_auc=0.8, attacks=attacks(loss=(0.8, 0.66, 0.93), min_k_plus_plus_20=(0.9, 0.8, 0.98)))
    after = EvalRecord(step=9, nll=NLL, mia_auc=0.5, attacks=attacks(loss=(0.5, 0.33, 0.67), min_k_plus_plus_20=(0.19, 0.06, 0.35)))
    text = summary_table(before, after, "target reached")
    assert "strongest: min_k_plus_plus_20" in text and "OVER-UNLEARNED (not a success)" in text
    assert "All 2 attacks" not in text


def test_embedded_default_config_ships_in_the_package_and_may_show_samples():
    """The default job's YAML is package data (works after pip install); its public stdlib data may be shown."""
    from hf_unlearn.scripts.args import DEFAULT_CONFIG, parse_args

    assert DEFAULT_CONFIG.startswith(os.path.dirname(__import__("hf_unlearn").__file__)) and os.path.isfile(DEFAULT_CONFIG)
    args, script, model_args = parse_args(["--config", DEFAULT_CONFIG])
    assert script.show_forget_samples and model_args.model_name_or_path is None and args.method == "ga_descent"
    assert script.mia_attacks == "all" and script.stopping_rule == "paper"
    _, default, _ = parse_args(["--output_dir", "x"])
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
    assert "LOSS attack AUC" in out and "strongest: " in out and "of 21 attacks" in out
    assert result["after"].step == 1 and (tmp_path / "out" / "model.safetensors").exists()
    # The model card has every attack's AUC with its interval (numbers only).
    card = (tmp_path / "out" / "README.md").read_text()
    for name in ("eval_mia_auc_loss", "eval_mia_auc_min_k_20_low", "eval_mia_auc_min_k_plus_plus_100_high"):
        assert name in card, name
