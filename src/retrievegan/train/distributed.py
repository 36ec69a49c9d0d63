"""DistributedDataParallel plumbing: process group from torchrun's environment, data sharding.

Under ``torchrun --nproc-per-node K`` each process trains on ``batch_size / K`` images of every global
batch (``EpochBatchSampler``); DDP averages the gradients, so with per-image losses a K-process run
computes the gradients of the one-process run on the whole batch. Losses that average over objects
average per process first (the usual DDP convention); batch normalisation uses per-process statistics
unless ``sync_batchnorm`` converts it (CUDA only, as torch's SyncBatchNorm).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

from retrievegan.seeds import derive_seed, tag

DATA_ORDER = tag("data-order")


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(use_cuda: bool) -> DistInfo:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1), else run as a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


class EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Index batches of one epoch: a permutation from ``(seed, epoch)``, cut into global batches of
    ``batch_size`` (the remainder dropped), starting at batch ``start``; each process gets its contiguous
    ``batch_size / world_size`` share of every global batch."""

    def __init__(
        self, num_items: int, batch_size: int, seed: int, epoch: int, start: int = 0, rank: int = 0, world_size: int = 1
    ):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        if num_items < batch_size:
            raise ValueError(f"the dataset has {num_items} items, fewer than one batch of {batch_size}")
        self.num_batches = num_items // batch_size
        if not 0 <= start <= self.num_batches:
            raise ValueError(f"start batch {start} outside [0, {self.num_batches}]")
        self.num_items, self.batch_size, self.seed, self.epoch, self.start = num_items, batch_size, seed, epoch, start
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return self.num_batches - self.start

    def __iter__(self) -> Iterator[list[int]]:
        gen = torch.Generator().manual_seed(derive_seed(self.seed, DATA_ORDER, self.epoch))
        order = torch.randperm(self.num_items, generator=gen)[: self.num_batches * self.batch_size]
        share = self.batch_size // self.world_size
        for batch in order.view(self.num_batches, self.batch_size)[self.start :]:
            yield batch[self.rank * share : (self.rank + 1) * share].tolist()
