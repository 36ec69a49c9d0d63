"""Where boxes sit in an image, as tensors: the sampling grid that warps a box's local frame onto the image, and
each object's rank among the objects of its image. Shared by the scene layout (``retrievegan.models.layout``) and
the appearance-rarity scores (``retrievegan.data.rarity``).
"""

from __future__ import annotations

import torch


def boxes_to_grid(boxes: torch.Tensor, height: int, width: int | None = None) -> torch.Tensor:
    """boxes (O, 4) -> sampling grid (O, H, W, 2) that maps each box's [0, 1]^2 local frame onto the image.

    Output pixel ``(y, x)`` reads the source at local coordinates ``((x + .5)/W - x0) / (x1 - x0)`` (same
    for y), expressed in ``grid_sample``'s [-1, 1] range; outside the box the grid leaves [-1, 1].
    """
    width = height if width is None else width
    x0, y0, x1, y1 = boxes.unbind(1)
    ww = (x1 - x0).clamp(min=1e-6).view(-1, 1, 1)
    hh = (y1 - y0).clamp(min=1e-6).view(-1, 1, 1)
    xs = (torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5) / width
    ys = (torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5) / height
    gx = (xs.view(1, 1, width) - x0.view(-1, 1, 1)) / ww
    gy = (ys.view(1, height, 1) - y0.view(-1, 1, 1)) / hh
    num = boxes.shape[0]
    grid = torch.stack([gx.expand(num, height, width), gy.expand(num, height, width)], dim=3)
    return grid * 2 - 1


def positions_in_image(obj_to_img: torch.Tensor, num_images: int) -> tuple[torch.Tensor, int]:
    """(O,) rank of each object among the objects of its image (in batch order), and the largest count."""
    counts = torch.bincount(obj_to_img, minlength=num_images)
    starts = torch.cumsum(counts, 0) - counts
    order = torch.argsort(obj_to_img, stable=True)
    position = torch.empty_like(obj_to_img)
    position[order] = torch.arange(obj_to_img.shape[0], device=obj_to_img.device) - starts[obj_to_img[order]]
    return position, int(counts.max().item()) if counts.numel() else 0
