"""The image datasets torch-fidelity and LPIPS read: each item is a (3, H, W) uint8 tensor (sample PNGs of a
run, the preprocessed ``{split}_images.npy``, the two samples of one scene graph). Reading and validating the sample
folders themselves is :mod:`retrievegan.eval.samples` (torch-free)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from retrievegan.eval.samples import read_png


class PngDataset(Dataset):
    """Items: (3, H, W) uint8 tensors read from ``paths`` (in that order)."""

    def __init__(self, paths: Sequence[Path], size: tuple[int, int] | None = None):
        self.paths = list(paths)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(read_png(self.paths[i], self.size)).permute(2, 0, 1).contiguous()


class ArrayDataset(Dataset):
    """Items: (3, S, S) uint8 tensors from an (N, S, S, 3) uint8 array (e.g. ``{split}_images.npy``)."""

    def __init__(self, images: np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected (N, S, S, 3) uint8, got {images.shape} {images.dtype}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1).contiguous()


class PairDataset(Dataset):
    """Items: (2, 3, H, W) uint8: the two samples of one scene graph."""

    def __init__(self, first: Dataset, second: Dataset):
        if len(first) != len(second):
            raise ValueError("pair datasets must have equal lengths")
        self.first, self.second = first, second

    def __len__(self) -> int:
        return len(self.first)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.stack([self.first[i], self.second[i]])
