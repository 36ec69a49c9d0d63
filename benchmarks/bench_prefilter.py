"""GCN pre-filtering: exact blocked k-NN queries/s vs. a brute-force per-query reference.

A synthetic bank shaped like the embedded benchmark's, larger: ``BENCH_PREFILTER_PATCHES`` objects
(default 40000; 70 % train, 5.5 objects per image, 11 categories with skewed frequencies as COCO's),
``BENCH_PREFILTER_DIM``-dimensional GCN features (default 128, sg2im's width), k = ``BENCH_PREFILTER_K``
(default 32), ``BENCH_PREFILTER_THREADS`` torch threads (default 1). The library (``prefilter_candidates``: query blocks x candidate
blocks, running exact top-k) answers every object; the reference (``brute_force_candidates``: one query
at a time, all its candidates, direct distances, lexsort) answers ``BENCH_PREFILTER_REF_QUERIES`` objects
(default 600), and the two must give identical candidate lists on those rows before a ratio is printed.

    python benchmarks/bench_prefilter.py      (or python -m benchmarks.bench_prefilter)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, row, timed  # noqa: E402

PATCHES = int(os.environ.get("BENCH_PREFILTER_PATCHES", 40_000))
DIM = int(os.environ.get("BENCH_PREFILTER_DIM", 128))
K = int(os.environ.get("BENCH_PREFILTER_K", 32))
REF_QUERIES = int(os.environ.get("BENCH_PREFILTER_REF_QUERIES", 600))
THREADS = int(os.environ.get("BENCH_PREFILTER_THREADS", 1))


def synthetic_bank(num: int, dim: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    per_image = rng.integers(3, 9, num)
    image = np.repeat(np.arange(num), per_image)[:num]
    split = np.where(image < 0.7 * image.max(), "train", np.where(image < 0.85 * image.max(), "val", "test"))
    weights = 1.0 / np.arange(1, 12) ** 0.8  # skewed category frequencies
    category = rng.choice(11, num, p=weights / weights.sum())
    table = pd.DataFrame(
        {
            "patch_id": np.arange(num),
            "split": split,
            "image_index": image,
            "image_id": image,
            "object_index": 0,
            "category": category,
            "category_name": [f"c{c}" for c in category],
            "theme": 0,
        }
    )
    # clustered features (objects of a category share a few modes), like GCN features
    centres = rng.normal(size=(11, 6, dim)).astype(np.float32)
    feats = centres[category, rng.integers(0, 6, num)] + 0.5 * rng.normal(size=(num, dim)).astype(np.float32)
    return table, feats.astype(np.float32)


def run() -> list[dict]:
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)  # a shared 2-core machine: OpenMP spin-waiting makes 2 threads erratic

    from retrievegan.embed.prefilter import PrefilterConfig, brute_force_candidates, prefilter_candidates

    table, feats = synthetic_bank(PATCHES, DIM)
    cfg = PrefilterConfig(k=K, device="cpu")
    fast_s, (ids, dist) = timed(lambda: prefilter_candidates(feats, table, cfg), 1)
    queries = np.random.default_rng(1).choice(PATCHES, size=min(REF_QUERIES, PATCHES), replace=False)
    ref_s, (ref_ids, ref_dist) = timed(lambda: brute_force_candidates(feats, table, K, query_rows=queries), 1)
    if not np.array_equal(ids[queries], ref_ids):
        bad = int(np.flatnonzero((ids[queries] != ref_ids).any(1))[0])
        raise AssertionError(f"blocked prefilter differs from brute force on row {queries[bad]}")
    if not np.allclose(dist[queries], ref_dist, rtol=1e-5, atol=1e-6):
        raise AssertionError("blocked prefilter distances differ from brute force")
    train = int((table["split"] == "train").sum())
    small = PrefilterConfig(k=K, query_block=256, candidate_block=1024, device="cpu")
    small_s, (ids_small, _) = timed(lambda: prefilter_candidates(feats, table, small), 1)
    if not np.array_equal(ids_small, ids):
        raise AssertionError("the result depends on the block sizes")
    note = (
        f"{PATCHES} objects ({train} train), D={DIM}, k={K}, 11 categories; reference: brute force, one "
        f"query at a time, on {len(queries)} random objects; identical candidates: yes; "
        f"threads={torch.get_num_threads()}"
    )
    return [
        row(
            "prefilter",
            f"queries/s (blocks {cfg.query_block} x {cfg.candidate_block})",
            PATCHES / fast_s,
            "queries/s",
            reference=len(queries) / ref_s,
            note=note,
        ),
        row(
            "prefilter",
            f"queries/s (blocks {small.query_block} x {small.candidate_block})",
            PATCHES / small_s,
            "queries/s",
            reference=len(queries) / ref_s,
            note="smaller blocks (peak block matrix 2 MB instead of 16 MB), same candidates: yes",
        ),
    ]


if __name__ == "__main__":
    print_table(run())
