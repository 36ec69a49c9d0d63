"""Claim C1's controls that could win (`retrievegan c1-controls`): fixed patch embeddings at a matched scale.

C1 says the generation losses teach E_p a *better* embedding than a fixed, pre-defined one. A fixed embedding used
at the wrong scale loses for a reason that has nothing to do with learning: the retrieval adds Gumbel noise (std
1.28) to the scores ``-||q - e|| / tau``, and an embedding whose distances spread less than the noise is drawn at
random whatever it encodes (in hard mode ``tau`` cannot help: the argmax of ``(s + g) / tau`` ignores it). So each
fixed arm gets the one free parameter the learned E_p had, its scale, tuned the same way for every arm.

Arms (all retrieve as `retrievegan sample` does: hard selection among the first ``k`` pre-filter candidates, random
query candidate, greedy query update as configured, the per-image generators of the sample seeds):

* ``learned``: the run's trained E_p as trained (scale 1, the run's ``sample_gumbel``): the arm C1 is about;
* ``ep_init``: E_p frozen at its initialisation (the run's step-0 generator snapshot: the same initial weights);
* ``identity``: the frozen patch features themselves as the embedding (no E_p at all);
* context: ``learned_tuned`` (the trained E_p with its scale tuned like the fixed arms: how much of a gap is scale
  alone), ``random_candidates`` (a uniform draw among the same ``k`` candidates) and, given its retrievals,
  ``pastegan`` (PasteGAN's test-time sets: its pre-defined embedding).

The **scale search** (declared in the config, ``claims.controls``): the embedding times each ``scales`` value with
Gumbel noise, and once without noise (the limit of an infinite scale: the nearest candidate), scored on
``search_split`` (val) by the pairwise same-theme rate; the best grid point (the first on ties) is the arm's
choice. The **best fixed arm** is the fixed arm (``ep_init`` or ``identity``) with the higher val score at its
choice. Only then is test read: every arm once, at its chosen scale, with a bootstrap interval over test scene
graphs, and the paired differences ``learned - best fixed`` and ``learned - pastegan`` per test scene graph (both
samples) with their bootstrap intervals and standard errors (``paired``; :mod:`retrievegan.eval.claims` combines them
with the spread over training seeds).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievegan import io
from retrievegan.errors import InputError

FIXED_ARMS: tuple[str, ...] = ("ep_init", "identity")
NO_NOISE = "no noise"  # the grid point without Gumbel noise (the nearest candidate: scale -> infinity)


@dataclasses.dataclass(frozen=True)
class ControlsConfig:
    """The ``claims.controls`` config section."""

    scales: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # ours: with Gumbel noise; + one without
    search_split: str = "val"  # the split the scale is chosen on (never test)
    seeds: tuple[int, ...] = (0, 1)  # sample seeds (as `sample.seeds`: the retrievals `retrievegan sample` makes)
    batch_size: int = 64
    bootstrap_samples: int = 2000
    confidence: float = 0.95
    seed: int = 0  # bootstrap

    def __post_init__(self) -> None:
        if not self.scales or any(not s > 0 or math.isinf(s) for s in self.scales):
            raise ValueError("controls.scales must be finite numbers > 0 (the no-noise point is always searched)")
        if self.search_split == "test":
            raise ValueError("controls.search_split must not be test: the scale is chosen before test is read")
        if self.search_split not in ("train", "val"):
            raise ValueError(f"controls.search_split must be train or val, got {self.search_split!r}")
        if not self.seeds or self.batch_size < 1 or self.bootstrap_samples < 100 or not 0 < self.confidence < 1:
            raise ValueError(
                "controls: seeds must not be empty, batch_size >= 1, bootstrap_samples >= 100, confidence in (0, 1)"
            )

    def grid(self) -> list[tuple[float | None, bool]]:
        """(scale, gumbel) per grid point; (None, False) is the no-noise point."""
        return [(float(s), True) for s in self.scales] + [(None, False)]


def grid_label(scale: float | None, gumbel: bool) -> str:
    return NO_NOISE if not gumbel else f"x{scale:g}"


Embedder = Callable[[Any], Any]  # candidate ids (B, N, K) -> embeddings (B, N, K, D)


class SplitRetrieval:
    """The host-prepared batches of one split, and the retrieval of a given embedding at a given scale on them."""

    def __init__(self, method: Any, dataset: Any, cfg: ControlsConfig, device: Any, progress: bool = True):
        from retrievegan.data.dataset import sequential_loader
        from retrievegan.progressbar import progress_bar

        self.method, self.cfg, self.device = method, cfg, device
        self.batches = [
            method.host_prepare(b).to(device)
            for b in progress_bar(
                sequential_loader(dataset, cfg.batch_size, 0), desc=f"c1-controls {dataset.split}", disable=not progress
            )
        ]

    def embeddings(self, embed: Embedder) -> list[Any]:
        """One ``(B, N, K, D)`` embedding per batch (computed once, scaled per grid point)."""
        import torch

        with torch.no_grad():
            return [
                embed(self.method.with_host_inputs(b, "candidate_ids").extras["candidate_ids"]) for b in self.batches
            ]

    def records(self, emb: Sequence[Any], scale: float, gumbel: bool) -> list[dict[str, Any]]:
        """Retrieved patch ids per (scene graph, sample seed index) with the embeddings times ``scale``."""
        import torch

        from retrievegan.models.patch_method import slot_lists
        from retrievegan.seeds import SAMPLE_NOISE, image_generators

        out: list[dict[str, Any]] = []
        with torch.no_grad():
            for batch, e in zip(self.batches, emb):
                host = self.method.with_host_inputs(batch, "candidate_ids").extras
                ids = host["candidate_ids"]
                for index, seed in enumerate(self.cfg.seeds):
                    gens = image_generators((SAMPLE_NOISE, seed), batch.image_ids.tolist(), self.device)
                    res = self.method.retrieve(e * scale, ids >= 0, gens, "hard", gumbel, counts=host["counts"])
                    chosen = self.method.chosen_ids(res, ids)
                    for image_id, patch_ids in zip(batch.image_ids.tolist(), slot_lists(chosen, batch)):
                        out.append({"image_id": int(image_id), "sample": index, "patch_ids": patch_ids})
        return out


def _table(records: list[dict[str, Any]], patch_table: Any, where: str | os.PathLike[str], graphs: Mapping[int, Any]):
    from retrievegan.eval.compatibility import score_records

    table = score_records(records, patch_table, where, graphs)
    return table.sort_values(["image_id", "sample"], kind="stable").reset_index(drop=True)


def scale_search(
    split: SplitRetrieval,
    emb: Sequence[Any],
    patch_table: Any,
    graphs: Mapping[int, Any],
    cfg: ControlsConfig,
    where: str | os.PathLike[str],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(one row per grid point: scale, gumbel, label, pairwise same-theme rate on the search split; the chosen row:
    the highest rate, the first grid point on ties)."""
    rows = []
    for scale, gumbel in cfg.grid():
        table = _table(split.records(emb, 1.0 if scale is None else scale, gumbel), patch_table, where, graphs)
        rows.append(
            {
                "scale": scale,
                "gumbel": gumbel,
                "label": grid_label(scale, gumbel),
                "compat_pairwise_same_theme": float(table["pairwise_same_theme"].mean()),
            }
        )
    best = max(range(len(rows)), key=lambda i: (rows[i]["compat_pairwise_same_theme"], -i))
    return rows, rows[best]


