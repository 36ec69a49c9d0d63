"""Perceptual loss: L1 distance between frozen ImageNet VGG-19 features (RetrieveGAN §3.5; PasteGAN's VGGLoss).

Features after relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of torchvision's VGG-19 (``features`` layers
0-1, 2-6, 7-11, 12-20, 21-29), weighted 1/32, 1/16, 1/8, 1/4, 1 (PasteGAN's ``VGGLoss``, itself
pix2pixHD's); the target's features carry no gradient. Inputs are ImageNet-normalised, as VGG expects.
Inputs too small for the fifth stage (below 3 x 3 after four poolings) use the first four (PasteGAN).

The weights come only from a configured file or the torch hub cache
(:func:`retrievegan.weights.resolve_vgg19_weights`): never downloaded, never replaced by another
network; a missing file is an error naming the file, where to put it and its URL.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from retrievegan import io

LAYER_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))
LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


class VggPerceptualLoss(nn.Module):
    """loss(x (N, 3, H, W), y (N, 3, H, W)) -> scalar; frozen, always in eval mode."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.slices = nn.ModuleList(nn.Sequential(*[features[i] for i in range(a, b)]) for a, b in LAYER_SLICES)
        for param in self.parameters():
            param.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VggPerceptualLoss:  # frozen feature extractor: never in train mode
        return super().train(False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for k, block in enumerate(self.slices):
            if k == len(self.slices) - 1 and min(x.shape[-2:]) < 3:
                break
            x = block(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """``weights`` (N, 1, H, W) in (0, 1] (loss rebalancing): each layer's L1 term weighted by the mask
        average-pooled to that layer's size (the conditional IMLE supplement's ``M_i``)."""
        fx = self._features(x)
        with torch.no_grad():
            fy = self._features(y)
        if weights is None:
            return sum(w * F.l1_loss(a, b) for w, a, b in zip(LAYER_WEIGHTS, fx, fy))
        return sum(
            w * (F.adaptive_avg_pool2d(weights.to(a.dtype), a.shape[-2:]) * (a - b).abs()).mean()
            for w, a, b in zip(LAYER_WEIGHTS, fx, fy)
        )


def load_vgg_perceptual(
    configured: str | os.PathLike[str] | None, config_key: str, device: torch.device | str = "cpu"
) -> VggPerceptualLoss:
    """The perceptual loss network with VGG-19 weights from ``configured`` or the torch hub cache (never downloaded).

    Raises :class:`retrievegan.weights.MissingWeightsError` (an InputError) naming the file, where to
    put it and its URL when the weights are absent.
    """
    from torchvision.models import vgg19

    from retrievegan.weights import resolve_vgg19_weights

    path = resolve_vgg19_weights(configured, config_key)
    net = vgg19(weights=None)
    state = io.read_torch(path, "VGG-19 weights not found")
    net.load_state_dict(state)
    return VggPerceptualLoss(net.features).to(device)
