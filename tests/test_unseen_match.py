"""Unseen-level matching (`hf_unlearn.objectives.unseen_match`): the quantile targets, the loss, the trainer.

Golden values use the bigram model of tests/_support.py (P(next | c) = softmax(W[c])):

    W[0] = ln [1/2, 1/4, 1/4],  W[1] = ln [1/4, 1/2, 1/4],  W[2] = ln [1/3, 1/3, 1/3]

forget f = [0, 1, 2]: targets -ln P(1|0) = ln 4, -ln P(2|1) = ln 4, mean m_f = ln 4 = 1.386294;
retain r = [1, 1, 0]: mean NLL 1.5 ln 2 = 1.039721 (the retain descent term, weight 1);
unseen u1 = [2, 0]: one target, -ln P(0|2) = ln 3 = 1.098612;
unseen u2 = [1, 2, 0]: -ln P(2|1) = ln 4, -ln P(0|2) = ln 3, mean (ln 4 + ln 3) / 2 = 1.242453.
The original model (for the targets) is the same table W.
"""

import math

import pytest
import torch

from hf_unlearn import UnlearningConfig, get_method
from hf_unlearn.objectives.unseen_match import (
    TAIL_TARGET,
    TARGET,
    quantile_levels,
    tail_nll_sum,
    unseen_match_sum,
)
from tests._support import BigramLM, W, example
from tests.conftest import unlearning_args

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)
RETAIN_NLL = 1.5 * LN2


# ------------------------------------------------------------------ pure functions


def test_quantile_levels_golden():
    """r = [1, 2, 3, 4] sits at p = 1/8, 3/8, 5/8, 7/8; forget o = [0.9, 0.2] has ranks [1, 0], p = [3/4, 1/4],
    so tau = [Q(3/4), Q(1/4)] = [3.5, 1.5] (midway between neighbours). The reference's order does not matter."""
    tau = quantile_levels(torch.tensor([0.9, 0.2]), torch.tensor([3.0, 1.0, 4.0, 2.0]))
    assert tau.tolist() == pytest.approx([3.5, 1.5], abs=1e-6)


def test_quantile_levels_equal_sizes_permute_the_reference():
    """N = M: the example of rank k gets r_(k) exactly: o = [3, 1, 2] (ranks [2, 0, 1]), r = [10, 30, 20]."""
    tau = quantile_levels(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([10.0, 30.0, 20.0]))
    assert tau.tolist() == pytest.approx([30.0, 10.0, 20.0], abs=1e-6)


def test_quantile_levels_ties_and_ends():
    """Ties are ranked by position (o = [1, 1]: ranks [0, 1]); beyond the outer reference points Q is flat
    (N = 4 against r = [5, 7]: p = 1/8 and 3/8 -> positions -0.25 (clamped to 5) and 0.25 -> 5.5, then 6.5, 7)."""
    assert quantile_levels(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 4.0])).tolist() == pytest.approx([2.0, 4.0])
    tau = quantile_levels(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([7.0, 5.0]))
    assert tau.tolist() == pytest.approx([5.0, 5.5, 6.5, 7.0], abs=1e-6)
    with pytest.raises(ValueError, match="at least one reference level"):
        quantile_levels(torch.tensor([1.0]), torch.tensor([]))


def test_unseen_match_sum_golden():
    """Rows: NLL sums [4, 3, 9] over [2, 3, 0] targets -> means [2, 1, -] (the third row has no targets and counts
    for nothing); targets [3, 0.5, 1]: gaps tau - m = [1, -0.5]. Two-sided: (1 + 0.25) / 2 = 0.625; one-sided
    keeps only the positive gap: 1 / 2 = 0.5."""
    nll, counts, targets = torch.tensor([4.0, 3.0, 9.0]), torch.tensor([2, 3, 0]), torch.tensor([3.0, 0.5, 1.0])
    assert unseen_match_sum(nll, counts, targets, two_sided=True).item() == pytest.approx(0.625, abs=1e-7)
    assert unseen_match_sum(nll, counts, targets, two_sided=False).item() == pytest.approx(0.5, abs=1e-7)


def test_unseen_match_gradient_is_scaled_ascent():
    """d/dm of 1/2 (m - tau)^2 is m - tau: with m = 2, tau = 3 the loss pushes m up with slope -1 (ascent); past
    the target (tau = 1) it pulls back with slope +1; one-sided it stops there (slope 0)."""
    for tau, two_sided, slope in ((3.0, True, -1.0), (1.0, True, 1.0), (1.0, False, 0.0)):
        nll = torch.tensor([4.0], requires_grad=True)  # m = 4 / 2 = 2
        unseen_match_sum(nll, torch.tensor([2]), torch.tensor([tau]), two_sided).backward()
        assert nll.grad.item() == pytest.approx(slope / 2)  # dm / dnll = 1 / |s| = 1/2


