"""Losses shared by the GAN methods (sg2im's definitions unless noted).

Adversarial losses take raw discriminator logits of any shape (patch maps are averaged):

* ``gan``: the original (non-saturating) GAN loss with a numerically stable BCE on logits (sg2im default);
* ``lsgan``: least squares on ``sigmoid(logits)`` (sg2im's variant);
* ``hinge``: hinge loss (common for newer GANs; ours, not used by the paper's defaults).

``LossSum`` collects weighted terms and their values for the log.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

GAN_LOSSES = ("gan", "lsgan", "hinge")
BOX_LOSSES = ("l1", "mse")


def _check_kind(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise ValueError(f"unknown GAN loss {kind!r}; expected one of {GAN_LOSSES}")


def generator_adversarial(scores_fake: torch.Tensor, kind: str = "gan") -> torch.Tensor:
    """Generator's loss for discriminator logits on generated data (any shape) -> scalar."""
    _check_kind(kind)
    scores_fake = scores_fake.float()
    if kind == "gan":
        return F.binary_cross_entropy_with_logits(scores_fake, torch.ones_like(scores_fake))
    if kind == "lsgan":
        return F.mse_loss(scores_fake.sigmoid(), torch.ones_like(scores_fake))
    return -scores_fake.mean()


def discriminator_adversarial(scores_real: torch.Tensor, scores_fake: torch.Tensor, kind: str = "gan") -> torch.Tensor:
    """Discriminator's loss for logits on real and generated data -> scalar (real + fake terms)."""
    _check_kind(kind)
    scores_real, scores_fake = scores_real.float(), scores_fake.float()
    if kind == "gan":
        return F.binary_cross_entropy_with_logits(
            scores_real, torch.ones_like(scores_real)
        ) + F.binary_cross_entropy_with_logits(scores_fake, torch.zeros_like(scores_fake))
    if kind == "lsgan":
        return F.mse_loss(scores_real.sigmoid(), torch.ones_like(scores_real)) + F.mse_loss(
            scores_fake.sigmoid(), torch.zeros_like(scores_fake)
        )
    return F.relu(1.0 - scores_real).mean() + F.relu(1.0 + scores_fake).mean()


def pixel_l1(fake: torch.Tensor, real: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute difference of two image batches (N, 3, S, S) -> scalar. ``weights`` (N, 1, S, S) in (0, 1]
    (loss rebalancing, the conditional IMLE supplement's rarity mask): the mean of ``weights * |fake - real|``
    over the same elements (the mask scales each pixel's term, as the supplement's ``||M o (y - y~)||_1``)."""
    if weights is None:
        return F.l1_loss(fake.float(), real.float())
    return (weights.float() * (fake.float() - real.float()).abs()).mean()


def box_regression(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Box loss over (O, 4) boxes, mean over objects and coordinates: ``l1`` (sg2im paper, RetrieveGAN) or
    ``mse`` (sg2im's code)."""
    if kind == "l1":
        return F.l1_loss(pred.float(), target.float())
    if kind == "mse":
        return F.mse_loss(pred.float(), target.float())
    raise ValueError(f"unknown box loss {kind!r}; expected one of {BOX_LOSSES}")


def bce_to(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy of ``logits`` against the constant label ``target`` (1: real, 0: fake), in fp32."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def mask_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-wise BCE of mask logits (O, M, M) against {0, 1} masks (O, M, M) -> scalar (autocast-safe)."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def auxiliary_classification(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the object discriminator's classifier (O, C) against categories (O,) -> scalar."""
    return F.cross_entropy(class_logits.float(), labels)


def weighted(value: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * value``; ``value`` itself for weight 1 (the same numbers, forward and backward: x * 1.0 == x
    exactly in IEEE arithmetic, without the multiplication and its backward)."""
    return value if weight == 1.0 else value * weight


def weighted_bce_sum(
    logits: Sequence[torch.Tensor], targets: Sequence[float], weights: Sequence[float]
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """``sum_i weights[i] * bce_to(logits[i], targets[i])`` added left to right, as ``LossSum.add`` would term by
    term (the same numbers eager), and the weighted terms, detached, for the log. One function so that
    ``torch.compile`` makes the adversarial terms of a step one graph (AttnGAN: 6 generator and 15 discriminator
    terms at the paper's three stages)."""
    if not logits or not len(logits) == len(targets) == len(weights):
        raise ValueError(f"{len(logits)} logits, {len(targets)} targets, {len(weights)} weights")
    terms = [weighted(bce_to(x, t), w) for x, t, w in zip(logits, targets, weights)]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total, tuple(term.detach() for term in terms)


class BceTerms:
    """Constant-label BCE terms collected for one :func:`weighted_bce_sum` call: ``add(name, logits, target,
    weight)``, then ``weighted_bce_sum(*terms.inputs())`` and ``LossSum.add_sum(terms.names, ...)``."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.logits: list[torch.Tensor] = []
        self.targets: list[float] = []
        self.weights: list[float] = []

    def add(self, name: str, logits: torch.Tensor, target: float, weight: float = 1.0) -> None:
        if weight == 0:
            return
        self.names.append(name)
        self.logits.append(logits)
        self.targets.append(target)
        self.weights.append(weight)

    def inputs(self) -> tuple[list[torch.Tensor], tuple[float, ...], tuple[float, ...]]:
        return self.logits, tuple(self.targets), tuple(self.weights)


class LossSum:
    """``add(name, value, weight)`` accumulates ``weight * value``; ``logs`` keeps the weighted terms."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.logs: dict[str, torch.Tensor] = {}

    def add(self, name: str, value: torch.Tensor, weight: float = 1.0) -> None:
        if weight == 0:
            return
        term = weighted(value, weight)
        self.logs[name] = term.detach()
        self.total = term if self.total is None else self.total + term

    def add_sum(self, names: Sequence[str], partial: tuple[torch.Tensor, tuple[torch.Tensor, ...]]) -> None:
        """Add a sum of weighted terms made elsewhere (``weighted_bce_sum``'s ``(total, detached terms)``) and log
        its terms under ``names``. Into an empty sum: the numbers of adding the terms one by one."""
        total, detached = partial
        if len(names) != len(detached):
            raise ValueError(f"{len(names)} names for {len(detached)} terms")
        self.logs.update(zip(names, detached))
        self.total = total if self.total is None else self.total + total

    def result(self) -> torch.Tensor:
        if self.total is None:
            raise ValueError("no loss term was added (every weight is zero?)")
        self.logs["total"] = self.total.detach()
        return self.total
