"""Training throughput of the embedded sg2im configuration (config/config.yaml), images per second.

Rows (all measured in this process, on a small synthetic benchmark at 64 px built in a temp folder):

* ``train sg2im``: steady-state images/s of the shared loop's step (G update + D update) with the
  ``train`` and ``sg2im`` sections of the config, all usable CPU threads; reference: one thread (both with
  ``OMP_WAIT_POLICY=PASSIVE``, as ``retrievegan train`` runs); also the CPU seconds per step;
* ``train sg2im (loop)``: images/s of a whole ``retrievegan.train.loop.train`` call (data loading, logging,
  checkpoints, snapshots included) and the implied wall time of the configured number of steps;
* ``layout``: ``masks_to_layout`` (per-image batched matmul) forward + backward against sg2im's
  formulation (grid-sample the ``(O, D, M, M)`` vector-times-mask tensor, sum per image), same result checked.

Sizes: ``BENCH_TRAIN_IMAGES`` training images (default 96), ``BENCH_TRAIN_STEPS`` timed steps (default 12),
``BENCH_TRAIN_THREADS`` (default: usable CPUs).

    python benchmarks/bench_train_throughput.py      (or: python -m benchmarks.bench_train_throughput)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `retrievegan train` sets it (commands/training.py)

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, print_table, row, timed  # noqa: E402

NUM_IMAGES = int(os.environ.get("BENCH_TRAIN_IMAGES", 96))
STEPS = int(os.environ.get("BENCH_TRAIN_STEPS", 12))
THREADS = int(os.environ.get("BENCH_TRAIN_THREADS", len(os.sched_getaffinity(0))))
WARMUP = 2


def _dataset(tmp: Path) -> Path:
    from retrievegan.data.coco import CocoStuffConfig
    from retrievegan.data.preprocess import PreprocessConfig, preprocess
    from retrievegan.data.synth import SynthConfig, generate

    generate(
        SynthConfig(seed=1, num_train=NUM_IMAGES, num_val=24), tmp / "coco", tmp / "vg", progress=False, workers=THREADS
    )
    raw = tmp / "coco"
    coco = CocoStuffConfig(
        instances_train=str(raw / "annotations/instances_train2017.json"),
        stuff_train=str(raw / "annotations/stuff_train2017.json"),
        image_dir_train=str(raw / "images/train2017"),
        instances_val=str(raw / "annotations/instances_val2017.json"),
        stuff_val=str(raw / "annotations/stuff_val2017.json"),
        image_dir_val=str(raw / "images/val2017"),
        num_val=4,
        num_test=8,
    )
    preprocess(
        "coco_stuff",
        coco,
        PreprocessConfig(image_size=64, seed=0, num_workers=THREADS),
        tmp / "data",
        "bench",
        progress=False,
    )
    return tmp / "data"


def _step_rate(method, cfg, batches, threads: int) -> tuple[float, float]:
    """(images/s wall clock, CPU seconds per step) of the loop's training step."""
    import torch

    from retrievegan.train.loop import Trainer

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        trainer = Trainer(method, cfg, torch.device("cpu"))
        for step in range(WARMUP):
            trainer.train_step(batches[step % len(batches)], step, 0)
        start, cpu = time.perf_counter(), time.process_time()
        for step in range(STEPS):
            trainer.train_step(batches[step % len(batches)], WARMUP + step, 0)
        return STEPS * cfg.batch_size / (time.perf_counter() - start), (time.process_time() - cpu) / STEPS
    finally:
        torch.set_num_threads(previous)