def test_tail_nll_sum_golden():
    """K = 0.5. Row 0: 4 targets [0.5, 3, 1, 2] (+ padding) -> floor(2) = 2 least likely tokens, 3 + 2 = 5. Row 1:
    2 targets [1, 4] -> 1 token, 4. Row 2: no targets -> sum 0 (count clamped to 1, masked by the loss). K = 0.34
    on 3 targets: floor(1.02) = 1. The gradient reaches exactly the selected tokens, with slope 1."""
    nll = torch.tensor([[0.5, 3.0, 1.0, 2.0, 9.0], [1.0, 4.0, 9.0, 9.0, 9.0], [9.0] * 5], requires_grad=True)
    valid = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [0] * 5], dtype=torch.bool)
    total, size = tail_nll_sum(nll, valid, 0.5)
    assert total.tolist() == [5.0, 4.0, 0.0] and size.tolist() == [2, 1, 1]
    total.sum().backward()
    expected = [[0, 1, 0, 1, 0], [0, 1, 0, 0, 0], [0] * 5]
    assert nll.grad.tolist() == [[float(v) for v in row] for row in expected]
    total, size = tail_nll_sum(torch.tensor([[3.0, 1.0, 2.0]]), torch.ones(1, 3, dtype=torch.bool), 0.34)
    assert total.tolist() == [3.0] and size.tolist() == [1]


# ------------------------------------------------------------------ through the trainer


def trainer_loss(tmp_path, unseen=None, with_retain=True, method="unseen_match", **config):
    cls = get_method(method)
    kwargs = {"retain_dataset": [example([1, 1, 0])]} if with_retain else {}
    if unseen is not None:
        kwargs["unseen_dataset"] = [example(tokens) for tokens in unseen]
    model = BigramLM(W)
    trainer = cls(
        model=model,
        args=unlearning_args(method, tmp_path, **config),
        train_dataset=[example([0, 1, 2])],
        ref_model=BigramLM(W),
        **kwargs,
    )
    batch = trainer.data_collator([trainer.train_dataset[0]])
    model.train()
    return trainer.compute_loss(model, batch).item(), trainer


def test_golden_quantile_target_from_unseen_data(tmp_path):
    """N = 1 forget example against M = 2 unseen levels [ln 3, (ln 4 + ln 3)/2]: p = 1/2 falls midway, tau =
    (3 ln 3 + ln 4) / 4 = 1.170533. Gap m_f - tau = 0.75 ln(4/3) = 0.215762; forget term 0.5 * 0.215762^2 =
    0.023277; loss = 0.023277 + 1.5 ln 2 = 1.062998. The logged gap is tau - m_f = -0.215762."""
    loss, trainer = trainer_loss(tmp_path, unseen=[[2, 0], [1, 2, 0]])
    tau = (3 * LN3 + LN4) / 4
    assert trainer.forget_dataset[0][TARGET] == pytest.approx(tau, rel=1e-6)
    assert loss == pytest.approx(0.5 * (0.75 * math.log(4 / 3)) ** 2 + RETAIN_NLL, rel=1e-6)
    total, count = trainer._term_stats[trainer.term_names.index("forget_gap")].tolist()
    assert count == 1 and total == pytest.approx(-0.75 * math.log(4 / 3), rel=1e-5)


def test_golden_one_sided_stops_past_the_target(tmp_path):
    """The same data one-sided: f is already less likely than its target (m_f > tau), so the forget term is 0 and
    the loss is the retain NLL 1.5 ln 2 = 1.039721."""
    loss, _ = trainer_loss(tmp_path, unseen=[[2, 0], [1, 2, 0]], unseen_match_two_sided=False)
    assert loss == pytest.approx(RETAIN_NLL, rel=1e-6)


def test_golden_scalar_target_is_token_weighted(tmp_path):
    """unseen_match_quantiles=False: tau = the unseen data's token-weighted mean (ln 3 + ln 4 + ln 3) / 3 =
    1.194496 (not the mean of the two examples' means, 1.170533). Gap (2/3) ln(4/3) = 0.191788; loss =
    0.5 * 0.191788^2 + 1.5 ln 2 = 1.058113."""
    loss, trainer = trainer_loss(tmp_path, unseen=[[2, 0], [1, 2, 0]], unseen_match_quantiles=False)
    assert trainer.forget_dataset[0][TARGET] == pytest.approx((2 * LN3 + LN4) / 3, rel=1e-6)
    assert loss == pytest.approx(0.5 * (2 / 3 * math.log(4 / 3)) ** 2 + RETAIN_NLL, rel=1e-6)


