"""The evaluation report's verdict: forgotten / not forgotten / over-unlearned / cannot tell, from the attacks' AUC
intervals (forget vs unseen), the first model establishing the gap."""

import json
import math

import pytest

from hf_unlearn.evaluation.report import ModelEvaluation, markdown_report, model_verdicts, save_evaluation
from hf_unlearn.evaluation.verdict import (
    CANNOT_TELL,
    FORGOTTEN,
    NOT_FORGOTTEN,
    OVER_UNLEARNED,
    conclude,
    report_attacks,
)


def attacks(**values):
    """{attack: {"auc", "auc_low", "auc_high"}} from attack=(auc, low, high)."""
    return {name: {"auc": a, "auc_low": lo, "auc_high": hi} for name, (a, lo, hi) in values.items()}


GAP = attacks(loss=(0.80, 0.66, 0.93), min_k_20=(0.85, 0.70, 0.95))  # the original model: LOSS excludes 0.5
NO_GAP = attacks(loss=(0.58, 0.45, 0.70), min_k_20=(0.60, 0.47, 0.72))  # LOSS contains 0.5


@pytest.mark.parametrize(
    "after, start, label, reason",
    [
        (
            attacks(loss=(0.52, 0.40, 0.64), min_k_20=(0.48, 0.35, 0.60)),
            GAP,
            FORGOTTEN,
            "All 2 attacks' AUC intervals contain 0.5",
        ),
        (
            attacks(loss=(0.52, 0.40, 0.64), min_k_20=(0.75, 0.60, 0.88)),
            GAP,
            NOT_FORGOTTEN,
            "1 of 2 attacks still separate forget from unseen data (AUC interval entirely above 0.5, e.g. min_k_20 0.750 [0.600, 0.880])",
        ),
        (
            attacks(loss=(0.30, 0.18, 0.44), min_k_20=(0.50, 0.38, 0.62)),
            GAP,
            OVER_UNLEARNED,
            "1 of 2 attacks have an AUC interval entirely below 0.5 (e.g. loss 0.300 [0.180, 0.440])",
        ),
        (
            attacks(loss=(0.52, 0.40, 0.64)),
            NO_GAP,
            CANNOT_TELL,
            "but so does the original model's LOSS interval [0.450, 0.700]",
        ),
        (attacks(loss=(0.52, 0.40, 0.64)), None, CANNOT_TELL, "no original model was evaluated"),
        # Intervals on both sides: the one farthest from 0.5 decides (0.5 - 0.40 = 0.10 below > 0.55 - 0.5 above).
        (attacks(loss=(0.25, 0.12, 0.40), min_k_20=(0.65, 0.55, 0.75)), GAP, OVER_UNLEARNED, "1 of 2 attacks"),
        (attacks(loss=(0.45, 0.30, 0.49), min_k_20=(0.85, 0.70, 0.95)), GAP, NOT_FORGOTTEN, "1 of 2 attacks"),
    ],
)
def test_conclude(after, start, label, reason):
    verdict = conclude(after, start)
    assert verdict.label == label and reason in verdict.reason
    assert "\n" not in verdict.reason and verdict.reason.endswith(".")


def test_no_interval_no_verdict():
    """An AUC without a bootstrap interval (n_resamples=0) decides nothing."""
    assert conclude(attacks(loss=(0.9, math.nan, math.nan)), GAP) is None
    assert conclude({}, GAP) is None


def metrics(values):
    """An evaluation's metrics as `evaluate_model` writes them (intervals as `auc_ci`)."""
    return {
        "splits": {"forget": {"nll": 2.0, "examples": 4}},
        "membership_inference": {
            "members": "forget",
            "nonmembers": "approximate",
            "orientation": "higher = member",
            "attacks": {name: {"auc": v["auc"], "auc_ci": [v["auc_low"], v["auc_high"]]} for name, v in values.items()},
        },
    }


