"""The unlearning metrics as `evaluate` modules: each loads offline by path from the package
(`evaluate.load(metric_path(name))`) and returns what the `hf_unlearn.evaluation` function returns.

Every module and data file `evaluate` writes goes under the test's tmp_path (its module cache and metric cache are
redirected, and the imported cache modules are forgotten afterwards), so nothing is left behind.
"""

from __future__ import annotations

import configparser
import fnmatch
import math
import os
import sys

import numpy as np
import pytest

import hf_unlearn
from hf_unlearn.evaluation import METRIC_MODULES, metric_path
from hf_unlearn.evaluation.membership import summarize_attack
from hf_unlearn.evaluation.metrics import (
    forget_quality,
    roc_auc,
    rouge_l,
    tpr_at_fpr,
    truth_ratio,
    truth_ratio_score,
)
from hf_unlearn.evaluation.uncertainty import bootstrap_auc, bootstrap_tpr_at_fpr, interval

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cache_module_names() -> list[str]:
    return [name for name in sys.modules if name == "evaluate_modules" or name.startswith("evaluate_modules.")]


@pytest.fixture
def load(tmp_path, monkeypatch):
    """`load(name, config_name=None)`: `evaluate.load` of a packaged module, offline, with every cache in tmp_path."""
    import evaluate

    for variable in ("HF_EVALUATE_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    # evaluate read its configuration when first imported: redirect the values it uses now.
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path / "modules")
    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", tmp_path / "metrics")
    monkeypatch.setattr(sys, "path", list(sys.path))  # evaluate appends its module cache to sys.path
    for name in _cache_module_names():  # a module cache of an earlier test: restored afterwards
        monkeypatch.delitem(sys.modules, name)

    def _load(name: str, config_name: str | None = None):
        return evaluate.load(metric_path(name), config_name, cache_dir=str(tmp_path / "metrics"))

    yield _load
    for name in _cache_module_names():
        del sys.modules[name]


# ---------------------------------------------------------------------------- packaging


def test_metric_path_points_into_the_installed_package():
    package_dir = os.path.dirname(os.path.abspath(hf_unlearn.__file__))
    for name in METRIC_MODULES:
        path = metric_path(name)
        assert os.path.isfile(path) and path.endswith(f"{name}.py")
        assert os.path.commonpath([path, package_dir]) == package_dir
        assert metric_path(f"{name}.py") == path
    with pytest.raises(ValueError, match="mia_auc"):
        metric_path("accuracy")


def test_module_files_ship_as_package_data():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(REPO, "setup.cfg"))
    patterns = parser["options.package_data"]["hf_unlearn"].split()
    package_dir = os.path.dirname(os.path.abspath(hf_unlearn.__file__))
    for name in METRIC_MODULES:
        relative = os.path.relpath(metric_path(name), package_dir).replace(os.sep, "/")
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def test_module_files_import_hf_unlearn_absolutely():
    """evaluate copies the file alone into its cache: a relative import would not resolve there."""
    from evaluate.loading import get_imports

    for name in METRIC_MODULES:
        imports = get_imports(metric_path(name))
        assert all(kind == "library" for kind, *_ in imports), imports
        assert "hf_unlearn" in {library for _, library, *_ in imports}


def test_caches_stay_in_tmp(load, tmp_path):
    load("mia_auc").compute(members=[3, 2], nonmembers=[1, 2.5])
    copied = tmp_path / "modules" / "evaluate_modules" / "metrics" / "mia_auc"
    assert list(copied.rglob("mia_auc.py"))
    assert sys.modules[_cache_module_names()[-1]].__file__.startswith(str(tmp_path))


# ---------------------------------------------------------------------------- membership inference


def test_mia_auc_hand_example(load):
    """Members [3, 2], non-members [1, 2.5]: pairs (3>1), (3>2.5), (2>1) right, (2<2.5) wrong -> AUC = 3/4.
    Two non-members cannot resolve an FPR of 1% or 5%: both TPRs are withheld."""
    result = load("mia_auc").compute(members=[3, 2], nonmembers=[1, 2.5])
    assert result["auc"] == pytest.approx(0.75)
    assert result["auc"] == roc_auc([3, 2], [1, 2.5])
    assert result["tpr@1%fpr"] is None and result["tpr@5%fpr"] is None
    assert set(result["tpr_withheld"]) == {"tpr@1%fpr", "tpr@5%fpr"}
    assert "auc_ci" not in result  # no bootstrap unless asked
    assert (result["n_members"], result["n_nonmembers"]) == (2, 2)


def test_mia_auc_withholds_tpr_at_1pct_with_four_nonmembers(load):
    members, nonmembers = [3.0, 2.0, 5.0], [1.0, 2.5, 0.5, 4.0]
    module = load("mia_auc")
    result = module.compute(predictions=members + nonmembers, references=[1, 1, 1, 0, 0, 0, 0])
    assert result["tpr@1%fpr"] is None
    assert "100 non-members" in result["tpr_withheld"]["tpr@1%fpr"]
    # Pairs ordered right: 3 beats 3 non-members, 2 beats 2, 5 beats all 4 -> 9 of 12.
    assert result["auc"] == roc_auc(members, nonmembers) == pytest.approx(9 / 12)
    # A higher FPR that 4 non-members can resolve (25%) is reported, as tpr_at_fpr computes it: one non-member
    # (4) may score above the threshold, so it lies just above 2.5 and the members 3 and 5 are found: 2/3.
    result = module.compute(members=members, nonmembers=nonmembers, fprs=[0.25])
    assert result["tpr@25%fpr"] == tpr_at_fpr(members, nonmembers, 0.25) == pytest.approx(2 / 3)
    assert "tpr_withheld" not in result


