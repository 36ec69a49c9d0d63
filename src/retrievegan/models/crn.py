"""Cascaded refinement network (Chen & Koltun, ICCV 2017) as sg2im uses it: layout -> image.

Module k works at resolution ``S / 2^(K-k)``: it concatenates the layout (average-pooled to its
resolution) with the upsampled features of the previous module and applies two 3x3 conv + norm +
activation blocks. The first module starts from a zero feature map of one channel. A final 3x3 conv,
activation and 1x1 conv give the 3-channel image (ImageNet-normalised space, no output squashing).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from retrievegan.models.layers import activation, norm2d


class RefinementModule(nn.Module):
    """layout (N, L, H', W') with H' >= H, feats (N, Cin, H, W) -> (N, Cout, H, W)."""

    kaiming_normal_init = True

    def __init__(
        self,
        layout_dim: int,
        input_dim: int,
        output_dim: int,
        normalization: str = "batch",
        activation_name: str = "leakyrelu-0.2",
    ):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in in (layout_dim + input_dim, output_dim):
            layers.append(nn.Conv2d(c_in, output_dim, kernel_size=3, padding=1))
            norm = norm2d(normalization, output_dim)
            if norm is not None:
                layers.append(norm)
            layers.append(activation(activation_name))
        self.net = nn.Sequential(*layers)

    def forward(self, layout: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        size = feats.shape[-1]
        if layout.shape[-1] != size:
            factor = layout.shape[-1] // size
            if factor * size != layout.shape[-1]:
                raise ValueError(f"layout size {layout.shape[-1]} is not a multiple of feature size {size}")
            layout = F.avg_pool2d(layout, kernel_size=factor, stride=factor)
        return self.net(torch.cat([layout, feats], dim=1))


class RefinementNetwork(nn.Module):
    """layout (N, layout_dim, S, S) -> image (N, 3, S, S); ``dims`` are the modules' widths
    (sg2im: 1024, 512, 256, 128, 64), S must be divisible by 2^len(dims)."""

    kaiming_normal_init = True

    def __init__(
        self,
        layout_dim: int,
        dims: Sequence[int] = (1024, 512, 256, 128, 64),
        normalization: str = "batch",
        activation_name: str = "leakyrelu-0.2",
    ):
        super().__init__()
        if not dims:
            raise ValueError("the refinement network needs at least one module")
        self.modules_ = nn.ModuleList()
        previous = 1
        for width in dims:
            self.modules_.append(RefinementModule(layout_dim, previous, width, normalization, activation_name))
            previous = width
        self.output = nn.Sequential(
            nn.Conv2d(previous, previous, kernel_size=3, padding=1),
            activation(activation_name),
            nn.Conv2d(previous, 3, kernel_size=1),
        )

    def forward(self, layout: torch.Tensor) -> torch.Tensor:
        num, _, height, width = layout.shape
        scale = 2 ** len(self.modules_)
        if height % scale or width % scale:
            raise ValueError(f"image size {height}x{width} is not divisible by 2^{len(self.modules_)}")
        feats = layout.new_zeros(num, 1, height // scale, width // scale)
        for module in self.modules_:
            feats = module(layout, F.interpolate(feats, scale_factor=2, mode="nearest"))
        return self.output(feats)
