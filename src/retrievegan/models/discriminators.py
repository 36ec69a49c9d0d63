"""Discriminators shared by sg2im, layout2im, PasteGAN and RetrieveGAN.

* ``PatchDiscriminator`` (D_img): a strided CNN over the whole image ending in a 1x1 conv, one real/fake
  score per receptive-field patch. (sg2im builds the 1x1 classifier but returns the CNN features
  instead; we apply it, which is what the module is meant to do.)
* ``AcCropDiscriminator`` (D_obj): crops every object at its box (differentiable bilinear crops),
  a CNN + global average pooling + FC, then a real/fake score and an auxiliary classifier over the
  object categories (AC-GAN).
"""

from __future__ import annotations

import torch
from torch import nn

from retrievegan.models.layers import cnn
from retrievegan.models.layout import crop_boxes

SG2IM_D_ARCH = "C4-64-2,C4-128-2,C4-256-2"


class PatchDiscriminator(nn.Module):
    """images (N, C, S, S) -> patch scores (N, 1, h, w) (logits)."""

    def __init__(
        self,
        arch: str = SG2IM_D_ARCH,
        in_channels: int = 3,
        normalization: str = "batch",
        activation_name: str = "leakyrelu-0.2",
        padding: str = "valid",
    ):
        super().__init__()
        self.cnn, channels = cnn(arch, in_channels, normalization, activation_name, padding)
        self.classifier = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.cnn(images))


class AcCropDiscriminator(nn.Module):
    """Object discriminator with an auxiliary classifier.

    forward(images (N, 3, S, S), boxes (O, 4), obj_to_img (O,)) -> (real/fake logits (O,), class logits (O, C)).
    ``crops(...)`` / ``score_crops(crops (O, 3, c, c))`` split the two stages for callers with their own crops.
    """

    def __init__(
        self,
        num_classes: int,
        arch: str = SG2IM_D_ARCH,
        crop_size: int = 32,
        normalization: str = "batch",
        activation_name: str = "leakyrelu-0.2",
        padding: str = "valid",
        fc_dim: int = 1024,
    ):
        super().__init__()
        self.crop_size = crop_size
        self.cnn, channels = cnn(arch, 3, normalization, activation_name, padding)
        self.fc = nn.Linear(channels, fc_dim)
        self.real_head = nn.Linear(fc_dim, 1)
        self.class_head = nn.Linear(fc_dim, num_classes)

    def crops(self, images: torch.Tensor, boxes: torch.Tensor, obj_to_img: torch.Tensor) -> torch.Tensor:
        return crop_boxes(images, boxes, obj_to_img, self.crop_size)

    def score_crops(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.fc(self.cnn(crops).mean(dim=(2, 3)))
        return self.real_head(feats).squeeze(1), self.class_head(feats)

    def forward(
        self, images: torch.Tensor, boxes: torch.Tensor, obj_to_img: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.score_crops(self.crops(images, boxes, obj_to_img))
