"""Small patch CNNs shared by the category CNN (frozen patch features) and the co-occurrence embedding.

Patches are the bank's ``(P, C, C, 3)`` uint8 crops; ``to_input`` turns a batch into ``(B, 3, C, C)``
floats in [-1, 1]. ``PatchCNN`` is a stack of stages ``conv3x3 -> BatchNorm -> ReLU -> maxpool 2``;
``multiscale_pool`` summarises the input and every stage by the per-channel spatial mean and standard
deviation (the "style statistics" of Huang & Belongie's AdaIN): the input and early stages keep colour
and texture, the last stage the shape. Networks are built with ``retrievegan.models.init.build`` so no
global RNG is touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def to_input(patches: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(B, C, C, 3)`` uint8 -> ``(B, 3, C, C)`` float32 in [-1, 1] on ``device``."""
    if isinstance(patches, np.ndarray):  # memmap slices are read-only: copy those (torch wants writable)
        patches = torch.from_numpy(np.require(patches, requirements=["C", "W"]))
    x = patches
    return x.to(device).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def mean_std(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, 2C)``: per-channel spatial mean, then standard deviation."""
    flat = x.flatten(2)
    return torch.cat([flat.mean(-1), flat.std(-1, unbiased=False)], dim=1)


class PatchCNN(nn.Module):
    """``len(channels)`` stages of conv3x3 stride 2 -> BatchNorm -> ReLU on ``(B, 3, C, C)`` patches."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        if not channels:
            raise ValueError("PatchCNN needs at least one stage")
        self.channels = tuple(int(c) for c in channels)
        blocks = []
        prev = 3
        for c in self.channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(prev, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)
                )
            )
            prev = c
        self.blocks = nn.ModuleList(blocks)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, C, C)`` -> ``[(B, c_s, C / 2^(s+1), C / 2^(s+1)) for each stage s]``."""
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def multiscale_dim(self) -> int:
        """Width of ``multiscale_pool``: mean and std of the 3 input channels and of every stage."""
        return 2 * (3 + sum(self.channels))

    def multiscale_pool(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, C, C)`` -> ``(B, multiscale_dim())``: ``mean_std`` of the input and of every stage."""
        return torch.cat([mean_std(x)] + [mean_std(s) for s in self.stages(x)], dim=1)


class CategoryCNN(nn.Module):
    """``PatchCNN`` + linear classifier on the globally averaged last stage (trained on category labels)."""

    def __init__(self, channels: Sequence[int], num_classes: int):
        super().__init__()
        self.trunk = PatchCNN(channels)
        self.head = nn.Linear(self.trunk.channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, C, C)`` -> logits ``(B, num_classes)``."""
        return self.head(self.trunk.stages(x)[-1].mean(dim=(2, 3)))


class CooccurNet(nn.Module):
    """F_occur: ``PatchCNN`` multi-scale statistics -> linear -> L2-normalised embedding ``(B, embed_dim)``."""

    def __init__(self, channels: Sequence[int], embed_dim: int):
        super().__init__()
        self.trunk = PatchCNN(channels)
        self.head = nn.Linear(self.trunk.multiscale_dim(), embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, C, C)`` -> ``(B, embed_dim)`` unit vectors."""
        return F.normalize(self.head(self.trunk.multiscale_pool(x)), dim=1)
