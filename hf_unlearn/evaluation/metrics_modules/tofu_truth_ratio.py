# An `evaluate` metric module: load it with `evaluate.load(hf_unlearn.evaluation.metric_path("tofu_truth_ratio"))`.
# `evaluate` copies this file into its module cache and imports it there: imports are absolute, one per line.
"""TOFU truth ratio and forget quality (Maini et al. 2024), computed by hf_unlearn.evaluation.metrics."""

import datasets
import evaluate
import numpy as np

from hf_unlearn.evaluation.metrics import forget_quality, truth_ratio, truth_ratio_score

_CITATION = r"""@article{maini2024tofu,
  title={TOFU: A Task of Fictitious Unlearning for LLMs},
  author={Maini, Pratyush and Feng, Zhili and Schwarzschild, Avi and Lipton, Zachary C. and Kolter, J. Zico},
  journal={arXiv preprint arXiv:2401.06121},
  year={2024}
}
"""

_DESCRIPTION = r"""TOFU's truth ratio and forget quality, as in github.com/locuslab/tofu (aggregate_stat_eval.py).

Truth ratio of one record: R = exp(NLL(paraphrased answer) - mean_i NLL(perturbed answer i)), with per-token mean
NLLs of each answer given the question: R < 1 when the model prefers the true answer, R ~ 1 when it cannot tell
true from false. The summary ("truth_ratio", higher is better) is the mean of min(R, 1/R) on the forget set
(forget=True, the default) and the mean of max(0, 1 - R) on any other set (forget=False).

Forget quality: the p-value of the two-sample Kolmogorov-Smirnov test between the unlearned model's forget-set
truth ratios and those of a model trained on the retain set only (pass them as retain_model_truth_ratios; get
them from this module on the retain model with return_ratios=True). High (e.g. > 0.05): indistinguishable.

Configurations: "default" takes the NLLs (paraphrased_nll, perturbed_nll); "ratios" takes truth ratios already
computed (truth_ratios). The numbers come from hf_unlearn.evaluation.metrics (truth_ratio, truth_ratio_score,
forget_quality).
"""

_KWARGS_DESCRIPTION = r"""
Args:
    paraphrased_nll (list of float, config "default"): per-token mean NLL of each record's paraphrased answer.
    perturbed_nll (list of list of float, config "default"): per-token mean NLL of each record's perturbed answers.
    truth_ratios (list of float, config "ratios"): truth ratio of each record.
    forget (bool, optional): summarise as a forget set (mean of min(R, 1/R)), default True; False: mean of max(0, 1 - R).
    retain_model_truth_ratios (list of float, optional): the retain model's forget-set truth ratios; gives forget_quality.
    return_ratios (bool, optional): also return the per-record truth ratios, default False.
Returns:
    truth_ratio (float): the truth-ratio summary (higher is better).
    forget_quality (float, only with retain_model_truth_ratios): KS-test p-value.
    truth_ratios (list of float, only with return_ratios=True): per-record truth ratios.
Examples:
    Record 1: paraphrased NLL 1, perturbed NLLs [1, 3] (mean 2): R = exp(1 - 2) = exp(-1).
    Record 2: paraphrased NLL 2, perturbed NLLs [2] (mean 2): R = exp(0) = 1.
    Forget-set summary: (min(e^-1, e) + min(1, 1)) / 2 = (e^-1 + 1) / 2.

    >>> tofu = evaluate.load(hf_unlearn.evaluation.metric_path("tofu_truth_ratio"))
    >>> tofu.compute(paraphrased_nll=[1.0, 2.0], perturbed_nll=[[1.0, 3.0], [2.0]])["truth_ratio"]
    0.6839397205857212
    >>> fq = evaluate.load(hf_unlearn.evaluation.metric_path("tofu_truth_ratio"), "ratios")
    >>> fq.compute(truth_ratios=[0.2, 0.5, 0.9], retain_model_truth_ratios=[0.3, 0.6, 0.8])["forget_quality"]
    1.0
"""

_CONFIGS = ("default", "ratios")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TofuTruthRatio(evaluate.Metric):
    def _info(self):
        if self.config_name not in _CONFIGS:
            raise ValueError(f"Unknown configuration {self.config_name!r} of tofu_truth_ratio; use one of {_CONFIGS}.")
        if self.config_name == "ratios":
            features = datasets.Features({"truth_ratios": datasets.Value("float64")})
        else:
            features = datasets.Features(
                {
                    "paraphrased_nll": datasets.Value("float64"),
                    "perturbed_nll": datasets.Sequence(datasets.Value("float64")),
                }
            )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=features,
            reference_urls=["https://arxiv.org/abs/2401.06121"],
            codebase_urls=["https://github.com/locuslab/tofu"],
        )

    def _compute(
        self,
        paraphrased_nll=None,
        perturbed_nll=None,
        truth_ratios=None,
        forget=True,
        retain_model_truth_ratios=None,
        return_ratios=False,
    ):
        if truth_ratios is not None:
            ratios = np.asarray(truth_ratios, dtype=np.float64)
        else:
            ratios = truth_ratio(paraphrased_nll, [np.asarray(values, dtype=np.float64) for values in perturbed_nll])
        result = {"truth_ratio": truth_ratio_score(ratios, forget=forget)}
        if retain_model_truth_ratios is not None:
            result["forget_quality"] = forget_quality(ratios, retain_model_truth_ratios)
        if return_ratios:
            result["truth_ratios"] = ratios.tolist()
        return result
