"""The loss sums (``retrievegan.train.losses``): weight-1 terms without a multiplication and the adversarial terms
summed in one function (``weighted_bce_sum``, compiled under ``train.compile``) give the numbers of adding every
term one by one, bit for bit (issue 13: fewer ops per step, the same arithmetic)."""

from __future__ import annotations

import pytest
import torch

from retrievegan.train import losses

TARGETS = (1.0, 1.0, 0.0, 0.0, 0.0)
WEIGHTS = (1.0, 0.5, 1.0 / 3, 1.0 / 3, 1.0)


def _logits(seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, generator=gen) * 3).requires_grad_(True) for n in (4, 4, 7, 1, 4)]


def _one_by_one(logits, weights=WEIGHTS, start: torch.Tensor | None = None):
    """The sum as written out: weight * bce term by term, every weight multiplied (1.0 too)."""
    total = start
    for x, t, w in zip(logits, TARGETS, weights):
        term = torch.nn.functional.binary_cross_entropy_with_logits(x, torch.full_like(x, t)) * w
        total = term if total is None else total + term
    return total


def test_a_weight_one_term_is_the_value_itself_bit_for_bit():
    x = _logits(0)
    sums = losses.LossSum()
    value = losses.bce_to(x[0], 1.0)
    sums.add("a", value)
    assert sums.total is value  # no multiplication dispatched
    sums.add("b", losses.bce_to(x[1], 1.0), 0.5)
    assert torch.equal(sums.logs["b"], losses.bce_to(x[1], 1.0).detach() * 0.5)
    total = sums.result()
    grads = torch.autograd.grad(total, x[:2])
    reference = _one_by_one(x[:2], WEIGHTS[:2])
    assert total.item().hex() == reference.item().hex()
    for a, b in zip(grads, torch.autograd.grad(reference, x[:2])):
        assert torch.equal(a, b)


@pytest.mark.parametrize("first", [True, False])
def test_weighted_bce_sum_adds_like_loss_sum_term_by_term(first):
    """The same total, logged terms and gradients as ``LossSum.add`` per term (the first addition of a sum: its
    terms in the same order; after other terms: the partial sum added as one term)."""
    x = _logits(1)
    before = (x[0] * 0).sum() + 0.25 if not first else None
    collected = losses.BceTerms()
    for k, (logit, t, w) in enumerate(zip(x, TARGETS, WEIGHTS)):
        collected.add(f"t{k}", logit, t, w)
    collected.add("skipped", x[0], 1.0, 0.0)  # weight 0: not a term, as LossSum.add
    sums = losses.LossSum()
    if before is not None:
        sums.add("before", before)
    sums.add_sum(collected.names, losses.weighted_bce_sum(*collected.inputs()))
    total = sums.result()
    partial = _one_by_one(x)
    reference = partial if before is None else before + partial
    assert total.item().hex() == reference.item().hex()
    assert list(sums.logs) == ([] if first else ["before"]) + [f"t{k}" for k in range(5)] + ["total"]
    for k, (logit, t, w) in enumerate(zip(x, TARGETS, WEIGHTS)):
        assert torch.equal(sums.logs[f"t{k}"], losses.bce_to(logit, t).detach() * w)
        assert not sums.logs[f"t{k}"].requires_grad
    for a, b in zip(torch.autograd.grad(total, x, retain_graph=True), torch.autograd.grad(reference, x)):
        assert torch.equal(a, b)


def test_weighted_bce_sum_rejects_mismatched_inputs():
    x = _logits(2)
    with pytest.raises(ValueError, match="2 logits, 1 targets"):
        losses.weighted_bce_sum(x[:2], (1.0,), (1.0, 1.0))
    with pytest.raises(ValueError, match="0 logits"):
        losses.weighted_bce_sum([], (), ())
    with pytest.raises(ValueError, match="1 names for 2 terms"):
        losses.LossSum().add_sum(["a"], losses.weighted_bce_sum(x[:2], (1.0, 0.0), (1.0, 1.0)))
