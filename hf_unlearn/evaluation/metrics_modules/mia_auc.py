# An `evaluate` metric module: load it with `evaluate.load(hf_unlearn.evaluation.metric_path("mia_auc"))`.
# `evaluate` copies this file into its module cache and imports it there: imports are absolute, one per line.
"""Membership inference: AUC and TPR at low FPR of attack scores, members against non-members (hf_unlearn)."""

import datasets
import evaluate
import numpy as np

from hf_unlearn.evaluation.membership import DEFAULT_FPRS, summarize_attack, unresolved_fprs
from hf_unlearn.evaluation.uncertainty import DEFAULT_CONFIDENCE

_CITATION = r"""@inproceedings{yao2024machine,
  title={Machine Unlearning of Pre-trained Large Language Models},
  author={Yao, Jin and Chien, Eli and Du, Minxin and Niu, Xinyao and Wang, Tianhao and Cheng, Zezhou and Yue, Xiang},
  booktitle={Proceedings of the 62nd Annual Meeting of the Association for Computational Linguistics},
  year={2024}
}
@inproceedings{carlini2022membership,
  title={Membership Inference Attacks From First Principles},
  author={Carlini, Nicholas and Chien, Steve and Nasr, Milad and Song, Shuang and Terzis, Andreas and Tramer, Florian},
  booktitle={IEEE Symposium on Security and Privacy},
  year={2022}
}
"""

_DESCRIPTION = r"""Membership-inference summary of one attack: the area under the ROC curve of members (examples the model
was trained on, e.g. the forget set) against non-members (examples it never saw), and the true positive rate at
a false positive rate of at most 1% and 5% (Carlini et al. 2022). Scores are oriented so that higher = more
likely a member (e.g. the LOSS attack's -mean NLL). An AUC of 0.5 means the members look like unseen data, the
target of unlearning; above 0.5 they still stand out; below 0.5 they stand out the other way (over-unlearning).

A TPR at an FPR that the non-members cannot resolve (fewer than ceil(1 / FPR) of them: with 4 non-members one
false positive is already 25%) is withheld as None, with the reason under "tpr_withheld". With n_resamples > 0
every number gets a seeded stratified bootstrap percentile interval ("<name>_ci": [low, high]).

The numbers come from hf_unlearn.evaluation (membership.summarize_attack, metrics.roc_auc / tpr_at_fpr,
uncertainty.bootstrap_auc / bootstrap_tpr_at_fpr); this module only gathers the inputs.
"""

_KWARGS_DESCRIPTION = r"""
Args:
    predictions (list of float): attack score of each example, higher = more likely a member.
    references (list of int): 1 for a member, 0 for a non-member.
    members (list of float, optional): instead of predictions/references, the members' scores ...
    nonmembers (list of float, optional): ... and the non-members' scores (both, or neither).
    fprs (list of float, optional): FPRs to report the TPR at, default (0.01, 0.05).
    n_resamples (int, optional): bootstrap resamples for the intervals, default 0 (no intervals; 1000 is usual).
    confidence (float, optional): interval coverage, default 0.95.
    seed (int, optional): bootstrap seed, default 0 (the same inputs and seed give the same interval).
Returns:
    auc (float): ROC AUC of members against non-members (nan when a score is nan).
    tpr@1%fpr, tpr@5%fpr (float or None): highest TPR at FPR <= 1% / 5%; None when the non-members cannot resolve it.
    auc_ci, tpr@1%fpr_ci, ... (list of 2 floats or None): bootstrap intervals, only with n_resamples > 0.
    n_members, n_nonmembers (int): how many examples of each.
    tpr_withheld (dict, only when a TPR is withheld): why, for each withheld TPR.
Examples:
    Members [3, 2], non-members [1, 2.5]: of the 4 member/non-member pairs, (3, 1), (3, 2.5) and (2, 1) are
    ordered correctly and (2, 2.5) is not, so AUC = 3/4. Four non-members cannot resolve an FPR of 1% or 5%.

    >>> mia = evaluate.load(hf_unlearn.evaluation.metric_path("mia_auc"))
    >>> mia.compute(members=[3, 2], nonmembers=[1, 2.5])["auc"]
    0.75
    >>> mia.compute(predictions=[3, 2, 1, 2.5], references=[1, 1, 0, 0])["tpr@1%fpr"] is None
    True
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MiaAuc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int32")}
            ),
            reference_urls=["https://arxiv.org/abs/2112.03570", "https://arxiv.org/abs/2402.15159"],
        )

    def compute(self, *, predictions=None, references=None, members=None, nonmembers=None, **kwargs):
        """`evaluate`'s compute, also taking the two groups of scores as `members=` and `nonmembers=`."""
        if members is not None or nonmembers is not None:
            if members is None or nonmembers is None or predictions is not None or references is not None:
                raise ValueError(
                    "Pass either members= and nonmembers= (scores of each group) or predictions= and references= "
                    "(scores and 1/0 membership labels), not a mix."
                )
            members = np.asarray(members, dtype=np.float64).ravel()
            nonmembers = np.asarray(nonmembers, dtype=np.float64).ravel()
            predictions = np.concatenate([members, nonmembers]).tolist()
            references = [1] * members.size + [0] * nonmembers.size
        return super().compute(predictions=predictions, references=references, **kwargs)

    def _compute(
        self, predictions, references, fprs=DEFAULT_FPRS, n_resamples=0, confidence=DEFAULT_CONFIDENCE, seed=0
    ):
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references)
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(
                f"references must be membership labels, 1 (member) or 0 (non-member); got {sorted(set(labels.tolist()))}."
            )
        members = scores[labels == 1]
        nonmembers = scores[labels == 0]
        fprs = tuple(float(fpr) for fpr in fprs)
        result = summarize_attack(members, nonmembers, fprs, n_resamples=n_resamples, confidence=confidence, seed=seed)
        result["n_members"] = int(members.size)
        result["n_nonmembers"] = int(nonmembers.size)
        withheld = unresolved_fprs(int(nonmembers.size), fprs)
        if withheld:
            result["tpr_withheld"] = withheld
        return result
