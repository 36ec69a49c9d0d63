"""Rarity rebalancing overheads (conditional IMLE supplement; retrievegan.data.rarity, retrievegan.train.rebalance).

* label maps + rarity mask of a training batch (what the loop adds per step with ``rarity.loss``), vectorised,
  against a per-image, per-object painting loop in the same process (identical labels checked);
* the rarity batch sampler's global batch (``rarity.dataset``) against the default epoch sampler's batch, at paper
  scale (COCO-Stuff: ~25k training images, 184 categories);
* the per-category KDE (scipy gaussian_kde) of the rarity stage, colours per second.

Sizes: ``BENCH_RARITY_BATCH`` images per batch (default 16) at ``BENCH_RARITY_SIZE`` px (default 64), 3..8 objects
with 16 x 16 masks drawn from a fixed seed.

    python -m benchmarks.bench_rarity
"""

from __future__ import annotations

import os

from benchmarks.common import print_table, row, timed

BATCH = int(os.environ.get("BENCH_RARITY_BATCH", 16))
SIZE = int(os.environ.get("BENCH_RARITY_SIZE", 64))
PAPER_IMAGES, PAPER_CATEGORIES = 24972, 184  # sg2im's COCO-Stuff train split, COCO-Stuff categories


def _batch(rng):
    import numpy as np
    import torch

    counts = rng.integers(3, 9, BATCH)
    objs, boxes, masks, owner = [], [], [], []
    for n, count in enumerate(counts):
        for _ in range(count):
            x0, y0 = rng.uniform(0, 0.7, 2)
            w, h = rng.uniform(0.1, 1.0 - max(x0, y0), 2)
            objs.append(int(rng.integers(1, 20)))
            boxes.append((x0, y0, x0 + w, y0 + h))
            masks.append(rng.random((16, 16)) < 0.7)
            owner.append(n)
        objs.append(0)
        boxes.append((0.0, 0.0, 1.0, 1.0))
        masks.append(np.ones((16, 16), bool))
        owner.append(n)
    return (
        torch.tensor(objs),
        torch.tensor(boxes, dtype=torch.float32),
        torch.from_numpy(np.stack(masks).astype(np.float32)),
        torch.tensor(owner),
    )


def _loop_labels(objs, boxes, masks, owner, num_images, size):
    """Reference: paint each image's objects one at a time, larger first (the earlier object wins a tie)."""
    import torch
    import torch.nn.functional as F

    from retrievegan.models.layout import boxes_to_grid

    out = torch.full((num_images, size, size), -1, dtype=torch.int64)
    for n in range(num_images):
        idx = [i for i in range(len(objs)) if int(owner[i]) == n and int(objs[i]) != 0]
        covers = []
        for i in idx:
            grid = boxes_to_grid(boxes[i : i + 1], size)
            warped = F.grid_sample(
                masks[i : i + 1, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )[0, 0]
            covers.append(warped >= 0.5)
        areas = [int(c.sum()) for c in covers]
        for k in sorted(range(len(idx)), key=lambda k: (-areas[k], -k)):
            out[n][covers[k]] = int(objs[idx[k]])
    return out


def run() -> list[dict]:
    import numpy as np
    import torch

    from retrievegan.data.rarity import RarityConfig, category_kde, label_maps, rarity_mask
    from retrievegan.train.distributed import EpochBatchSampler
    from retrievegan.train.rebalance import RarityBatchSampler

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    objs, boxes, masks, owner = _batch(rng)
    scores = torch.from_numpy(rng.uniform(0.1, 2.0, (BATCH, 20)))

    def vectorised():
        return rarity_mask(label_maps(objs, boxes, masks, owner, BATCH, SIZE), scores)

    fast_s, mask = timed(vectorised, 5)
    slow_s, labels = timed(lambda: _loop_labels(objs, boxes, masks, owner, BATCH, SIZE), 3)
    if not torch.equal(label_maps(objs, boxes, masks, owner, BATCH, SIZE), labels):
        raise AssertionError("vectorised label maps differ from the painting loop")
    if not (mask > 0).all():
        raise AssertionError("rarity mask has a zero")
    rows = [
        row(
            "rarity mask",
            f"ms per batch ({BATCH} images, {SIZE} px)",
            fast_s * 1e3,
            "ms",
            reference=slow_s * 1e3,
            better="lower",
            note=f"label maps + normalised mask, 1 thread; reference: per-image per-object painting loop "
            f"(labels only); identical labels: yes; {len(objs)} objects",
        )
    ]

    paper = rng.uniform(0, 1, (PAPER_IMAGES, PAPER_CATEGORIES)) * (rng.random((PAPER_IMAGES, PAPER_CATEGORIES)) < 0.05)
    top = np.argsort(-paper.sum(0))[:5]
    build_s, sampler = timed(lambda: RarityBatchSampler(paper, top, BATCH, seed=0), 1)
    epoch = EpochBatchSampler(PAPER_IMAGES, BATCH, seed=0, epoch=0)
    draws = 200
    rarity_s, _ = timed(lambda: [sampler.local_batch(b) for b in range(draws)], 3)
    epoch_s, _ = timed(lambda: [b for _, b in zip(range(draws), iter(epoch))], 3)
    rows.append(
        row(
            "rarity sampler",
            f"ms per global batch of {BATCH} (N={PAPER_IMAGES})",
            rarity_s / draws * 1e3,
            "ms",
            reference=epoch_s / draws * 1e3,
            better="lower",
            note=f"reference: the default epoch sampler (its permutation amortised over {draws} batches); "
            f"set-up (CDFs of 5 categories) {build_s:.2f} s",
        )
    )

    colours = np.clip(rng.normal(0.5, 0.15, (5000, 3)), 0, 1)
    kde_s, fit = timed(lambda: category_kde(colours, RarityConfig()), 1)
    rows.append(
        row(
            "rarity scores",
            "colours/s (one category, gaussian_kde)",
            len(colours) / kde_s,
            "colours/s",
            note=f"{len(colours)} colours evaluated at themselves (O(n^2)); method "
            f"{'kde' if fit.method == 1 else 'fallback'}",
        )
    )
    return rows


if __name__ == "__main__":
    print_table(run())