def test_report_leads_with_each_models_verdict(tmp_path):
    """report.md opens with the verdict of every model (the original judged alone, the unlearned one against it)
    before any table, and evaluation.json holds the same verdicts."""
    results = {"before": metrics(GAP), "after": metrics(attacks(loss=(0.52, 0.40, 0.64), min_k_20=(0.49, 0.36, 0.61)))}
    assert report_attacks(results["before"]) == GAP
    verdicts = model_verdicts(results)
    assert {label: v.label for label, v in verdicts.items()} == {"before": NOT_FORGOTTEN, "after": FORGOTTEN}
    report = markdown_report(results)
    assert report.index("## Verdict") < report.index("## Language modelling") < report.index("## Membership inference")
    assert "- `before`: **not forgotten**: 2 of 2 attacks still separate" in report
    assert "- `after`: **forgotten**: All 2 attacks' AUC intervals contain 0.5" in report
    evaluations = {label: ModelEvaluation(values) for label, values in results.items()}
    save_evaluation(evaluations, str(tmp_path), plot_attacks=())
    written = json.loads((tmp_path / "evaluation.json").read_text())
    assert written["verdicts"]["after"] == {"verdict": FORGOTTEN, "reason": verdicts["after"].reason}
    assert (tmp_path / "report.md").read_text().startswith(report)


def test_original_model_alone_without_a_gap_cannot_tell():
    """`hf-unlearn eval` of one model whose every interval contains 0.5: nothing shows there was a gap to remove."""
    verdict = model_verdicts({"original": metrics(NO_GAP)})["original"]
    assert verdict.label == CANNOT_TELL and "gap was never established" in verdict.reason


def test_report_without_membership_inference_has_no_verdict():
    assert "## Verdict" not in markdown_report({"m": {"splits": {"forget": {"nll": 2.0}}}})


def _attacks(**intervals):
    """{attack: (low, high)} -> the verdict functions' attack records (AUC at the interval's middle)."""
    return {
        name: {"auc": (low + high) / 2, "auc_low": low, "auc_high": high} for name, (low, high) in intervals.items()
    }


def test_missed_window_says_when_the_attacks_disagree():
    """Step 4: min_k_30 still above 0.5 ([0.527, 0.883]); step 5: min_k_plus_plus_100 below ([0.121, 0.492]); no
    evaluation had every interval containing 0.5, so the line names both attacks with their intervals."""
    from hf_unlearn.evaluation.verdict import missed_window

    history = [
        (0, _attacks(loss=(0.69, 0.96), min_k_30=(0.80, 0.99), min_k_plus_plus_100=(0.60, 0.91))),
        (4, _attacks(loss=(0.42, 0.81), min_k_30=(0.527, 0.883), min_k_plus_plus_100=(0.30, 0.70))),
        (5, _attacks(loss=(0.33, 0.74), min_k_30=(0.45, 0.80), min_k_plus_plus_100=(0.121, 0.492))),
    ]
    line = missed_window(history)
    assert "step 4 min_k_30" in line and "[0.527, 0.883]" in line
    assert "step 5 min_k_plus_plus_100" in line and "[0.121, 0.492]" in line


def test_missed_window_is_silent_when_a_step_was_forgotten_or_never_over():
    from hf_unlearn.evaluation.verdict import missed_window

    forgotten_then_over = [
        (0, _attacks(loss=(0.7, 0.9))),
        (1, _attacks(loss=(0.4, 0.6))),
        (2, _attacks(loss=(0.1, 0.3))),
    ]
    never_over = [(0, _attacks(loss=(0.7, 0.9))), (1, _attacks(loss=(0.55, 0.8)))]
    over_from_a_start_with_nothing_above = [(0, _attacks(loss=(0.45, 0.9))), (1, _attacks(loss=(0.1, 0.3)))]
    assert missed_window(forgotten_then_over) is None
    assert missed_window(never_over) is None
    assert missed_window(over_from_a_start_with_nothing_above) is None
    assert missed_window([]) is None
