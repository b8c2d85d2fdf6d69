"""The field's methods: hand-derived golden values, training behaviour, RMU's frozen parameters.

Golden values use the bigram model of tests/_support.py: P(next | current = c) = softmax(W[c]) with

    W[0] = ln [1/2, 1/4, 1/4],  W[1] = ln [1/4, 1/2, 1/4],  W[2] = ln [1/3, 1/3, 1/3]

forget chunk f = [0, 1, 2] (targets: 1 after 0 with p = 1/4, 2 after 1 with p = 1/4, so log p(f) = -2 ln 4 and the
mean NLL is ln 4) and retain chunk r = [1, 1, 0] (mean NLL 1.5 ln 2). With retain_weight 0 the retain objective is
off, so the loss is the forget term alone.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_unlearn import build_qa_dataset, get_method
from hf_unlearn.evaluation import mean_nll
from tests._support import LN2, LN4, W, golden_loss
from tests.conftest import unlearning_args

FIELD_METHODS = ["npo", "simnpo", "idk", "idk_dpo", "rmu", "undial", "wga", "satimp"]


def test_npo_golden(tmp_path):
    """NPO with a uniform reference (all logits 0): log p_ref(f) = 2 ln(1/3), so
    log p(f) - log p_ref(f) = -2 ln 4 + 2 ln 3 = 2 ln(3/4) = -0.575364, and with beta 0.1
    forget term = -(2/0.1) ln sigmoid(0.1 * 0.575364) = 20 ln(1 + e^-0.0575364) = 20 ln 1.944088 = 13.295854.
    The loss adds the retain NLL 1.5 ln 2 = 1.039721: 14.335575."""
    expected_forget = 20 * math.log(1 + math.exp(-0.1 * 2 * math.log(4 / 3)))
    assert expected_forget == pytest.approx(13.295854, rel=1e-6)
    loss, trainer = golden_loss("npo", tmp_path, ref_table=torch.zeros(3, 3))
    assert trainer.ref_model is None  # the reference was only used to precompute log p_ref(f)
    assert trainer.forget_dataset[0]["ref_logp"] == pytest.approx(-2 * math.log(3), rel=1e-6)
    assert math.isclose(loss, expected_forget + 1.5 * LN2, rel_tol=1e-6)


def test_npo_against_itself_is_ln4_scaled(tmp_path):
    """Reference = the policy: the log-ratio is 0 and the term is -(2/beta) ln sigmoid(0) = (2/beta) ln 2 = 20 ln 2."""
    loss, _ = golden_loss("npo", tmp_path, ref_table=W, retain_weight=0.0)
    assert math.isclose(loss, 20 * LN2, rel_tol=1e-6)


def test_simnpo_golden(tmp_path):
    """SimNPO with beta 1, delta 1: NLL(f)/|f| - delta = ln 4 - 1 = 0.386294;
    term = -(2/1) ln sigmoid(0.386294) = 2 ln(1 + e^-0.386294) = 2 ln 1.679539 = 1.037076 (forget weight 1, retain
    off)."""
    loss, _ = golden_loss("simnpo", tmp_path, simnpo_beta=1.0, simnpo_delta=1.0, forget_weight=1.0, retain_weight=0.0)
    assert math.isclose(loss, 2 * math.log(1 + math.exp(-(LN4 - 1))), rel_tol=1e-6)
    assert math.isclose(loss, 1.037076, rel_tol=1e-5)


def test_wga_golden(tmp_path):
    """WGA, beta 1: both targets have p = 1/4 and NLL ln 4: -mean(1/4 ln 4) = -ln 4 / 4 = -0.346574."""
    loss, _ = golden_loss("wga", tmp_path, retain_weight=0.0)
    assert math.isclose(loss, -LN4 / 4, rel_tol=1e-6)


def test_satimp_golden(tmp_path):
    """SatImp, beta1 = beta2 = 1: weight p (1 - p) = 1/4 * 3/4 = 3/16 on both targets: -3/16 ln 4 = -0.259930.
    Default exponents (5, 1): weight (1/4)^5 * 3/4 = 3/4096: -3/4096 ln 4 = -0.00101532."""
    loss, _ = golden_loss("satimp", tmp_path, retain_weight=0.0, satimp_beta1=1.0, satimp_beta2=1.0)
    assert math.isclose(loss, -3 / 16 * LN4, rel_tol=1e-6)
    loss, _ = golden_loss("satimp", tmp_path / "default", retain_weight=0.0)
    assert math.isclose(loss, -3 / 4096 * LN4, rel_tol=1e-5)


def test_undial_golden(tmp_path):
    """UNDIAL with reference = W and beta = ln 2 (halves the true token's probability before renormalising).

    After token 0 (target 1): [1/2, 1/4 / 2, 1/4] / (7/8) = [4/7, 1/7, 2/7]; policy [1/2, 1/4, 1/4];
    CE = 4/7 ln 2 + 1/7 ln 4 + 2/7 ln 4 = 10/7 ln 2. After token 1 (target 2): [2/7, 4/7, 1/7] against
    [1/4, 1/2, 1/4]: CE = 2/7 ln 4 + 4/7 ln 2 + 1/7 ln 4 = 10/7 ln 2. Mean 10/7 ln 2 = 0.990210."""
    loss, _ = golden_loss("undial", tmp_path, ref_table=W, retain_weight=0.0, undial_beta=LN2)
    assert math.isclose(loss, 10 / 7 * LN2, rel_tol=1e-6)


def test_dpo_and_activation_losses_golden():
    """dpo_sum: chosen log-ratio 0.5, rejected -0.5, beta 1: -(2/1) ln sigmoid(1) = 2 ln(1 + e^-1) = 0.626523;
    a row that is not selected adds nothing. activation_mse_sum: hidden [1, 2] vs target [0, 0]: (1 + 4) / 2 = 2.5
    at the one selected position."""
    from hf_unlearn.losses import activation_mse_sum, dpo_sum

    rows = torch.tensor([True, False])
    total = dpo_sum(
        torch.tensor([-1.0, 5.0]),
        torch.tensor([-1.5, 0.0]),
        torch.tensor([-2.5, 0.0]),
        torch.tensor([-2.0, 0.0]),
        1.0,
        rows,
    )
    assert math.isclose(total.item(), 2 * math.log(1 + math.exp(-1)), rel_tol=1e-6)
    hidden = torch.tensor([[[1.0, 2.0], [9.0, 9.0]]])
    total, count = activation_mse_sum(hidden, torch.zeros(2), torch.tensor([[True, False]]))
    assert total.item() == 2.5 and count.item() == 1


def qa_records(n, seed):
    import random

    rng = random.Random(seed)
    words = "the fox cat dog river book tree bird stone light".split()
    return [
        {
            "question": f"what does the {rng.choice(words)} do near the {rng.choice(words)}",
            "answer": " ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) + ".",
        }
        for _ in range(n)
    ]


def field_trainer(method, model_dir, tokenizer, tmp_path, **config):
    cls = get_method(method)
    qa = method in ("idk", "idk_dpo")
    if qa:
        forget = build_qa_dataset(qa_records(8, 1), tokenizer, max_length=64)
        retain = build_qa_dataset(qa_records(8, 2), tokenizer, max_length=64)
    else:
        from hf_unlearn import chunk_documents
        from tests.conftest import make_documents

        forget = chunk_documents(make_documents(8, seed=1), tokenizer, max_length=32)
        retain = chunk_documents(make_documents(12, seed=2), tokenizer, max_length=32)
    if method == "rmu":
        config = {
            "rmu_layer": 1,
            "rmu_trainable_params": r"layers\.[01]\.mlp\.down_proj\.weight",
            "retain_weight": 1.0,
            "rmu_steering_coeff": 20.0,
            **config,
        }
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    trainer = cls(
        model=model,
        args=unlearning_args(method, tmp_path, **config),
        train_dataset=forget,
        retain_dataset=retain,
        processing_class=tokenizer,
    )
    return trainer, model, forget


@pytest.mark.parametrize("method", FIELD_METHODS)
def test_field_method_unlearns(method, trained_model_dir, tokenizer, tmp_path):
    """A few steps move the method's forget measure the right way: the true forget NLL rises; for the IDK methods
    the preference for the refusal over the true answer (NLL(answer) - NLL(refusal)) rises; for RMU, whose
    objective is the activations, the forget activations move towards c*u (the logged forget loss falls)."""
    trainer, model, forget = field_trainer(
        method, trained_model_dir, tokenizer, tmp_path, max_steps=6, learning_rate=3e-3
    )

    def measure():
        if method in ("idk", "idk_dpo"):
            return mean_nll(model, forget) - mean_nll(model, trainer.train_dataset.streams["idk"])
        return mean_nll(model, forget)

    before = measure()
    trainer.train()
    after = measure()
    losses = [h["forget_loss"] for h in trainer.state.log_history if "forget_loss" in h]
    assert all(math.isfinite(v) for v in losses) and len(losses) == 6
    if method == "rmu":
        assert losses[-1] < losses[0], losses
    else:
        assert after > before + 0.05, f"{method}: forget measure {before:.3f} -> {after:.3f}"


def test_rmu_trains_only_the_chosen_parameters(trained_model_dir, tokenizer, tmp_path):
    """Everything but layers 0-1's MLP down projections is bit-identical after training; those changed."""
    trainer, model, _ = field_trainer("rmu", trained_model_dir, tokenizer, tmp_path, max_steps=3, learning_rate=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    for name, parameter in model.named_parameters():
        chosen = "mlp.down_proj.weight" in name
        assert torch.equal(parameter, before[name]) != chosen, name


def test_rmu_rejects_a_layer_or_pattern_the_model_does_not_have(trained_model_dir, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="rmu_layer=7, but the model has 2 decoder layers"):
        field_trainer("rmu", trained_model_dir, tokenizer, tmp_path, rmu_layer=7)
    with pytest.raises(ValueError, match="matches no parameter"):
        field_trainer("rmu", trained_model_dir, tokenizer, tmp_path / "b", rmu_trainable_params="nothing_here")


def test_precomputing_methods_hold_no_reference(trained_model_dir, tokenizer, tmp_path):
    """NPO and IdkDPO need the reference only as one number per sequence: none is kept for training."""
    for method in ("npo", "idk_dpo"):
        trainer, _, _ = field_trainer(method, trained_model_dir, tokenizer, tmp_path / method, max_steps=1)
        assert trainer.ref_model is None
        assert "ref_logp" in trainer.forget_dataset.column_names


def test_idk_stream_answers_the_forget_questions_with_refusals(trained_model_dir, tokenizer, tmp_path):
    from hf_unlearn.objectives.idk import IDK_ANSWERS

    trainer, _, forget = field_trainer("idk", trained_model_dir, tokenizer, tmp_path, max_steps=1)
    idk = trainer.train_dataset.streams["idk"]
    for index in range(len(forget)):
        item = trainer.train_dataset[index]
        prompt = [t for t, label in zip(item["forget"]["input_ids"], item["forget"]["labels"]) if label == -100]
        assert item["idk"]["input_ids"][: len(prompt)] == prompt
        answer = tokenizer.decode(
            [t for t, label in zip(idk[index]["input_ids"], idk[index]["labels"]) if label != -100],
            skip_special_tokens=True,
        ).strip()
        assert answer in IDK_ANSWERS


def test_idk_needs_question_answer_data(trained_model_dir, forget_data, tokenizer, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(trained_model_dir)
    with pytest.raises(ValueError, match="question/answer forget data"):
        get_method("idk")(
            model=model,
            args=unlearning_args("idk", tmp_path),
            train_dataset=forget_data,
            retain_dataset=forget_data,
            processing_class=tokenizer,
        )
