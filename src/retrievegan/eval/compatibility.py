"""Compatibility score of retrieved patch sets (synthetic benchmark: every patch has a hidden theme).

For each retrieved set (one ``retrievals.json`` record: the patches retrieved for one test scene graph
in one sample):

* ``single_theme``: 1 if all patches come from one theme (sets of >= 2 patches);
* ``pairwise_same_theme``: share of the set's patch pairs that share a theme.

Aggregates are over all records (both samples); their intervals come from a percentile bootstrap
that resamples *scene graphs* (a graph's two samples stay together), seeded by
``default_rng([seed, crc32("<method>/<setting>")])`` so that a run's interval does not depend on which
other runs are evaluated. ``chance_pairwise_same_theme`` is what uniformly random retrieval among the
bank patches of the same categories would score (sum over themes of p(theme | category_i) *
p(theme | category_j), averaged like the score): the floor a retrieval method should beat.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retrievegan import io
from retrievegan.errors import InputError


def load_retrievals(path: str | os.PathLike[str], method: str | None = None,
                    setting: str | None = None) -> list[dict[str, Any]]:
    """The validated records of ``retrievals.json``."""
    from retrievegan.eval.samples import read_json_object

    path = Path(path)
    data = read_json_object(path, "retrievals file")
    for key, expected in (("method", method), ("setting", setting)):
        if expected is not None and data.get(key) != expected:
            raise InputError(path, f"{key} is {data.get(key)!r}, expected {expected!r}")
    records = data.get("records")
    if not isinstance(records, list) or not records:
        raise InputError(path, "'records' must be a non-empty list")
    seen = set()
    for k, rec in enumerate(records):
        where = f"record {k}"
        if not isinstance(rec, dict):
            raise InputError(path, "record must be an object", where)
        for key in ("image_id", "sample", "patch_ids"):
            if key not in rec:
                raise InputError(path, f"missing key {key!r}", where)
        if not isinstance(rec["image_id"], int) or not isinstance(rec["sample"], int):
            raise InputError(path, "image_id and sample must be integers", where)
        ids = rec["patch_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise InputError(path, "patch_ids must be a list of integers", where)
        key = (rec["image_id"], rec["sample"])
        if key in seen:
            raise InputError(path, f"duplicate record for image id {key[0]} sample {key[1]}", where)
        seen.add(key)
    return records


def _set_scores(themes: np.ndarray) -> tuple[float, float]:
    same = themes[:, None] == themes[None, :]
    iu = np.triu_indices(len(themes), k=1)
    return float(np.all(themes == themes[0])), float(same[iu].mean())


def _chance_pairwise(categories: np.ndarray, theme_given_category: dict[int, np.ndarray]) -> float:
    iu = np.triu_indices(len(categories), k=1)
    return float(np.mean([theme_given_category[categories[i]] @ theme_given_category[categories[j]]
                          for i, j in zip(*iu)]))


def score_records(records: list[dict[str, Any]], patch_table: pd.DataFrame, path: str | os.PathLike[str],
                  split_graphs: dict[int, Any] | None = None) -> pd.DataFrame:
    """One row per record with >= 2 patches: image_id, sample, size, single_theme, pairwise_same_theme,
    chance_pairwise_same_theme, category_match (share of patches whose category is the object's)."""
    if patch_table["theme"].isna().any():
        raise InputError(path, "the patch bank has patches without a theme: the compatibility score needs the "
                         "synthetic benchmark's themes")
    bank = patch_table[patch_table["split"] == "train"]
    theme_of = dict(zip(bank["patch_id"].to_numpy(), bank["theme"].to_numpy(dtype=np.int64)))
    category_of = dict(zip(bank["patch_id"].to_numpy(), bank["category"].to_numpy(dtype=np.int64)))
    themes_all = np.sort(bank["theme"].unique().astype(np.int64))
    theme_index = {t: k for k, t in enumerate(themes_all)}
    theme_given_category = {}
    for category, group in bank.groupby("category"):
        counts = np.zeros(len(themes_all))
        for theme, n in group["theme"].astype(np.int64).value_counts().items():
            counts[theme_index[theme]] = n
        theme_given_category[int(category)] = counts / counts.sum()
    rows = []
    for k, rec in enumerate(records):
        ids = rec["patch_ids"]
        where = f"record {k} (image id {rec['image_id']}, sample {rec['sample']})"
        missing = [i for i in ids if i not in theme_of]
        if missing:
            raise InputError(path, f"patch id {missing[0]} is not in the retrieval bank (train patches of "
                             "patches.csv)", where)
        category_match = np.nan
        if split_graphs is not None:
            graph = split_graphs.get(rec["image_id"])
            if graph is None:
                raise InputError(path, "image id is not in the evaluated split", where)
            if len(ids) != graph.num_real_objects:
                raise InputError(path, f"{len(ids)} patch ids for {graph.num_real_objects} real objects", where)
            category_match = float(np.mean([category_of[i] == o.category for i, o in zip(ids, graph.objects)]))
        if len(ids) < 2:
            continue
        themes = np.array([theme_of[i] for i in ids])
        single, pairwise = _set_scores(themes)
        cats = np.array([category_of[i] for i in ids])
        rows.append((rec["image_id"], rec["sample"], len(ids), single, pairwise,
                     _chance_pairwise(cats, theme_given_category), category_match))
    return pd.DataFrame(rows, columns=["image_id", "sample", "size", "single_theme", "pairwise_same_theme",
                                       "chance_pairwise_same_theme", "category_match"])


def cluster_bootstrap(values: np.ndarray, clusters: np.ndarray, n_boot: int, confidence: float,
                      rng: np.random.Generator) -> tuple[float, float]:
    """Percentile interval of the mean of ``values``, resampling whole clusters with replacement."""
    labels, inverse = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(labels))
    counts = np.bincount(inverse, minlength=len(labels)).astype(float)
    draws = rng.integers(0, len(labels), size=(n_boot, len(labels)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_seed(seed: int, method: str, setting: str) -> list[int]:
    return [int(seed), zlib.crc32(f"{method}/{setting}".encode())]


def compatibility_score(retrievals_path: str | os.PathLike[str], patches_csv: str | os.PathLike[str],
                        method: str, setting: str, n_boot: int, confidence: float, seed: int,
                        split_json: str | os.PathLike[str] | None = None,
                        out_json: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Score one run's ``retrievals.json``; write ``out_json`` if given."""
    from retrievegan.data.patches import load_patch_table

    records = load_retrievals(retrievals_path, method, setting)
    graphs = None
    if split_json is not None:
        from retrievegan.data.scene_graph import read_split

        graphs = {g.image_id: g for g in read_split(split_json).graphs}
    table = score_records(records, load_patch_table(patches_csv), retrievals_path, graphs)
    if table.empty:
        raise InputError(retrievals_path, "no retrieved set has two or more patches")
    table = table.sort_values(["image_id", "sample"], kind="stable").reset_index(drop=True)  # order-independent
    rng = np.random.default_rng(bootstrap_seed(seed, method, setting))
    clusters = table["image_id"].to_numpy()
    result: dict[str, Any] = {
        "method": method,
        "setting": setting,
        "num_sets": int(len(table)),
        "num_scene_graphs": int(table["image_id"].nunique()),
        "samples": sorted(int(s) for s in table["sample"].unique()),
        "skipped_sets_below_two_patches": int(len(records) - len(table)),
        "mean_set_size": float(table["size"].mean()),
        "seed": seed,
        "bootstrap": {"samples": n_boot, "confidence": confidence},  # unit: scene graph; rng: bootstrap_seed()
        "metrics": {},
    }
    for column in ("single_theme", "pairwise_same_theme"):
        low, high = cluster_bootstrap(table[column].to_numpy(float), clusters, n_boot, confidence, rng)
        result["metrics"][f"compat_{column}"] = float(table[column].mean())
        result["metrics"][f"compat_{column}_low"] = low
        result["metrics"][f"compat_{column}_high"] = high
    result["metrics"]["compat_chance_pairwise_same_theme"] = float(table["chance_pairwise_same_theme"].mean())
    if table["category_match"].notna().any():
        result["category_match"] = float(table["category_match"].mean())
    if out_json is not None:
        io.write_json(out_json, result)
    return result