def _paired(
    learned: Any, other: Any, clusters: np.ndarray, cfg: ControlsConfig, tag: str, split: str
) -> dict[str, float]:
    """The paired difference learned - other of the pairwise same-theme rate per set, with its scene-graph bootstrap
    interval and standard error."""
    from retrievegan.eval.compatibility import bootstrap_seed, cluster_bootstrap_means

    diff = (learned["pairwise_same_theme"] - other["pairwise_same_theme"]).to_numpy(float)
    means = cluster_bootstrap_means(
        diff, clusters, cfg.bootstrap_samples, np.random.default_rng(bootstrap_seed(cfg.seed, tag, split))
    )
    alpha = (1.0 - cfg.confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return {
        "difference": float(diff.mean()),
        "low": float(low),
        "high": float(high),
        "se": float(means.std(ddof=1)),
        "scene_graphs": int(len(np.unique(clusters))),
    }


def c1_controls(
    checkpoint: str | os.PathLike[str],
    snapshots: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    patches_csv: str | os.PathLike[str],
    out_json: str | os.PathLike[str] | None,
    cfg: ControlsConfig,
    test_split: str = "test",
    device_name: str = "cpu",
    inputs: Mapping[str, str] | None = None,
    pastegan_retrievals: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the learned E_p of a RetrieveGAN run against the fixed embeddings at their val-tuned scales on
    ``test_split`` (module docstring); with ``pastegan_retrievals`` (PasteGAN's ``retrievals.json`` on the same
    split and sample seeds) also PasteGAN's sets, paired per scene graph with the learned arm's. Writes ``out_json``
    if given and returns the record."""
    from retrievegan.data.dataset import SceneGraphDataset, check_spec
    from retrievegan.data.patches import load_patch_table
    from retrievegan.data.scene_graph import read_split
    from retrievegan.device import pick_device
    from retrievegan.eval.compatibility import bootstrap_seed, random_candidate_records, score_means
    from retrievegan.eval.sampled_retrieval import require_retrieval
    from retrievegan.io import sha256_file
    from retrievegan.models.patch_method import gather_rows
    from retrievegan.train.loop import load_snapshot, load_trained

    if test_split == cfg.search_split:
        raise InputError(
            data_dir, f"the scale is searched on {cfg.search_split} and scored on {test_split}: they must differ"
        )
    device = pick_device(device_name)
    method, nets, payload = load_trained(checkpoint, device, dict(inputs or {}))
    name = payload["method"]
    require_retrieval(method, name)
    first = Path(snapshots) / f"step_{0:08d}.pt"
    if not first.exists():
        raise InputError(snapshots, f"no step-0 generator snapshot ({first.name}): E_p's initial weights are needed")
    init_nets = {k: copy.deepcopy(v) for k, v in nets.items()}
    if load_snapshot(first, init_nets) != 0:
        raise InputError(first, "not the step-0 snapshot")
    embedders: dict[str, Embedder] = {
        "learned": lambda ids: method.embed(nets["retriever"], ids),
        "ep_init": lambda ids: method.embed(init_nets["retriever"], ids),
        "identity": lambda ids: gather_rows(method.features, ids),
    }
    patch_table = load_patch_table(patches_csv)
    splits: dict[str, tuple[SplitRetrieval, dict[int, Any]]] = {}
    for split_name in (cfg.search_split, test_split):
        dataset = SceneGraphDataset(data_dir, split_name, patches_csv)
        check_spec(method.spec, dataset.spec, dataset.graphs_path)
        graphs = {g.image_id: g for g in read_split(dataset.graphs_path).graphs}
        splits[split_name] = (SplitRetrieval(method, dataset, cfg, device, progress), graphs)

    # 1. choices on the search split only
    search, test = splits[cfg.search_split], splits[test_split]
    arms: dict[str, dict[str, Any]] = {}
    for arm in (*FIXED_ARMS, "learned"):
        emb = search[0].embeddings(embedders[arm])
        rows, chosen = scale_search(search[0], emb, patch_table, search[1], cfg, patches_csv)
        key = "learned_tuned" if arm == "learned" else arm
        arms[key] = {"search": rows, "chosen": chosen}
    learned_gumbel = bool(method.config.sample_gumbel)
    as_trained = _table(
        search[0].records(search[0].embeddings(embedders["learned"]), 1.0, learned_gumbel),
        patch_table,
        patches_csv,
        search[1],
    )
    arms["learned"] = {
        "chosen": {
            "scale": 1.0,
            "gumbel": learned_gumbel,
            "label": "as trained",
            "compat_pairwise_same_theme": float(as_trained["pairwise_same_theme"].mean()),
        }
    }
    best_fixed = max(FIXED_ARMS, key=lambda a: (arms[a]["chosen"]["compat_pairwise_same_theme"], -FIXED_ARMS.index(a)))

    # 2. test, once per arm at its choice
    tables = {}
    for arm, source in (
        ("learned", "learned"),
        ("learned_tuned", "learned"),
        ("ep_init", "ep_init"),
        ("identity", "identity"),
    ):
        c = arms[arm]["chosen"]
        emb = test[0].embeddings(embedders[source])
        tables[arm] = _table(
            test[0].records(emb, 1.0 if c["scale"] is None else c["scale"], c["gumbel"]),
            patch_table,
            patches_csv,
            test[1],
        )
    k = int(method.candidates.shape[1])
    base = random_candidate_records(
        test[0].records(test[0].embeddings(embedders["learned"]), 1.0, learned_gumbel),
        patch_table,
        method.candidates.numpy(),
        k,
        test_split,
        cfg.seed,
        method.inputs["candidates"],
    )
    tables["random_candidates"] = _table(base, patch_table, patches_csv, test[1])
    if pastegan_retrievals is not None:
        from retrievegan.eval.compatibility import load_retrievals

        tables["pastegan"] = _table(
            load_retrievals(pastegan_retrievals, "pastegan"), patch_table, pastegan_retrievals, test[1]
        )
    keys = tables["learned"][["image_id", "sample"]].to_numpy()
    for arm, table in tables.items():
        own = table[["image_id", "sample"]].to_numpy()
        if own.shape != keys.shape or not (own == keys).all():
            raise InputError(patches_csv, f"the {arm} sets do not line up with the learned arm's")
        rng = np.random.default_rng(bootstrap_seed(cfg.seed, f"c1_controls/{name}/{arm}", test_split))
        scores = score_means(table, cfg.bootstrap_samples, cfg.confidence, rng)
        arms.setdefault(arm, {})["test"] = {key: v for key, v in scores.items() if "pairwise" in key}
    clusters = tables["learned"]["image_id"].to_numpy()
    paired = {
        "best_fixed": _paired(
            tables["learned"], tables[best_fixed], clusters, cfg, f"c1_controls/{name}/learned-{best_fixed}", test_split
        )
    }
    if "pastegan" in tables:
        paired["pastegan"] = _paired(
            tables["learned"], tables["pastegan"], clusters, cfg, f"c1_controls/{name}/learned-pastegan", test_split
        )
    result = {
        "method": name,
        "search_split": cfg.search_split,
        "test_split": test_split,
        "k": k,
        "controls": {**dataclasses.asdict(cfg), "grid": [grid_label(s, g) for s, g in cfg.grid()]},
        "checkpoint_sha256": sha256_file(checkpoint),
        "init_snapshot_sha256": sha256_file(first),
        "arms": arms,
        "best_fixed": best_fixed,
        "paired": paired,  # learned - <arm> per test set, scene-graph bootstrap
    }
    if out_json is not None:
        io.write_json(out_json, result)
    return result


def controls_line(rec: Mapping[str, Any]) -> str:
    """One line: each arm's test score at its choice, and the learned arm's difference to the best fixed arm."""
    arms = rec["arms"]
    parts = [
        f"{arm} {arms[arm]['test']['compat_pairwise_same_theme']:.3f}"
        + (f" ({arms[arm]['chosen']['label']})" if "chosen" in arms[arm] else "")
        for arm in ("learned", "ep_init", "identity", "learned_tuned", "random_candidates")
    ]
    diffs = [
        f"learned - {'best fixed (' + rec['best_fixed'] + ')' if k == 'best_fixed' else k} "
        f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
        for k, d in rec["paired"].items()
    ]
    return f"{rec['method']} ({rec['test_split']}): " + ", ".join(parts) + "; " + "; ".join(diffs)


def read_controls(path: str | os.PathLike[str]) -> dict[str, Any]:
    from retrievegan.eval.samples import read_json_object

    rec = read_json_object(path, "C1 controls file")
    if "paired" not in rec or "arms" not in rec:
        raise InputError(path, "not a C1 controls file (no 'paired')")
    return rec
