"""Which device a stage runs on, and what it is (for run.json and measured tables).

``pick_device(name, key)`` is the one place that turns a config's ``device`` value (``auto`` | ``cpu`` |
``cuda``) into a ``torch.device``: ``auto`` takes CUDA when it is available, ``cuda`` without a CUDA device
is a :class:`~retrievegan.errors.ConfigError` naming the config key. Training, DAMSM pre-training, sampling
and the evaluation stages that run a network all call it.
"""

from __future__ import annotations

import platform
from typing import Any

import torch

from retrievegan.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def pick_device(name: str, key: str = "device", local_rank: int | None = None) -> torch.device:
    """``torch.device`` for a config value ``name``; ``local_rank`` picks the GPU of a DDP process."""
    if name not in DEVICES:
        raise ConfigError(f"{key} must be one of {DEVICES}, got {name!r}")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(f"{key} is cuda but no CUDA device is available")
        return torch.device("cuda", local_rank) if local_rank is not None else torch.device("cuda")
    return torch.device("cpu")


def describe(device: torch.device | str) -> dict[str, Any]:
    """The device, torch / CUDA / cuDNN versions and (CUDA) the GPU's name, memory and compute capability."""
    device = torch.device(device)
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            gpus_visible=torch.cuda.device_count(),
        )
    else:
        info.update(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return info
