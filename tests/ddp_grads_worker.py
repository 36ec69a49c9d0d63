"""Run under `torchrun --nproc_per_node K`: one training step on this process's share of a fixed global
batch, then save every network's gradients to `<out_dir>/grads_rank<r>.pt` (tests/train/test_train_ddp.py).

argv: data_dir out_dir image_index[,image_index...]   (the global batch, in order)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from retrievegan.data.dataset import SceneGraphDataset, collate_scene_graphs
from retrievegan.train.distributed import init_distributed
from retrievegan.train.loop import Trainer
from retrievegan.train.registry import create_method


def main() -> None:
    data_dir, out_dir, indices = sys.argv[1], Path(sys.argv[2]), [int(i) for i in sys.argv[3].split(",")]
    params = json.loads(sys.argv[4])
    train_cfg = json.loads(sys.argv[5])
    from retrievegan.config import from_mapping
    from retrievegan.train.config import TrainConfig

    info = init_distributed(use_cuda=False)
    share = len(indices) // info.world_size
    mine = indices[info.rank * share : (info.rank + 1) * share]  # contiguous shares, as EpochBatchSampler
    ds = SceneGraphDataset(data_dir, "train")
    batch = collate_scene_graphs([ds[i] for i in mine])
    method = create_method("sg2im", params, ds.spec)
    trainer = Trainer(method, from_mapping(TrainConfig, train_cfg, "train"), torch.device("cpu"), info)
    trainer.train_step(batch, 0, 0)
    grads = {
        f"{name}.{p}": param.grad.clone()
        for name, net in trainer.nets.items()
        for p, param in net.named_parameters()
        if param.grad is not None
    }
    torch.save(grads, out_dir / f"grads_rank{info.rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