def test_golden_fixed_target(tmp_path):
    """unseen_match_target_nll=2: gap 2 - ln 4 = 0.613706 whichever side; forget term 0.5 * 0.613706^2 = 0.188317
    (no unseen or retain data needed for the targets); forget_weight 0.5 halves it."""
    loss, _ = trainer_loss(tmp_path, unseen_match_target_nll=2.0, unseen_match_two_sided=False)
    assert loss == pytest.approx(0.5 * (2 - LN4) ** 2 + RETAIN_NLL, rel=1e-6)
    loss, _ = trainer_loss(tmp_path / "half", unseen_match_target_nll=2.0, forget_weight=0.5)
    assert loss == pytest.approx(0.25 * (2 - LN4) ** 2 + RETAIN_NLL, rel=1e-6)


def test_golden_retain_fallback(tmp_path, caplog):
    """No unseen data: the target is the retain data's level, 1.5 ln 2 (M = N = 1), with a warning. Gap
    ln 4 - 1.5 ln 2 = 0.5 ln 2; forget term 0.125 ln^2 2 = 0.060056; loss 1.099777."""
    with caplog.at_level("WARNING"):
        loss, trainer = trainer_loss(tmp_path)
    assert "no unseen_dataset" in caplog.text
    assert trainer.forget_dataset[0][TARGET] == pytest.approx(RETAIN_NLL, rel=1e-6)
    assert loss == pytest.approx(0.125 * LN2**2 + RETAIN_NLL, rel=1e-6)


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="pass `unseen_dataset=`"):
        trainer_loss(tmp_path, with_retain=False, retain_weight=0.0)
    with pytest.raises(ValueError, match=r"unseen_match_target_nll=-1.0 must be a positive finite"):
        unlearning_args("unseen_match", tmp_path, unseen_match_target_nll=-1.0)
    with pytest.raises(ValueError, match="unseen_dataset is empty"):
        trainer_loss(tmp_path, unseen=[])
    # The objective composed onto a plain config: the error names the config class to use.
    with pytest.raises(ValueError, match=r"reads `unseen_match_target_nll`.*UnseenMatchConfig"):
        get_method("ga_descent")(
            model=BigramLM(W),
            train_dataset=[example([0, 1, 2])],
            retain_dataset=[example([1, 1, 0])],
            ref_model=BigramLM(W),
            args=UnlearningConfig(
                output_dir=str(tmp_path / "x"), forget_loss="unseen_match", use_cpu=True, report_to="none"
            ),
        )


# ------------------------------------------------------------------ invariances and behaviour


def test_left_and_right_padding_give_the_same_loss_and_gradient(trained_model_dir, tokenizer, tmp_path):
    """As tests/test_core.py checks for the paper's methods, with the same tolerances (float32 summation order
    over exactly-zero-weighted padded keys): the per-row means and targets do not see the padding side."""
    from tests._support import first_step, varied_examples

    forget, retain = varied_examples(tokenizer, 21), varied_examples(tokenizer, 22)
    right_loss, right_grad, magnitude = first_step(
        "unseen_match", trained_model_dir, tokenizer, forget, retain, tmp_path, "right"
    )
    left_loss, left_grad, _ = first_step("unseen_match", trained_model_dir, tokenizer, forget, retain, tmp_path, "left")
    assert abs(left_loss - right_loss) <= 1e-6 * magnitude
    scale = right_grad.abs().max().item()
    assert scale > 0
    assert (left_grad - right_grad).abs().max().item() <= 1e-5 * scale


