"""Composites of patches pasted at their boxes, and a whole-image critic of them: claim C1's compatibility critic
(:mod:`retrievegan.eval.mechanism`) and RetrieveGAN's optional composite discriminator D_comp
(``retrievegan.composite_adv_weight``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class CompatCritic(nn.Module):
    """Conv stride-2 stages (kernel 4, LeakyReLU 0.2) then one linear layer over the whole feature map:
    ``images (N, 3, S, S) -> logits (N,)``. The linear layer's receptive field is the whole image, so it can compare
    the colours and textures of objects far apart (a theme clash), which a patch discriminator's local logits cannot.
    """

    def __init__(self, channels: Sequence[int], size: int):
        super().__init__()
        side = size // 2 ** len(channels)
        if not channels or side < 1:
            raise ValueError(f"{len(channels)} stride-2 stages do not fit {size} px images")
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * side * side, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1)).squeeze(1)


def paste_composite(
    crops: torch.Tensor,
    boxes: torch.Tensor,
    obj_to_img: torch.Tensor,
    num_images: int,
    size: int,
    masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Paste object crops into their boxes, in object order (later objects on top).

    ``crops`` ``(O, 3, C, C)``, ``boxes`` ``(O, 4)`` normalised, ``obj_to_img`` ``(O,)``, ``masks`` ``(O, M, M)`` in
    [0, 1] or None (the whole box) -> ``(num_images, 3, size, size)``, zeros where no object lies. Differentiable in
    ``crops`` (bilinear warps, alpha compositing)."""
    import torch.nn.functional as F

    from retrievegan.models.layout import boxes_to_grid, positions_in_image

    grid = boxes_to_grid(boxes.to(crops.dtype), size)
    pasted = F.grid_sample(crops, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (O, 3, S, S)
    alpha_src = torch.ones_like(crops[:, :1]) if masks is None else masks[:, None].to(crops.dtype)
    alpha = F.grid_sample(alpha_src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    position, most = positions_in_image(obj_to_img, num_images)
    canvas = crops.new_zeros((num_images, crops.shape[1], size, size))
    for rank in range(most):  # one object per image at a time
        sel = (position == rank).nonzero().squeeze(1)
        img = obj_to_img.index_select(0, sel)
        a = alpha.index_select(0, sel)
        canvas = canvas.index_copy(0, img, canvas.index_select(0, img) * (1 - a) + pasted.index_select(0, sel) * a)
    return canvas


def batch_composite(batch: Any, crops: torch.Tensor, size: int) -> torch.Tensor:
    """The composites ``(B, 3, size, size)`` of a scene-graph batch: per-object crops ``(O, 3, C, C)`` (the image
    nodes' rows are ignored) pasted at the batch's ground-truth boxes through its object masks (the boxes where the
    source has no masks)."""
    real = batch.real_index()
    masks = None if batch.masks is None else batch.masks.index_select(0, real)
    return paste_composite(
        crops.index_select(0, real),
        batch.boxes.index_select(0, real),
        batch.obj_to_img.index_select(0, real),
        batch.num_images,
        size,
        masks,
    )
