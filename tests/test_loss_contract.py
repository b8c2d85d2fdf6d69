"""`compute_loss` keeps `Trainer`'s contract for every registered method: it returns the loss and runs no backward;
`training_step` differentiates it (one backward, or one per objective where `loss_route` says so) to the gradient
of the returned loss."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_unlearn import build_qa_dataset, get_method, list_methods
from tests.conftest import unlearning_args

# RMU on the 2-layer test model: steer layer 1, train both MLP down projections.
SETTINGS = {"rmu": {"rmu_layer": 1, "rmu_trainable_params": r"layers\.[01]\.mlp\.down_proj\.weight"}}
EPS = torch.finfo(torch.float32).eps


def qa(tokenizer, offset):
    """QA records (every method reads them: document methods their text, QA methods their answers)."""
    records = [
        {"question": f"What is item {i}?", "answer": f"Item {i} is a small word."} for i in range(offset, offset + 4)
    ]
    return build_qa_dataset(records, tokenizer, max_length=32)


def one_micro_batch(method, model_dir, tokenizer, tmp_path):
    """A trainer of `method` on QA data, its first micro-batch and the step's global counts."""
    args = unlearning_args(method, tmp_path, max_steps=1, per_device_train_batch_size=2, **SETTINGS.get(method, {}))
    trainer = get_method(method)(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=qa(tokenizer, 0),
        retain_dataset=qa(tokenizer, 10),
        processing_class=tokenizer,
    )
    batches, counts = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), 1, trainer.args.device)
    return trainer, batches[0], counts


@pytest.mark.parametrize("method", list_methods())
def test_compute_loss_runs_no_backward_and_training_step_differentiates_its_loss(
    method, trained_model_dir, tokenizer, tmp_path, monkeypatch
):
    """One micro-batch with the step's global counts (`get_batch_samples`), in training mode:

    - `compute_loss` leaves every parameter's `.grad` None (also when `training_step` calls it) and returns a loss
      with a graph;
    - `training_step` returns the same value and leaves in `.grad` the gradient of that loss by a plain
      `torch.autograd.grad`. Where the route runs one backward per objective (and it then runs 2), the two routes
      add the same float32 contributions of the two objectives (each itself a sum, e.g. over tied input and output
      embeddings), grouped differently: an element may differ by a few roundings of the tensor's largest
      contributions, 4 eps (max |g_forget| + max |g_retain|) per tensor, g_forget read after the first backward."""
    trainer, batch, counts = one_micro_batch(method, trained_model_dir, tokenizer, tmp_path)
    model = trainer.model
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()

    loss = trainer.compute_loss(model, batch, num_items_in_batch=counts)
    assert all(p.grad is None for p in params), f"{method}: compute_loss ran a backward"
    assert loss.requires_grad
    plain = torch.autograd.grad(loss, params, allow_unused=True)

    compute_loss, backward = trainer.compute_loss, trainer.accelerator.backward
    calls, backwards, after_first = [], [], []

    def checked_compute_loss(*a, **k):
        out = compute_loss(*a, **k)
        calls.append(all(p.grad is None for p in params))
        return out

    def counted_backward(value, **k):
        backward(value, **k)
        backwards.append(1)
        if not after_first:
            after_first.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params])

    monkeypatch.setattr(trainer, "compute_loss", checked_compute_loss)
    monkeypatch.setattr(trainer.accelerator, "backward", counted_backward)
    step_loss = trainer.training_step(model, batch, counts)
    assert all(calls), f"{method}: compute_loss ran a backward inside training_step"
    per_objective = trainer.loss_route().backward_per_objective and trainer.retain_objective.stream in batch
    assert len(calls) == (0 if per_objective else 1) and len(backwards) == (2 if per_objective else 1)
    assert step_loss.item() == pytest.approx(loss.item(), rel=4 * EPS)

    for p, want, first in zip(params, plain, after_first[0]):
        want = torch.zeros_like(p) if want is None else want
        got = torch.zeros_like(p) if p.grad is None else p.grad
        if per_objective:
            bound = 4 * EPS * (first.abs().max() + (got - first).abs().max())
            assert ((got - want).abs() <= bound).all(), (
                f"{method}: max diff {(got - want).abs().max():.3g} > {bound:.3g}"
            )
        else:
            assert torch.equal(got, want), f"{method}: training_step's gradient is not the loss's"


@pytest.mark.parametrize("method", list_methods())
def test_objectives_compute_their_terms_from_tensors_alone(method, trained_model_dir, tokenizer, tmp_path):
    """In a training step an objective sees only the micro-batch and the outputs of the passes it declares: with
    its link to the trainer cut, every term is the same tensor value (same inputs, same operations: equal)."""
    trainer, batch, _ = one_micro_batch(method, trained_model_dir, tokenizer, tmp_path)
    trainer.model.train()
    for objective in trainer.objectives:
        if objective.stream not in batch:
            continue
        outputs = trainer.run_passes(trainer.model, objective, batch)
        expected = objective.loss_terms(objective.select(batch), outputs)
        objective.setup = None  # any call back into the trainer now fails
        terms = objective.loss_terms(objective.select(batch), trainer.run_passes(trainer.model, objective, batch))
        assert terms.keys() == expected.keys()
        for name, term in terms.items():
            assert torch.equal(term.value, expected[name].value), (method, name)
