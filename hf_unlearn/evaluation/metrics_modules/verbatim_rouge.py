# An `evaluate` metric module: load it with `evaluate.load(hf_unlearn.evaluation.metric_path("verbatim_rouge"))`.
# `evaluate` copies this file into its module cache and imports it there: imports are absolute, one per line.
"""Verbatim memorization: ROUGE-L of generated continuations against the true text, by hf_unlearn.evaluation.metrics."""

import datasets
import evaluate
import numpy as np

from hf_unlearn.evaluation.metrics import rouge_l

_CITATION = r"""@inproceedings{lin2004rouge,
  title={ROUGE: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew},
  booktitle={Text Summarization Branches Out},
  year={2004}
}
"""

_DESCRIPTION = r"""Verbatim memorization: ROUGE-L (longest common subsequence of words, Porter stemming, rouge_score) of
each generated continuation against the text the model was trained on, averaged over examples. After unlearning,
the forget set's ROUGE-L should fall towards that of unseen text, while the retain set's should stay.
measure="fmeasure" (the default) is what hf_unlearn's verbatim evaluation reports; measure="recall" is TOFU's
"ROUGE-L" of an answer. The per-example numbers come from hf_unlearn.evaluation.metrics.rouge_l.
"""

_KWARGS_DESCRIPTION = r"""
Args:
    predictions (list of str): generated continuations (or answers).
    references (list of str): the true texts, one per prediction.
    measure (str, optional): "fmeasure" (default), "recall" or "precision".
    use_aggregator (bool, optional): True (default): the mean; False: one value per example.
Returns:
    rouge_l (float, or list of float with use_aggregator=False): ROUGE-L of the predictions.
Examples:
    "the cat sat" against "the cat sat down": LCS 3 words, precision 3/3, recall 3/4, F-measure 6/7.

    >>> rouge = evaluate.load(hf_unlearn.evaluation.metric_path("verbatim_rouge"))
    >>> rouge.compute(predictions=["the cat sat"], references=["the cat sat down"])["rouge_l"]
    0.8571428571428571
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VerbatimRouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://aclanthology.org/W04-1013/"],
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions, references, measure="fmeasure", use_aggregator=True):
        scores = rouge_l(list(predictions), list(references), measure=measure)
        if use_aggregator:
            return {"rouge_l": float(np.mean(scores)) if scores.size else float("nan")}
        return {"rouge_l": scores.tolist()}
