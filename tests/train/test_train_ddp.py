"""DistributedDataParallel with 2 CPU processes (gloo) under torchrun."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_support import TINY_SG2IM_NO_BATCHNORM, TINY_TRAIN, train_config

from retrievegan.data.dataset import SceneGraphDataset, collate_scene_graphs
from retrievegan.train import checkpoint as ckpt
from retrievegan.train.distributed import EpochBatchSampler
from retrievegan.train.loop import Trainer, train
from retrievegan.train.registry import create_method

pytestmark = pytest.mark.slow  # processes, browsers or Snakemake runs: not in `make test-fast`

WORKER = Path(__file__).resolve().parents[1] / "ddp_grads_worker.py"


def _torchrun(args: list[str], timeout: float = 300) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _grads(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{p}": param.grad.clone()
        for name, net in trainer.nets.items()
        for p, param in net.named_parameters()
        if param.grad is not None
    }


def test_sampler_shards_each_global_batch():
    full = list(EpochBatchSampler(20, 8, seed=3, epoch=1))
    shards = [list(EpochBatchSampler(20, 8, seed=3, epoch=1, rank=r, world_size=2)) for r in (0, 1)]
    assert len(full) == 2 and all(len(b) == 8 for b in full)
    assert [a + b for a, b in zip(*shards)] == full
    assert list(EpochBatchSampler(20, 8, seed=3, epoch=1, start=1)) == full[1:]
    assert full != list(EpochBatchSampler(20, 8, seed=3, epoch=2))


def test_two_gloo_processes_give_the_gradients_of_one_process_on_the_doubled_batch(tiny_dataset, tmp_path):
    ds = SceneGraphDataset(tiny_dataset.data_dir, "train")
    # equal object counts per image: every loss averages over the same number of terms in each process
    by_count = collections.defaultdict(list)
    for i in range(len(ds)):
        by_count[len(ds.object_arrays(i)[0])].append(i)
    indices = next(v for v in by_count.values() if len(v) >= 4)[:4]
    cfg = {**TINY_TRAIN, "batch_size": 4}
    params = TINY_SG2IM_NO_BATCHNORM
    _torchrun(
        [
            str(WORKER),
            str(tiny_dataset.data_dir),
            str(tmp_path),
            ",".join(map(str, indices)),
            json.dumps(params),
            json.dumps(cfg),
        ]
    )
    rank0 = torch.load(tmp_path / "grads_rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "grads_rank1.pt", weights_only=True)

    method = create_method("sg2im", params, ds.spec)
    single = Trainer(method, train_config(**cfg), torch.device("cpu"))
    single.train_step(collate_scene_graphs([ds[i] for i in indices]), 0, 0)
    expected = _grads(single)
    half = Trainer(method, train_config(**cfg), torch.device("cpu"))
    half.train_step(collate_scene_graphs([ds[i] for i in indices[:2]]), 0, 0)
    half_grads = _grads(half)

    assert set(rank0) == set(expected) and len(expected) > 20
    assert any(k.startswith("d_obj.") for k in expected) and any(k.startswith("generator.crn") for k in expected)
    for key, grad in expected.items():
        assert torch.equal(rank0[key], rank1[key]), key  # all-reduced: identical on both processes
        assert torch.allclose(rank0[key], grad, rtol=1e-4, atol=1e-7), key
    # without the all-reduce a process would see its half batch only, which differs
    assert any(not torch.allclose(half_grads[k], expected[k], rtol=1e-4, atol=1e-7) for k in expected)


@pytest.mark.parametrize("rarity", [False, True], ids=["default", "rarity_rebalancing"])
def test_cli_training_under_torchrun_matches_one_process(rarity, tiny_dataset, tmp_path):
    """End to end through `retrievegan train` under torchrun. Random batches have unequal object counts per
    process, so only per-image losses (pixel L1, D_img) split exactly: the object-averaged ones are off here.
    With rarity rebalancing (both switches) the processes take disjoint shares of the sampler's one stream and
    weight their own images' pixel losses: the same run as one process."""
    from retrievegan.data.rarity import RarityConfig, compute_rarity

    cfg = {**TINY_TRAIN, "steps": 2, "snapshot_every": 0}
    options, kwargs = [], {}
    if rarity:
        scores = compute_rarity(tiny_dataset.data_dir, tmp_path / "rarity", RarityConfig(), progress=False)
        both = RarityConfig(dataset=True, loss=True)
        options = ["--rarity-params", json.dumps({"dataset": True, "loss": True}), "--rarity-scores", str(scores)]
        kwargs = {"rarity": both, "rarity_scores": scores}
    # (and no normalisation: a bias followed by instance norm has a ~0 gradient, whose sign Adam amplifies)
    params = {
        **TINY_SG2IM_NO_BATCHNORM,
        "normalization": "none",
        "bbox_weight": 0.0,
        "mask_weight": 0.0,
        "d_obj_weight": 0.0,
        "ac_weight": 0.0,
    }
    _torchrun(
        [
            "-m",
            "retrievegan.cli",
            "train",
            "--no-progress",
            "--method",
            "sg2im",
            "--params",
            json.dumps(params),
            "--train-params",
            json.dumps(cfg),
            "--data-dir",
            str(tiny_dataset.data_dir),
            "--out-dir",
            str(tmp_path / "ddp"),
            "--threads",
            "1",
            *options,
        ]
    )
    run = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert run["world_size"] == 2 and run["steps"] == 2
    single = train(
        "sg2im", params, train_config(**cfg), tiny_dataset.data_dir, tmp_path / "single", progress=False, **kwargs
    )
    ddp_payload, single_payload = ckpt.load(tmp_path / "ddp" / "checkpoint.pt"), ckpt.load(single.checkpoint)
    assert ddp_payload.get("batch_sampler") == single_payload.get("batch_sampler")
    assert ("batch_sampler" in single_payload) == rarity
    a, b = ddp_payload["networks"], single_payload["networks"]
    assert set(a) == set(b) == {"generator", "d_img"}
    for name in b:
        for key, value in b[name].items():
            assert torch.allclose(a[name][key].float(), value.float(), rtol=1e-4, atol=1e-5), f"{name}.{key}"