def run() -> list[dict]:
    import dataclasses

    import torch
    import torch.nn.functional as F

    from retrievegan.config import from_mapping, load_yaml
    from retrievegan.data.dataset import SceneGraphDataset, collate_scene_graphs
    from retrievegan.models.layout import boxes_to_grid, masks_to_layout
    from retrievegan.train.config import TrainConfig
    from retrievegan.train.loop import train
    from retrievegan.train.registry import create_method

    config = load_yaml(REPO / "config/config.yaml")
    cfg = from_mapping(TrainConfig, config["train"], "train")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        tmp = Path(tmp)
        data_dir = _dataset(tmp)
        ds = SceneGraphDataset(data_dir, "train")
        method = create_method("sg2im", config["sg2im"], ds.spec)
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0)).tolist()
        batches = [
            collate_scene_graphs([ds[i] for i in order[k : k + cfg.batch_size]])
            for k in range(0, len(ds) - cfg.batch_size + 1, cfg.batch_size)
        ]
        fast, _ = _step_rate(method, cfg, batches, THREADS)
        slow, cpu_per_step = _step_rate(method, cfg, batches, 1)
        total_s = cfg.steps * cfg.batch_size / fast
        rows.append(
            row(
                "train sg2im",
                f"images/s (threads={THREADS})",
                fast,
                "images/s",
                reference=slow,
                note=f"reference: 1 thread; embedded config, batch {cfg.batch_size}, 64 px, {STEPS} timed "
                f"steps after {WARMUP} warm-up; G + D updates",
            )
        )
        rows.append(
            row(
                "train sg2im",
                "CPU seconds per step (1 thread)",
                cpu_per_step,
                "s",
                better="lower",
                note="process CPU time: insensitive to other processes sharing the cores",
            )
        )

        loop_cfg = dataclasses.replace(
            cfg,
            steps=STEPS + WARMUP,
            checkpoint_every=max(1, (STEPS + WARMUP) // 2),
            snapshot_every=max(1, (STEPS + WARMUP) // 2),
            device="cpu",
        )
        torch.set_num_threads(THREADS)
        start = time.perf_counter()
        result = train("sg2im", config["sg2im"], loop_cfg, data_dir, tmp / "run", progress=False)
        loop_s = time.perf_counter() - start
        loop_rate = result.steps * cfg.batch_size / loop_s
        rows.append(
            row(
                "train sg2im (loop)",
                f"images/s (threads={THREADS})",
                loop_rate,
                "images/s",
                note=f"whole train() call: {result.steps} steps incl. start-up, data loading "
                f"(workers={cfg.num_workers}), 2 checkpoints, snapshots",
            )
        )
        rows.append(
            row(
                "train sg2im (embedded run)",
                f"estimated wall time of {cfg.steps} steps",
                total_s,
                "s",
                better="lower",
                note="steps x batch / steady-state images/s above",
            )
        )

        batch = batches[0]
        num, dim, size = batch.objs.shape[0], config["sg2im"]["gconv_dim"], ds.image_size
        vecs = torch.randn(num, dim, requires_grad=True)
        masks = batch.masks

        def ours():
            out = masks_to_layout(vecs, batch.boxes, masks, batch.obj_to_img, batch.num_images, size)
            out.square().sum().backward()
            return out.detach()

        def sg2im_way():
            sampled = F.grid_sample(
                vecs.view(num, dim, 1, 1) * masks.unsqueeze(1), boxes_to_grid(batch.boxes, size), align_corners=False
            )
            out = torch.zeros(batch.num_images, dim, size, size).index_add(0, batch.obj_to_img, sampled)
            out.square().sum().backward()
            return out.detach()

        fast_s, a = timed(ours, repeat=5)
        slow_s, b = timed(sg2im_way, repeat=5)
        if not torch.allclose(a, b, atol=1e-4):
            raise AssertionError("masks_to_layout differs from the sg2im formulation")
        rows.append(
            row(
                "layout",
                "layouts/s (forward + backward)",
                1 / fast_s,
                "layouts/s",
                reference=1 / slow_s,
                note=f"reference: sg2im's (O, D, H, W) formulation; O={num}, D={dim}, {size} px, "
                f"batch {batch.num_images}; same result: yes",
            )
        )
    return rows


if __name__ == "__main__":
    print_table(run())
