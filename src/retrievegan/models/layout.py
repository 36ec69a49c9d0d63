"""Boxes and masks: regression heads, scene layouts, differentiable crops.

Boxes are normalised ``(x0, y0, x1, y1)`` in [0, 1] image coordinates. Sampling uses
``grid_sample(align_corners=False)`` with pixel centres at ``(k + 0.5) / size``, so a box covering the
whole image maps a source exactly onto the image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from retrievegan.data.box_grid import boxes_to_grid, positions_in_image
from retrievegan.models.layers import mlp, norm2d

BOX_ONLY_MASK_SIZE = 8  # sg2im spreads a vector over its box through an 8 x 8 all-ones mask


class BoxRegressor(nn.Module):
    """MLP ``D -> H -> 4``: obj_vecs (O, D) -> boxes (O, 4) (x0, y0, x1, y1), unconstrained.

    sg2im ends this MLP with a ReLU; we leave the output linear (ours), so the box loss has a gradient
    everywhere.
    """

    def __init__(self, input_dim: int, hidden_dim: int = 512, mlp_normalization: str = "none"):
        super().__init__()
        self.net = mlp([input_dim, hidden_dim, 4], normalization=mlp_normalization, final_activation=False)

    def forward(self, obj_vecs: torch.Tensor) -> torch.Tensor:
        return self.net(obj_vecs)


class MaskRegressor(nn.Module):
    """obj_vecs (O, D) -> mask logits (O, M, M): from 1 x 1, repeat (upsample x2, norm, 3x3 conv, ReLU)
    until M, then a 1x1 conv to one channel (sg2im's mask network; M must be a power of two)."""

    def __init__(self, input_dim: int, mask_size: int = 16, normalization: str = "batch"):
        super().__init__()
        if mask_size < 1 or mask_size & (mask_size - 1):
            raise ValueError(f"mask_size must be a power of two, got {mask_size}")
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(mask_size))):
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            norm = norm2d(normalization, input_dim)
            if norm is not None:
                layers.append(norm)
            layers += [nn.Conv2d(input_dim, input_dim, kernel_size=3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(input_dim, 1, kernel_size=1))
        self.net = nn.Sequential(*layers)
        self.mask_size = mask_size

    def forward(self, obj_vecs: torch.Tensor) -> torch.Tensor:
        num = obj_vecs.shape[0]
        return self.net(obj_vecs.view(num, -1, 1, 1)).view(num, self.mask_size, self.mask_size)


def masks_to_layout(
    vecs: torch.Tensor,
    boxes: torch.Tensor,
    masks: torch.Tensor | None,
    obj_to_img: torch.Tensor,
    num_images: int,
    height: int,
    width: int | None = None,
    positions: torch.Tensor | None = None,
    max_objects: int | None = None,
) -> torch.Tensor:
    """Scene layout: each object's vector spread over its mask warped into its box, summed per image.

    vecs: (O, D); boxes: (O, 4); masks: (O, M, M) soft masks in [0, 1] or None (the whole box);
    obj_to_img: (O,) int64 in [0, N). Returns (N, D, H, W).
    Equal to sg2im's ``grid_sample(vec * mask)`` (sampling is linear), computed as ``vec * grid_sample(mask)``.
    ``positions`` (O,) (each object's rank in its image) and ``max_objects`` (host int): the batch's
    ``object_index`` and ``max_objects``; without them they are computed here (a host synchronisation on a GPU).
    """
    width = height if width is None else width
    num = vecs.shape[0]
    if masks is None:
        masks = vecs.new_ones(num, BOX_ONLY_MASK_SIZE, BOX_ONLY_MASK_SIZE)
    if masks.dim() != 3 or masks.shape[0] != num:
        raise ValueError(f"masks must be (O, M, M) with O = {num}, got {tuple(masks.shape)}")
    grid = boxes_to_grid(boxes.to(masks.dtype), height, width)
    sampled = F.grid_sample(masks.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # per image: (D, O_n) @ (O_n, H*W), batched over images with the object lists zero-padded
    if positions is None or max_objects is None:
        position, max_objects = positions_in_image(obj_to_img, num_images)
    else:
        position = positions
    dim = vecs.shape[1]
    padded_vecs = vecs.new_zeros(num_images, max_objects, dim).index_put((obj_to_img, position), vecs)
    padded_masks = vecs.new_zeros(num_images, max_objects, height * width).index_put(
        (obj_to_img, position), sampled.view(num, height * width).to(vecs.dtype)
    )
    return torch.bmm(padded_vecs.transpose(1, 2), padded_masks).view(num_images, dim, height, width)


def boxes_to_layout(
    vecs: torch.Tensor,
    boxes: torch.Tensor,
    obj_to_img: torch.Tensor,
    num_images: int,
    height: int,
    width: int | None = None,
) -> torch.Tensor:
    """``masks_to_layout`` without masks: (O, D), (O, 4), (O,) -> (N, D, H, W)."""
    return masks_to_layout(vecs, boxes, None, obj_to_img, num_images, height, width)


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, obj_to_img: torch.Tensor, size: int) -> torch.Tensor:
    """Differentiable bilinear crops: images (N, C, H, W), boxes (O, 4), obj_to_img (O,) -> (O, C, size, size)."""
    x0, y0, x1, y1 = boxes.to(images.dtype).unbind(1)
    steps = (torch.arange(size, device=images.device, dtype=images.dtype) + 0.5) / size
    gx = x0.view(-1, 1, 1) + (x1 - x0).view(-1, 1, 1) * steps.view(1, 1, size)
    gy = y0.view(-1, 1, 1) + (y1 - y0).view(-1, 1, 1) * steps.view(1, size, 1)
    num = boxes.shape[0]
    grid = torch.stack([gx.expand(num, size, size), gy.expand(num, size, size)], dim=3) * 2 - 1
    return F.grid_sample(images[obj_to_img], grid, mode="bilinear", padding_mode="border", align_corners=False)
