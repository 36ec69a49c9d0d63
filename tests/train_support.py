"""Tiny sg2im / training configurations for the training, sampling and feature tests (32 px fixture data)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

# sg2im small enough for a few CPU steps per second on the 32 px fixture (16 x 16 masks)
TINY_SG2IM: dict[str, Any] = {
    "embedding_dim": 16,
    "gconv_dim": 16,
    "gconv_hidden_dim": 32,
    "gconv_num_layers": 5,
    "refinement_dims": [16, 8],
    "layout_noise_dim": 2,
    "mask_size": 16,
    "mask_weight": 0.1,
    "eval_mode_after": -1,
    "d_img_arch": "C4-8-2,C4-16-2,C4-16-2",
    "d_obj_arch": "C4-8-2,C4-16-2,C4-16-2",
    "d_obj_fc_dim": 32,
    "crop_size": 32,
}

# the same without batch statistics anywhere: per-image computations, so batch splits are exact
TINY_SG2IM_NO_BATCHNORM: dict[str, Any] = {
    **TINY_SG2IM,
    "normalization": "instance",
    "mask_normalization": "none",
    "d_normalization": "none",
}

TINY_TRAIN: dict[str, Any] = {
    "seed": 0,
    "batch_size": 4,
    "steps": 4,
    "num_workers": 0,
    "checkpoint_every": 2,
    "snapshot_every": 2,
    "log_every": 1,
    "deterministic": True,
    "device": "cpu",
}


@dataclasses.dataclass(frozen=True)
class TinyRun:
    out_dir: Path
    checkpoint: Path
    data_dir: Path
    patches_csv: Path


def train_config(**overrides: Any):
    from retrievegan.config import from_mapping
    from retrievegan.train.config import TrainConfig

    return from_mapping(TrainConfig, {**TINY_TRAIN, **overrides}, "train")


def assert_states_equal(a: dict, b: dict, where: str = "") -> None:
    """Exact equality of two nested state dicts (tensors compared with torch.equal)."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for key in a:
            assert_states_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_states_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), f"{where} differs"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