def test_gradient_accumulation_invariance(trained_model_dir, tokenizer, tmp_path):
    """One SGD step (lr 1) on 4 examples of different lengths: batch 4 x 1 == batch 2 x accumulation 2, within
    1e-5 on every parameter (the tolerance of tests/test_training.py: float32 sums in another order). The
    per-sequence term is divided by the global count of forget sequences, not by each micro-batch's."""
    from hf_unlearn import chunk_documents
    from tests._support import one_step_params
    from tests.conftest import make_documents

    forget = chunk_documents(make_documents(4, seed=7, min_words=3, max_words=30), tokenizer, max_length=32).select(
        range(4)
    )
    retain = chunk_documents(make_documents(4, seed=8, min_words=3, max_words=30), tokenizer, max_length=32).select(
        range(4)
    )
    assert len({len(x) for x in forget["input_ids"]}) > 1
    full, log_full = one_step_params("unseen_match", trained_model_dir, forget, retain, tmp_path, tokenizer, 4, 1)
    accumulated, log_acc = one_step_params("unseen_match", trained_model_dir, forget, retain, tmp_path, tokenizer, 2, 2)
    assert max((full[n] - accumulated[n]).abs().max().item() for n in full) < 1e-5
    assert math.isclose(log_full["forget_loss"], log_acc["forget_loss"], rel_tol=1e-5)
    assert log_full["forget_loss"] > 0


def test_forget_nll_settles_at_the_target_instead_of_passing_it(trained_model_dir, forget_data, tokenizer, tmp_path):
    """Forget only (retain_weight 0), a fixed target 1 nat above the forget set's NLL, 40 Adam steps at lr 3e-3:
    the forget NLL ends within 0.25 nat of the target, where gradient ascent with the same budget passes it by
    more than that (GA's push does not fade; the two-sided loss turns into descent past the target)."""
    from transformers import AutoModelForCausalLM

    from hf_unlearn.evaluation import mean_nll

    start = mean_nll(AutoModelForCausalLM.from_pretrained(trained_model_dir), forget_data)
    target = start + 1.0
    ends = {}
    for method, extra in (("unseen_match", {"unseen_match_target_nll": target}), ("ga", {})):
        model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
        args = unlearning_args(method, tmp_path / method, max_steps=40, learning_rate=3e-3, retain_weight=0.0, **extra)
        get_method(method)(model=model, args=args, train_dataset=forget_data, processing_class=tokenizer).train()
        ends[method] = mean_nll(model, forget_data)
    assert abs(ends["unseen_match"] - target) < 0.25, (start, target, ends)
    assert ends["ga"] - target > 0.25, (start, target, ends)


def test_golden_tail_target(tmp_path):
    """unseen_match_tail_k = 0.5 (and the method unseen_match_tail, K = 0.1: floor(0.2) -> at least 1 token, the
    same tails here). Tails: f = [0, 1, 2] has 2 targets (ln 4, ln 4) -> 1 token, t_f = ln 4; unseen u1 -> ln 3,
    u2 (ln 4, ln 3) -> ln 4. N = 1 against M = 2 tail levels: p = 1/2, kappa = (ln 3 + ln 4) / 2 = 1.242453.
    Tail gap t_f - kappa = 0.5 ln(4/3) = 0.143841, tail term 0.5 * 0.143841^2 = 0.010345; with the mean term of
    test_golden_quantile_target_from_unseen_data (0.023277) and the retain NLL: loss = 1.073343. Tail weight 2
    doubles the tail term: 1.083688."""
    mean_term = 0.5 * (0.75 * math.log(4 / 3)) ** 2
    tail_term = 0.5 * (0.5 * math.log(4 / 3)) ** 2
    unseen = [[2, 0], [1, 2, 0]]
    for index, (method, config) in enumerate(
        [("unseen_match", {"unseen_match_tail_k": 0.5}), ("unseen_match_tail", {})]
    ):
        loss, trainer = trainer_loss(tmp_path / str(index), unseen=unseen, method=method, **config)
        assert trainer.forget_dataset[0][TAIL_TARGET] == pytest.approx((LN3 + LN4) / 2, rel=1e-6)
        assert loss == pytest.approx(mean_term + tail_term + RETAIN_NLL, rel=1e-6), method
    loss, _ = trainer_loss(tmp_path / "w2", unseen=unseen, unseen_match_tail_k=0.5, unseen_match_tail_weight=2.0)
    assert loss == pytest.approx(mean_term + 2 * tail_term + RETAIN_NLL, rel=1e-6)


def test_tail_settings_errors_name_the_fix(tmp_path):
    for config, message in (
        ({"unseen_match_tail_k": 0.0}, "unseen_match_tail_k=0.0 must be a share"),
        ({"unseen_match_tail_k": 1.5}, "unseen_match_tail_k=1.5 must be a share"),
        ({"unseen_match_tail_weight": -1.0}, "unseen_match_tail_weight=-1.0 must be a finite weight"),
        ({"unseen_match_tail_k": 0.1, "unseen_match_target_nll": 2.0}, "unset one of them"),
    ):
        with pytest.raises(ValueError, match=message):
            trainer_loss(tmp_path, unseen=[[2, 0]], **config)
