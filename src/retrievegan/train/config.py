"""Configuration of the training loop (the config's ``train`` section) and of one Adam optimiser."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class AdamConfig:
    """One network's Adam optimiser (a method section holds one per network)."""

    lr: float = 1e-4  # sg2im: 1e-4 for G and both Ds
    betas: tuple[float, float] = (0.9, 0.999)  # sg2im: torch defaults; RetrieveGAN: (0, 0.9)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.lr < 0:
            raise ValueError("lr must be >= 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError("betas must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The common ``train`` section: how any method is trained (its networks and losses live in its section)."""

    seed: int = 0  # root of every derived seed (init, per-image noise, data order)
    batch_size: int = 32  # global batch (split evenly over DDP processes); sg2im 32, paper 16
    steps: int = 1_000_000  # optimisation steps (one G update + one D update each); sg2im 1M
    num_workers: int = 4  # DataLoader worker processes (0: load in the training process)
    checkpoint_every: int = 10_000  # steps between resumable checkpoints (sg2im: 10000)
    snapshot_every: int = 0  # steps between generator snapshots for progress figures (0: first and last only)
    log_every: int = 10  # steps between lines of losses.jsonl (sg2im: print_every 10)
    amp: bool = False  # mixed precision: torch.autocast on the run's device (CUDA; also the CPU, e.g. for tests)
    amp_dtype: Literal["float16", "bfloat16"] = "float16"  # float16 adds a GradScaler per phase
    compile: bool = False  # torch.compile every network
    compile_backend: str = "inductor"
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"  # reduce-overhead: CUDA graphs
    adam: Literal["auto", "fused", "foreach"] = "auto"  # Adam kernels; auto: fused on CUDA, foreach on the CPU
    channels_last: bool = False  # networks and images in channels-last memory format (tensor cores like it)
    deterministic: bool = False  # torch.use_deterministic_algorithms (warn-only on CUDA) + no cuDNN autotuning
    device: Literal["auto", "cpu", "cuda"] = "auto"
    sync_batchnorm: bool = True  # BatchNorm -> SyncBatchNorm under DDP on CUDA (batch statistics over all processes)
    skip_nonfinite: bool = True  # skip an update whose loss is NaN/inf (sg2im), instead of stopping

    def __post_init__(self) -> None:
        for name in ("batch_size", "steps", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.num_workers < 0 or self.snapshot_every < 0:
            raise ValueError("num_workers and snapshot_every must be >= 0")

    # keys that do not change what a run computes: a run may resume with other values for them
    OPERATIONAL = (
        "steps",
        "num_workers",
        "checkpoint_every",
        "snapshot_every",
        "log_every",
        "compile",
        "compile_backend",
        "compile_mode",
        "adam",
        "channels_last",
        "device",
    )
