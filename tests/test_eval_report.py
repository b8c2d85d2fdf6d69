"""The evaluation report (`hf_unlearn.evaluation.report`, with its plots): `evaluate_model` on a tiny Llama, its
Markdown, a model that blew up, and the evaluate recipe that writes JSON, Markdown and PNGs."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_evaluate_model_report_and_plots(tmp_path, trained_model_dir, tokenizer, forget_data, retain_data):
    from transformers import AutoModelForCausalLM

    from hf_unlearn.evaluation import evaluate_model, markdown_report
    from hf_unlearn.evaluation.plots import plot_roc_curves, plot_score_histograms, plot_training_curves

    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    from hf_unlearn import chunk_documents
    from tests.conftest import make_documents

    unseen = chunk_documents(make_documents(8, seed=5), tokenizer, max_length=32)
    splits = {"forget": forget_data, "approximate": unseen, "retain": retain_data}
    evaluation = evaluate_model(
        model,
        tokenizer,
        splits,
        min_k=(0.2, 1.0),
        verbatim_prefix_tokens=8,
        verbatim_continuation_tokens=8,
        verbatim_max_examples=4,
    )
    mia = evaluation.metrics["membership_inference"]["attacks"]
    assert set(mia) == {"loss", "zlib", "min_k_20", "min_k_100", "min_k_plus_plus_20", "min_k_plus_plus_100"}
    assert mia["loss"]["auc"] == pytest.approx(mia["min_k_100"]["auc"])  # Min-100% is the LOSS attack
    assert mia["loss"]["auc"] > 0.6  # the fitted model has seen the forget set, not the unseen one
    low, high = mia["loss"]["auc_ci"]
    assert low <= mia["loss"]["auc"] <= high  # the percentile interval of a bootstrap holds its point estimate here
    assert mia["loss"]["tpr@1%fpr"] is None  # 8 unseen documents cannot resolve a 1% FPR (needs 100)
    assert "tpr@1%fpr" in evaluation.metrics["membership_inference"]["unresolved_tpr"]
    nll_low, nll_high = evaluation.metrics["splits"]["forget"]["nll_ci"]
    assert nll_low <= evaluation.metrics["splits"]["forget"]["nll"] <= nll_high
    report = markdown_report({"before": evaluation.metrics, "after": evaluation.metrics})
    assert "## Membership inference" in report and "| forget | before |" in report
    assert "n/a: TPR at FPR 0.01 needs at least 100 non-members" in report
    history = [{"step": 0, "eval_forget_nll": 1.0}, {"step": 2, "eval_forget_nll": 2.0, "eval_retain_nll": 1.5}]
    for path in (
        plot_score_histograms({"m": evaluation}, str(tmp_path / "h.png")),
        plot_roc_curves({"m": evaluation}, str(tmp_path / "r.png")),
        plot_training_curves(history, str(tmp_path / "t.png")),
    ):
        assert os.path.getsize(path) > 1000
    assert plot_training_curves([{"step": 1, "loss": 1.0}], str(tmp_path / "none.png")) is None


@pytest.mark.slow
def test_evaluate_recipe(tmp_path, trained_model_dir, monkeypatch):
    """recipes/evaluate.py (run in this process) on two checkpoints with document data: JSON, Markdown, PNGs."""
    from tests.conftest import make_documents

    for name, seed in (("forget", 1), ("approximate", 5), ("retain", 2)):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in make_documents(6, seed))
        )
    state = {"log_history": [{"step": 0, "eval_forget_nll": 1.0}, {"step": 4, "eval_forget_nll": 3.0}]}
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    out = tmp_path / "report"
    argv = [
        "--model_name_or_path",
        trained_model_dir,
        "--checkpoints",
        trained_model_dir,
        "--labels",
        "before",
        "after",
        "--forget_data",
        str(tmp_path / "forget.jsonl"),
        "--approximate_data",
        str(tmp_path / "approximate.jsonl"),
        "--retain_data",
        str(tmp_path / "retain.jsonl"),
        "--max_length",
        "32",
        "--output_dir",
        str(out),
        "--min_k",
        "0.2",
        "1.0",
        "--verbatim_prefix_tokens",
        "8",
        "--verbatim_continuation_tokens",
        "8",
        "--verbatim_max_examples",
        "4",
        "--trainer_state",
        str(tmp_path / "trainer_state.json"),
    ]
    recipe = importlib.util.spec_from_file_location("evaluate_recipe", os.path.join(ROOT, "recipes", "evaluate.py"))
    module = importlib.util.module_from_spec(recipe)
    monkeypatch.setitem(sys.modules, "evaluate_recipe", module)  # dataclasses look their module up there
    recipe.loader.exec_module(module)
    module.main(argv)
    metrics_json = json.loads((out / "evaluation.json").read_text())
    assert set(metrics_json["models"]) == {"before", "after"}
    assert metrics_json["models"]["before"]["splits"]["forget"] == metrics_json["models"]["after"]["splits"]["forget"]
    assert "# Unlearning evaluation" in (out / "report.md").read_text()
    for name in ("mia_histograms_loss.png", "roc_loss.png", "training_curves.png"):
        assert (out / name).stat().st_size > 1000


def test_nan_model_evaluates_to_nan_without_crashing(tiny_model, tokenizer, forget_data, retain_data):
    """every weight nan. The evaluation reports nan NLLs and nan AUCs instead of crashing in the
    AUC computation."""
    from hf_unlearn.evaluation import evaluate_model

    with torch.no_grad():
        for parameter in tiny_model.parameters():
            parameter.fill_(math.nan)
    splits = {"forget": forget_data.select(range(4)), "approximate": retain_data.select(range(4))}
    evaluation = evaluate_model(tiny_model, tokenizer, splits, min_k=(0.5,), verbatim_prefix_tokens=None)
    assert math.isnan(evaluation.metrics["splits"]["forget"]["nll"])
    attacks = evaluation.metrics["membership_inference"]["attacks"]
    assert math.isnan(attacks["loss"]["auc"]) and math.isnan(attacks["min_k_50"]["auc"])