def test_mia_auc_equals_summarize_attack_with_bootstrap(load):
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(0.5, 1, 30), rng.normal(0, 1, 100)
    result = load("mia_auc").compute(members=members, nonmembers=nonmembers, n_resamples=200, seed=3)
    direct = summarize_attack(members, nonmembers, n_resamples=200, seed=3)
    assert {key: result[key] for key in direct} == direct
    assert result["tpr@1%fpr"] == tpr_at_fpr(members, nonmembers, 0.01)
    assert result["tpr@5%fpr"] == tpr_at_fpr(members, nonmembers, 0.05)
    assert result["auc_ci"] == list(interval(bootstrap_auc, members, nonmembers, n_resamples=200, seed=3))
    assert result["tpr@5%fpr_ci"] == list(
        interval(bootstrap_tpr_at_fpr, members, nonmembers, max_fpr=0.05, n_resamples=200, seed=3)
    )
    assert result["auc_ci"][0] <= result["auc"] <= result["auc_ci"][1]


def test_mia_auc_batches_and_input_errors(load):
    module = load("mia_auc")
    module.add_batch(predictions=[3, 1], references=[1, 0])
    module.add_batch(predictions=[2, 2.5], references=[1, 0])
    assert module.compute()["auc"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="not a mix"):
        module.compute(members=[1.0], predictions=[1.0], references=[1])
    with pytest.raises(ValueError, match="membership labels"):
        module.compute(predictions=[1.0, 2.0], references=[1, 2])


# ---------------------------------------------------------------------------- TOFU


def test_tofu_truth_ratio_hand_example(load):
    """Record 1: R = exp(1 - mean(1, 3)) = e^-1; record 2: R = exp(2 - 2) = 1. Forget summary: mean of
    min(R, 1/R) = (e^-1 + 1) / 2; other sets: mean of max(0, 1 - R) = (1 - e^-1) / 2."""
    paraphrased, perturbed = [1.0, 2.0], [[1.0, 3.0], [2.0]]
    module = load("tofu_truth_ratio")
    result = module.compute(paraphrased_nll=paraphrased, perturbed_nll=perturbed, return_ratios=True)
    ratios = truth_ratio(paraphrased, [np.array(values) for values in perturbed])
    assert result["truth_ratios"] == ratios.tolist() == pytest.approx([math.exp(-1), 1.0])
    assert result["truth_ratio"] == truth_ratio_score(ratios, forget=True) == pytest.approx((math.exp(-1) + 1) / 2)
    assert "forget_quality" not in result
    retain = module.compute(paraphrased_nll=paraphrased, perturbed_nll=perturbed, forget=False)
    assert retain["truth_ratio"] == truth_ratio_score(ratios, forget=False) == pytest.approx((1 - math.exp(-1)) / 2)


def test_tofu_forget_quality_equals_ks_test(load):
    rng = np.random.default_rng(1)
    unlearned, retain_model = rng.uniform(0.2, 1.0, 40), rng.uniform(0.5, 1.0, 30)
    result = load("tofu_truth_ratio", "ratios").compute(truth_ratios=unlearned, retain_model_truth_ratios=retain_model)
    assert result["forget_quality"] == forget_quality(unlearned, retain_model)
    assert 0 <= result["forget_quality"] <= 1
    assert result["truth_ratio"] == truth_ratio_score(unlearned, forget=True)
    # From NLLs, the same pipeline: the ratios computed by the module feed the KS test.
    paraphrased = rng.uniform(1, 3, 10)
    perturbed = [rng.uniform(1, 3, 3) for _ in range(10)]
    result = load("tofu_truth_ratio").compute(
        paraphrased_nll=paraphrased,
        perturbed_nll=[p.tolist() for p in perturbed],
        retain_model_truth_ratios=retain_model,
    )
    assert result["forget_quality"] == pytest.approx(forget_quality(truth_ratio(paraphrased, perturbed), retain_model))


def test_tofu_unknown_configuration(load):
    with pytest.raises(ValueError, match="ratios"):
        load("tofu_truth_ratio", "probabilities")


# ---------------------------------------------------------------------------- verbatim ROUGE


def test_verbatim_rouge_equals_rouge_l(load):
    """ "the cat sat" against "the cat sat down": LCS 3 words, P = 1, R = 3/4, F = 6/7."""
    predictions = ["the cat sat", "a dog ran far away", "nothing in common"]
    references = ["the cat sat down", "the dog ran away", "completely different words"]
    module = load("verbatim_rouge")
    result = module.compute(predictions=predictions[:1], references=references[:1])
    assert result["rouge_l"] == pytest.approx(6 / 7)
    result = module.compute(predictions=predictions, references=references)
    assert result["rouge_l"] == pytest.approx(float(np.mean(rouge_l(predictions, references))))
    per_example = module.compute(predictions=predictions, references=references, measure="recall", use_aggregator=False)
    assert per_example["rouge_l"] == rouge_l(predictions, references, measure="recall").tolist()
    assert per_example["rouge_l"][0] == pytest.approx(3 / 4) and per_example["rouge_l"][2] == 0
