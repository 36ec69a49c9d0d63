"""Compatibility of the retrieval over training (`retrievegan compat-trace`; claim C1's trace).

The generator snapshots of a run (``models/<run>/snapshots/step_<n>.pt``, generator-role networks: for RetrieveGAN
the generator and E_p, the ``retriever``) hold E_p at steps 0, every ``train.snapshot_every`` and the last. For each
snapshot, E_p retrieves patches for every scene graph of a split (the sampler's test-time retrieval,
:mod:`retrievegan.eval.sampled_retrieval`: hard selection, random query candidate, Gumbel noise, each sample seed's
per-image generators) and the sets are scored like `retrievegan compatibility` (single-theme share, pairwise
same-theme rate, scene-graph bootstrap intervals). The random choice among the same first ``k`` candidates (one draw
per object, :func:`~retrievegan.eval.compatibility.random_candidate_records`) is scored once on the same scene graphs
as the floor. Only E_p matters for the retrievals: the generator's weights are loaded but not used.

The workflow measures it on the **val** split (`claims.trace_split`): a diagnostic that may guide choices, so
never on test.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievegan import io
from retrievegan.errors import InputError


def compatibility_trace(
    checkpoint: str | os.PathLike[str],
    snapshots: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    patches_csv: str | os.PathLike[str],
    out_json: str | os.PathLike[str] | None,
    split: str = "val",
    seeds: Sequence[int] = (0, 1),
    batch_size: int = 64,
    device_name: str = "auto",
    n_boot: int = 2000,
    confidence: float = 0.95,
    eval_seed: int = 0,
    inputs: dict[str, str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the retrievals of every snapshot of a RetrieveGAN run on ``split`` (module docstring); returns the
    record (``steps`` ascending, one entry per snapshot in each list) and writes ``out_json`` if given."""
    from retrievegan.data.patches import load_patch_table
    from retrievegan.data.scene_graph import read_split
    from retrievegan.eval.compatibility import bootstrap_seed, random_candidate_records, score_means, score_records
    from retrievegan.eval.sampled_retrieval import require_retrieval, sampled_retrievals
    from retrievegan.io import sha256_file
    from retrievegan.models.patch_method import slot_lists
    from retrievegan.train.loop import load_snapshot, load_trained_on

    checkpoint, snapshots = Path(checkpoint), Path(snapshots)
    files = sorted(snapshots.glob("step_*.pt"))
    if not files:
        raise InputError(snapshots, "no generator snapshot (step_<n>.pt)")
    method, nets, payload, dataset, device = load_trained_on(
        checkpoint, data_dir, split, device_name, inputs, patches_csv
    )
    require_retrieval(method, payload["method"])
    graphs = {g.image_id: g for g in read_split(dataset.graphs_path).graphs}
    patch_table = load_patch_table(patches_csv)
    name = payload["method"]
    scores: list[dict[str, float]] = []
    steps: list[int] = []
    records: list[dict[str, Any]] = []
    for path in files:
        step = load_snapshot(path, nets)
        records = []
        for batch, sample, cand, _, out in sampled_retrievals(
            method, nets, dataset, seeds, batch_size, device, "hard", f"compat {name} step {step}", progress
        ):
            chosen = method.chosen_ids(out, cand)
            for image_id, patch_ids in zip(batch.image_ids.tolist(), slot_lists(chosen, batch)):
                records.append({"image_id": int(image_id), "sample": sample, "patch_ids": patch_ids})
        table = score_records(records, patch_table, path, graphs)
        table = table.sort_values(["image_id", "sample"], kind="stable").reset_index(drop=True)
        rng = np.random.default_rng(bootstrap_seed(eval_seed, f"{name}/step{step}", split))
        steps.append(step)
        scores.append(score_means(table, n_boot, confidence, rng))
    k = int(method.candidates.shape[1])
    baseline = random_candidate_records(
        records, patch_table, method.candidates.numpy(), k, split, eval_seed, method.inputs["candidates"]
    )
    base = score_records(baseline, patch_table, method.inputs["candidates"], graphs)
    base_rng = np.random.default_rng(bootstrap_seed(eval_seed, "random_candidates", split))
    result: dict[str, Any] = {
        "method": name,
        "split": split,
        "num_images": len(dataset),
        "seeds": [int(s) for s in seeds],
        "checkpoint_sha256": sha256_file(checkpoint),
        "retriever_frozen": bool(getattr(method.config, "freeze_retriever", False)),
        "retrieval": {
            "mode": "hard (test time)",
            "trained_mode": method.config.retrieval.mode,
            "k": k,
            "greedy": method.config.retrieval.greedy,
            "gumbel": bool(method.config.sample_gumbel),
        },
        "bootstrap": {"samples": n_boot, "confidence": confidence, "seed": eval_seed},
        "steps": steps,
        "scores": {key: [s[key] for s in scores] for key in scores[0]},
        "random_candidates": score_means(base, n_boot, confidence, base_rng),
    }
    if out_json is not None:
        io.write_json(out_json, result)
    return result
