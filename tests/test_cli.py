"""The hf-unlearn command line."""

import json
import os

import pytest

from hf_unlearn import cli
from tests.conftest import make_documents


def test_methods_lists_every_method_in_paper_order(capsys):
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert names[:5] == ["ga", "random_label", "adversarial", "ga_descent", "ga_kl"]
    assert "GA + KL" in out
    rows = {line.split()[0]: line.split()[1:4] for line in out.splitlines()[1:]}
    assert rows["ga_kl"] == ["ga", "kl", "yes"] and rows["npo"] == ["npo", "nll", "once"]  # NPO holds no reference


def test_unknown_accelerate_config_names_the_choices():
    with pytest.raises(SystemExit, match=r"unknown accelerate config 'zero9'"):
        cli.resolve_accelerate_config("zero9")


def test_bundled_accelerate_configs_resolve():
    configs = cli.accelerate_configs()
    for name in ("ddp", "zero2", "zero3"):
        assert name in configs and os.path.isfile(cli.resolve_accelerate_config(name))


def test_train_runs_the_recipe(trained_model_dir, tmp_path):
    """`hf-unlearn train` with a local model and JSONL data: trains, saves the model and its card (exit status 0)."""
    for split, seed in (("forget", 1), ("retain", 2), ("approx", 3)):
        (tmp_path / f"{split}.jsonl").write_text(
            "\n".join(json.dumps({"text": t}) for t in make_documents(4, seed=seed))
        )
    out = tmp_path / "run"
    code = cli.main(
        [
            "train",
            "--method",
            "ga_descent",
            "--model_name_or_path",
            trained_model_dir,
            "--forget_data",
            str(tmp_path / "forget.jsonl"),
            "--retain_data",
            str(tmp_path / "retain.jsonl"),
            "--approximate_data",
            str(tmp_path / "approx.jsonl"),
            "--max_length",
            "32",
            "--max_steps",
            "2",
            "--output_dir",
            str(out),
            "--use_cpu",
            "true",
            "--report_to",
            "none",
        ]
    )
    assert code == 0
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()


def test_traces_lists_and_removes_exactly_what_runs_leave(tmp_path, capsys):
    """Checkpoints, TensorBoard runs, best/ and cached per-example values are listed, then removed on request; the
    model, the demo's converted model and anything a link points to stay."""
    out, cache, outside = tmp_path / "out", tmp_path / "cache", tmp_path / "outside"
    for folder in (
        out / "checkpoint-1",
        out / "runs" / "Nov29",
        out / "best",
        cache / "precomputed",
        cache / "adversarial",
        cache / "SmolLM2-135M-Instruct",
        outside,
    ):
        folder.mkdir(parents=True)
    for path in (
        out / "checkpoint-1" / "optimizer.pt",
        out / "runs" / "Nov29" / "events.out.tfevents.1",
        out / "best" / "model.safetensors",
        out / "model.safetensors",
        out / "README.md",
        cache / "precomputed" / "abc.pt",
        cache / "adversarial" / "def.pt",
        cache / "SmolLM2-135M-Instruct" / "config.json",
        outside / "keep.txt",
    ):
        path.write_text("x")
    os.symlink(outside, out / "checkpoint-2")
    listed = [
        out / "best",
        out / "checkpoint-1",
        out / "checkpoint-2",
        out / "runs",
        cache / "precomputed" / "abc.pt",
        cache / "adversarial" / "def.pt",
    ]

    assert cli.main(["traces", "--output_dir", str(out), "--cache_dir", str(cache)]) == 0
    text = capsys.readouterr().out
    assert all(str(path) in text for path in listed) and "6 trace(s)" in text
    assert str(out / "model.safetensors") not in text and "SmolLM2" not in text
    assert all(path.exists() for path in listed)  # listing deletes nothing

    assert cli.main(["traces", "--output_dir", str(out), "--cache_dir", str(cache), "--remove"]) == 0
    text = capsys.readouterr().out
    assert all(f"removed {path}" in text for path in listed) and "Removed 6 trace(s)." in text
    assert not any(os.path.lexists(path) for path in listed)
    for kept in (
        out / "model.safetensors",
        out / "README.md",
        cache / "SmolLM2-135M-Instruct" / "config.json",
        outside / "keep.txt",
    ):
        assert kept.exists(), kept
    assert cli.main(["traces", "--output_dir", str(out), "--cache_dir", str(cache)]) == 0
    assert "No traces found" in capsys.readouterr().out


def test_traces_uses_hf_unlearn_cache_and_names_a_missing_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "precomputed").mkdir(parents=True)
    (tmp_path / "cache" / "precomputed" / "targets.pt").write_text("x")
    assert cli.main(["traces"]) == 0
    assert "targets.pt" in capsys.readouterr().out
    assert cli.main(["traces", "--output_dir", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
