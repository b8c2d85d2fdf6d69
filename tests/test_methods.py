"""Golden loss values for every registered method, on a bigram model whose probabilities are set by hand.

The bigram model's logits at position t depend only on token t: P(next | current = c) = softmax(W[c]). With

    W[0] = ln [1/2, 1/4, 1/4]
    W[1] = ln [1/4, 1/2, 1/4]
    W[2] = ln [1/3, 1/3, 1/3]

forget chunk f = [0, 1, 2] and retain chunk r = [1, 1, 0]:

    NLL(f) = mean(-ln P(1|0), -ln P(2|1)) = mean(ln 4, ln 4) = ln 4 = 1.386294
    NLL(r) = mean(-ln P(1|1), -ln P(0|1)) = mean(ln 2, ln 4) = 1.5 ln 2 = 1.039721
"""

import math

import pytest
import torch

from hf_unlearn import get_method, list_methods, register_method
from hf_unlearn.registry import _METHODS
from tests._support import LN2, LN3, LN4, W, golden_loss


def test_gradient_ascent_golden(tmp_path):
    """GA: loss = -NLL(f) = -ln 4 = -1.386294."""
    loss, _ = golden_loss("ga", tmp_path)
    assert math.isclose(loss, -LN4, rel_tol=1e-6)


def test_gradient_ascent_forget_weight(tmp_path):
    """forget_weight 0.5 halves the GA loss: -0.5 ln 4 = -0.693147."""
    loss, _ = golden_loss("ga", tmp_path, forget_weight=0.5)
    assert math.isclose(loss, -0.5 * LN4, rel_tol=1e-6)


def test_ga_descent_golden(tmp_path):
    """GA + descent: -NLL(f) + NLL(r) = -ln 4 + 1.5 ln 2 = -0.5 ln 2 = -0.346574."""
    loss, _ = golden_loss("ga_descent", tmp_path)
    assert math.isclose(loss, -0.5 * LN2, rel_tol=1e-6)


def test_ga_descent_retain_weight(tmp_path):
    """retain_weight 2: -ln 4 + 2 * 1.5 ln 2 = ln 2 = 0.693147."""
    loss, _ = golden_loss("ga_descent", tmp_path, retain_weight=2.0)
    assert math.isclose(loss, LN2, rel_tol=1e-6)


def test_ga_kl_golden(tmp_path):
    """GA + KL with a uniform reference (all logits 0) on r = [1, 1, 0].

    Both retain positions have current token 1: P_theta = [1/4, 1/2, 1/4], P_ref = [1/3, 1/3, 1/3];
    KL(P_ref || P_theta) = 1/3 (ln(4/3) + ln(2/3) + ln(4/3)) = 1/3 ln(32/27) = 0.0566330 at each position,
    so the mean is the same. Loss = -ln 4 + 0.0566330 = -1.329661.
    """
    loss, _ = golden_loss("ga_kl", tmp_path, ref_table=torch.zeros(3, 3))
    assert math.isclose(loss, -LN4 + math.log(32 / 27) / 3, rel_tol=1e-5)


def test_ga_kl_is_zero_kl_against_itself(tmp_path):
    """Reference = the policy's own weights: KL = 0, so the loss is plain GA, -ln 4."""
    loss, _ = golden_loss("ga_kl", tmp_path, ref_table=W)
    assert math.isclose(loss, -LN4, rel_tol=1e-5)


def test_adversarial_golden(tmp_path):
    """Adversarial with reference = W on f = [0, 1, 2].

    Target 1 after token 0: reference row 0 without token 1 -> [1/2, -, 1/4] -> token 0.
    Target 2 after token 1: reference row 1 without token 2 -> [1/4, 1/2, -] -> token 1.
    Policy (= W) NLL of those targets: -ln P(0|0) = ln 2 and -ln P(1|1) = ln 2; mean ln 2 = 0.693147.
    """
    loss, trainer = golden_loss("adversarial", tmp_path, ref_table=W)
    assert trainer.forget_dataset[0]["adversarial_labels"] == [-100, 0, 1]
    assert math.isclose(loss, LN2, rel_tol=1e-6)
    # The logged forget_nll is the true-label NLL of f from the same pass: sum 2 ln 4 over 2 tokens.
    total, count = trainer._term_stats[trainer.term_names.index("forget_nll")].tolist()
    assert math.isclose(total, 2 * LN4, rel_tol=1e-6) and count == 2


def test_random_label_golden(tmp_path):
    """Random labels against a uniform policy (all logits 0): every target costs ln 3 = 1.098612, whatever the
    random draw, so the loss is ln 3."""
    loss, trainer = golden_loss("random_label", tmp_path, policy_table=torch.zeros(3, 3))
    assert math.isclose(loss, LN3, rel_tol=1e-6)
    targets = trainer.forget_dataset[0]["random_labels"]
    assert targets[0] == -100 and all(0 <= t < 3 for t in targets[1:])


def test_every_method_has_a_golden_test():
    """Fails when a method is registered without a golden test (here, in tests/test_unseen_match.py, or in
    tests/test_field_methods.py, where idk, idk_dpo and rmu have golden values for their pure losses and training
    tests through the trainer)."""
    tested = {
        "ga",
        "ga_descent",
        "ga_kl",
        "adversarial",
        "random_label",
        "npo",
        "simnpo",
        "wga",
        "satimp",
        "undial",
        "idk",
        "idk_dpo",
        "rmu",
        "unseen_match",
        "unseen_match_tail",
    }
    assert {name for name in list_methods() if not name.startswith("test_")} == tested


def test_registry_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        register_method("ga")(type("Other", (get_method("ga"),), {}))
    with pytest.raises(ValueError, match="Unknown unlearning method 'gradient_ascnt'.*ga_descent"):
        get_method("gradient_ascnt")


def test_outside_code_can_register_a_method(tmp_path):
    """A method defined outside the package: descent on the forget set (loss = +NLL(f) = ln 4)."""
    from hf_unlearn import LossTerm, UnlearningTrainer
    from hf_unlearn.forward import forward
    from hf_unlearn.losses import nll_sum

    @register_method("test_descent")
    class DescentTrainer(UnlearningTrainer):
        def unlearning_terms(self, model, inputs):
            forget = inputs["forget"]
            total, count = nll_sum(forward(model, forget).logits, forget["labels"], forget["attention_mask"])
            return {"forget_loss": LossTerm(total, count, "forget", 1.0)}

    try:
        assert "test_descent" in list_methods()
        loss, _ = golden_loss("test_descent", tmp_path)
        assert math.isclose(loss, LN4, rel_tol=1e-6)
    finally:
        _METHODS.pop("test_descent")
