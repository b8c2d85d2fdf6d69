"""benchmarks/harness.py, the helpers every benchmark script shares: cell formatting, Markdown tables, atomic
report files, the machine record, the reproducing command line and the document / question-answer method split
read from the registry."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import harness
from hf_unlearn import Objective, UnlearningTrainer, list_methods, register_method, register_objective
from hf_unlearn.objectives import FORGET_OBJECTIVES
from hf_unlearn.registry import _METHODS


def test_fmt():
    assert harness.fmt(None) == "-"
    assert harness.fmt(0.0) == "0.000" and harness.fmt(0.12345) == "0.123" and harness.fmt(2.5, 1) == "2.5"
    assert harness.fmt(12345.678, 0) == "12346"  # below the default scientific threshold (1e5)
    assert harness.fmt(12345.678, 0, large=1e4) == "1.23e+04"
    assert harness.fmt(1e5) == "1.00e+05" and harness.fmt(-4e-4) == "-4.00e-04"
    assert harness.fmt(7) == "7" and harness.fmt("ga") == "ga" and harness.fmt(True) == "True"


def test_markdown_table():
    table = harness.markdown_table(["method", "AUC", "steps"], [["ga", 0.51234, 3], ["npo", None, 10]])
    assert table == "| method | AUC | steps |\n|---|---|---|\n| ga | 0.512 | 3 |\n| npo | - | 10 |"


def test_write_json_is_atomic(tmp_path):
    """A payload that fails to serialise half-way leaves the previous file as it was and no temporary file."""
    path = tmp_path / "report.json"
    harness.write_json(str(path), {"ok": 1})
    with pytest.raises(TypeError):
        harness.write_json(str(path), {"first": 1.5, "bad": object()})  # float(object()) fails mid-dump
    assert json.loads(path.read_text()) == {"ok": 1}
    assert os.listdir(tmp_path) == ["report.json"]

    with pytest.raises(TypeError):
        harness.write_json(str(tmp_path / "new" / "fresh.json"), {"bad": object()})
    assert os.listdir(tmp_path / "new") == []


def test_write_report(tmp_path):
    out = tmp_path / "results"
    paths = harness.write_report(str(out), "demo", {"rows": [1, 2]}, "# Demo\n")
    assert paths == (str(out / "demo.json"), str(out / "demo.md"))
    assert json.loads((out / "demo.json").read_text()) == {"rows": [1, 2]}
    assert (out / "demo.md").read_text() == "# Demo\n"
    assert sorted(os.listdir(out)) == ["demo.json", "demo.md"]


def test_machine_info():
    info = harness.machine_info()
    assert set(info) == {
        "cpu_model",
        "cpu_count",
        "cpus_available",
        "load_average",
        "platform",
        "python",
        "torch",
        "transformers",
        "gpu",
    }
    assert info["cpu_model"] and info["cpu_count"] >= 1 and info["torch"] and info["transformers"]
    assert info["cpus_available"] is None or 1 <= info["cpus_available"] <= info["cpu_count"]
    assert info["load_average"] is None or len(info["load_average"]) == 3


def test_command_line():
    script = os.path.join(harness.REPO, "benchmarks", "overhead.py")
    assert harness.command_line(script, ["--quick", "--out-dir", "a b"]) == (
        "python benchmarks/overhead.py --quick --out-dir 'a b'"
    )


def test_builtin_methods_split():
    documents, qa = harness.document_methods(), harness.qa_methods()
    assert sorted(documents + qa) == sorted(list_methods()) and not set(documents) & set(qa)
    assert {"idk", "idk_dpo"} <= set(qa) and {"ga", "ga_kl", "npo", "rmu"} <= set(documents)
    assert set(harness.skipped_on_documents()) == set(qa)


def register_toy_qa_method() -> None:
    """A method registered from outside the package whose forget objective builds an aligned stream."""

    @register_objective("toy_refusal")
    class ToyRefusal(Objective):
        kind = stream = "forget"
        aligned = ("toy_answers",)
        terms = ("forget_loss",)
        normalisers = ("toy_answers_tokens",)

        def loss_terms(self, batch, outputs):
            raise NotImplementedError  # never trained here

    @register_method("toy_qa")
    class ToyQATrainer(UnlearningTrainer):
        forget_loss = "toy_refusal"
        retain_loss = "none"


def test_registered_qa_method_is_classified():
    register_toy_qa_method()
    try:
        assert "toy_qa" in harness.qa_methods() and "toy_qa" not in harness.document_methods()
        reason = harness.skipped_on_documents()["toy_qa"]
        assert reason.startswith("needs question/answer data") and "'toy_refusal'" in reason
        assert "'toy_answers'" in reason
    finally:
        _METHODS.pop("toy_qa")
        FORGET_OBJECTIVES.pop("toy_refusal")
    assert "toy_qa" not in harness.qa_methods() + harness.document_methods()
