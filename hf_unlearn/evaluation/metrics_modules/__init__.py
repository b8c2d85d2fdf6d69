"""The unlearning metrics as `evaluate` metric modules, shipped inside the package and loaded offline by path.

```python
import evaluate
from hf_unlearn.evaluation import metric_path

mia = evaluate.load(metric_path("mia_auc"))
mia.compute(members=[3, 2], nonmembers=[1, 2.5])  # {"auc": 0.75, "tpr@1%fpr": None, ...}
```

| name | inputs | returns |
|---|---|---|
| `mia_auc` | attack scores (higher = member) with labels 1 / 0, or `members=` / `nonmembers=` | AUC, TPR at 1% / 5% FPR (None when the non-members cannot resolve it), optional bootstrap intervals |
| `tofu_truth_ratio` | per-record mean NLL of the paraphrased answer and of each perturbed answer (config `"ratios"`: truth ratios) | TOFU truth-ratio score and, given the retain model's ratios, forget quality |
| `verbatim_rouge` | generated continuations and their true texts | mean ROUGE-L (F-measure by default) |

Each module file is a thin wrapper: the numbers come from `hf_unlearn.evaluation` (`membership.summarize_attack`,
`metrics.truth_ratio` / `truth_ratio_score` / `forget_quality` / `rouge_l`, `uncertainty` bootstraps). `evaluate`
copies a module file into its module cache (`HF_MODULES_CACHE`) and imports it there, so the files import
`hf_unlearn` absolutely, one import per line. This package itself imports neither `evaluate` nor `datasets`.
"""

from __future__ import annotations

import os

METRIC_MODULES = ("mia_auc", "tofu_truth_ratio", "verbatim_rouge")


def metric_path(name: str) -> str:
    """Path of the `evaluate` module file `name` inside the installed package, for `evaluate.load(path)`.

    `name` is one of `METRIC_MODULES`; a trailing ".py" is accepted."""
    stem = name[:-3] if name.endswith(".py") else name
    if stem not in METRIC_MODULES:
        raise ValueError(f"Unknown hf_unlearn metric module {name!r}; choose one of {', '.join(METRIC_MODULES)}.")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{stem}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"The metric module file {path} is missing from this installation; reinstall hf_unlearn (setup.cfg ships "
            "hf_unlearn/evaluation/metrics_modules/*.py as package data)."
        )
    return path


__all__ = ["METRIC_MODULES", "metric_path"]
