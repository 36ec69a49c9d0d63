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

With ``candidates`` (the pre-filter's ``candidates.npy``) the file also holds the **random choice among
the same pre-filter candidates** baseline: for every record (same scene graph, same sample index) one
patch per object drawn uniformly among the first ``candidates_k`` candidates of that object, with
``default_rng([seed, RANDOM_CANDIDATES_TAG, image_id, sample])`` (so it is the same for every method and
setting), scored like the method (``compat_random_candidates_*``), and the paired difference method -
random per scene graph with its bootstrap interval (``compat_*_minus_random_candidates``). It answers
"does the method pick more compatible patches than picking blindly among the candidates it was given?".
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


def load_retrievals(
    path: str | os.PathLike[str], method: str | None = None, setting: str | None = None
) -> list[dict[str, Any]]:
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
    return float(
        np.mean([theme_given_category[categories[i]] @ theme_given_category[categories[j]] for i, j in zip(*iu)])
    )


def score_records(
    records: list[dict[str, Any]],
    patch_table: pd.DataFrame,
    path: str | os.PathLike[str],
    split_graphs: dict[int, Any] | None = None,
) -> pd.DataFrame:
    """One row per record with >= 2 patches: image_id, sample, size, single_theme, pairwise_same_theme,
    chance_pairwise_same_theme, category_match (share of patches whose category is the object's)."""
    if patch_table["theme"].isna().any():
        raise InputError(
            path,
            "the patch bank has patches without a theme: the compatibility score needs the "
            "synthetic benchmark's themes",
        )
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
            raise InputError(
                path, f"patch id {missing[0]} is not in the retrieval bank (train patches of patches.csv)", where
            )
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
        rows.append(
            (
                rec["image_id"],
                rec["sample"],
                len(ids),
                single,
                pairwise,
                _chance_pairwise(cats, theme_given_category),
                category_match,
            )
        )
    return pd.DataFrame(
        rows,
        columns=[
            "image_id",
            "sample",
            "size",
            "single_theme",
            "pairwise_same_theme",
            "chance_pairwise_same_theme",
            "category_match",
        ],
    )


def cluster_bootstrap_means(
    values: np.ndarray, clusters: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """``(n_boot,)`` means of ``values``, each over a resample of whole clusters drawn with replacement."""
    labels, inverse = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(labels))
    counts = np.bincount(inverse, minlength=len(labels)).astype(float)
    draws = rng.integers(0, len(labels), size=(n_boot, len(labels)))
    return sums[draws].sum(axis=1) / counts[draws].sum(axis=1)


def cluster_bootstrap(
    values: np.ndarray, clusters: np.ndarray, n_boot: int, confidence: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile interval of the mean of ``values``, resampling whole clusters with replacement."""
    means = cluster_bootstrap_means(values, clusters, n_boot, rng)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


SCORES = ("single_theme", "pairwise_same_theme")


def score_means(
    table: pd.DataFrame, n_boot: int, confidence: float, rng: np.random.Generator, prefix: str = "compat_"
) -> dict[str, float]:
    """``{prefix}<score>`` (mean over the sets of :func:`score_records`' table) and ``_low`` / ``_high`` (percentile
    interval, resampling scene graphs: :func:`cluster_bootstrap`), for both scores."""
    out = {}
    clusters = table["image_id"].to_numpy()
    for column in SCORES:
        low, high = cluster_bootstrap(table[column].to_numpy(float), clusters, n_boot, confidence, rng)
        out[f"{prefix}{column}"] = float(table[column].mean())
        out[f"{prefix}{column}_low"] = low
        out[f"{prefix}{column}_high"] = high
    return out


def bootstrap_seed(seed: int, method: str, setting: str) -> list[int]:
    return [int(seed), zlib.crc32(f"{method}/{setting}".encode())]


RANDOM_CANDIDATES_TAG = zlib.crc32(b"random_candidates")


def random_candidate_records(
    records: list[dict[str, Any]],
    patch_table: pd.DataFrame,
    candidates: np.ndarray,
    k: int,
    split: str,
    seed: int,
    path: str | os.PathLike[str],
) -> list[dict[str, Any]]:
    """The records with each patch replaced by a uniform draw among the first ``k`` pre-filter candidates of
    the same object (objects = the ``split`` rows of the patch table with the record's image id, in object
    order); ``candidates`` ``(P, >= k)`` int64, ``-1`` padding. Seeded per (image_id, sample)."""
    if candidates.ndim != 2 or len(candidates) != len(patch_table):
        raise InputError(path, f"candidates {candidates.shape} do not match the patch table's {len(patch_table)} rows")
    if k > candidates.shape[1]:
        raise InputError(path, f"candidates_k = {k} but the file holds {candidates.shape[1]} candidates per object")
    rows = patch_table[patch_table["split"] == split].sort_values(["image_id", "object_index"], kind="stable")
    by_image = {int(i): g["patch_id"].to_numpy() for i, g in rows.groupby("image_id")}
    out = []
    for n, rec in enumerate(records):
        objects = by_image.get(rec["image_id"])
        where = f"record {n} (image id {rec['image_id']}, sample {rec['sample']})"
        if objects is None or len(objects) != len(rec["patch_ids"]):
            raise InputError(
                path,
                f"image id has {0 if objects is None else len(objects)} {split} patches but the "
                f"record has {len(rec['patch_ids'])} patch ids",
                where,
            )
        rng = np.random.default_rng([int(seed), RANDOM_CANDIDATES_TAG, int(rec["image_id"]), int(rec["sample"])])
        picks = []
        for row in objects:
            pool = candidates[row, :k]
            pool = pool[pool >= 0]
            if len(pool) == 0:
                raise InputError(path, f"patch {row} has no pre-filter candidate", where)
            picks.append(int(pool[rng.integers(len(pool))]))
        out.append({"image_id": rec["image_id"], "sample": rec["sample"], "patch_ids": picks})
    return out


def compatibility_score(
    retrievals_path: str | os.PathLike[str],
    patches_csv: str | os.PathLike[str],
    method: str,
    setting: str,
    n_boot: int,
    confidence: float,
    seed: int,
    split_json: str | os.PathLike[str] | None = None,
    out_json: str | os.PathLike[str] | None = None,
    candidates: str | os.PathLike[str] | None = None,
    candidates_k: int | None = None,
) -> dict[str, Any]:
    """Score one run's ``retrievals.json``; write ``out_json`` if given. With ``candidates`` (needs
    ``split_json``) also the random-among-candidates baseline (module docstring)."""
    from retrievegan.data.patches import load_patch_table

    records = load_retrievals(retrievals_path, method, setting)
    graphs = None
    split = None
    if split_json is not None:
        from retrievegan.data.scene_graph import read_split

        canonical = read_split(split_json)
        split = canonical.split
        graphs = {g.image_id: g for g in canonical.graphs}
    patch_table = load_patch_table(patches_csv)
    table = score_records(records, patch_table, retrievals_path, graphs)
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
    result["metrics"].update(score_means(table, n_boot, confidence, rng))
    result["metrics"]["compat_chance_pairwise_same_theme"] = float(table["chance_pairwise_same_theme"].mean())
    if candidates is not None:
        if split is None:
            raise InputError(retrievals_path, "the random-among-candidates baseline needs the split's scene graphs")
        cand = io.load_array(candidates, "candidates not found (run `retrievegan prefilter`)", ndim=2, kind="iu")
        k = int(candidates_k if candidates_k is not None else cand.shape[1])
        baseline = random_candidate_records(records, patch_table, cand, k, split, seed, candidates)
        base = score_records(baseline, patch_table, candidates, graphs)
        base = base.sort_values(["image_id", "sample"], kind="stable").reset_index(drop=True)
        if not (base[["image_id", "sample"]].to_numpy() == table[["image_id", "sample"]].to_numpy()).all():
            raise InputError(retrievals_path, "the baseline's sets do not line up with the method's")
        base_rng = np.random.default_rng(bootstrap_seed(seed, "random_candidates", setting))
        diff_rng = np.random.default_rng(bootstrap_seed(seed, f"{method}-random_candidates", setting))
        for column in ("single_theme", "pairwise_same_theme"):
            values = base[column].to_numpy(float)
            low, high = cluster_bootstrap(values, clusters, n_boot, confidence, base_rng)
            result["metrics"][f"compat_random_candidates_{column}"] = float(values.mean())
            result["metrics"][f"compat_random_candidates_{column}_low"] = low
            result["metrics"][f"compat_random_candidates_{column}_high"] = high
            diff = table[column].to_numpy(float) - values
            low, high = cluster_bootstrap(diff, clusters, n_boot, confidence, diff_rng)
            result["metrics"][f"compat_{column}_minus_random_candidates"] = float(diff.mean())
            result["metrics"][f"compat_{column}_minus_random_candidates_low"] = low
            result["metrics"][f"compat_{column}_minus_random_candidates_high"] = high
        result["random_candidates"] = {
            "candidates": str(candidates),
            "k": k,
            "split": split,
            "rule": "per object a uniform draw among its first k pre-filter candidates; "
            "rng = numpy default_rng([seed, crc32('random_candidates'), image_id, sample])",
        }
    if table["category_match"].notna().any():
        result["category_match"] = float(table["category_match"].mean())
    if out_json is not None:
        io.write_json(out_json, result)
    return result


def summary_table(compat_files: list[str | os.PathLike[str]], out: str | os.PathLike[str] | None = None) -> str:
    """A Markdown table (or CSV when ``out`` ends in .csv) of several compatibility files: each run's
    single-theme share and pairwise same-theme rate with intervals, beside random choice among the same
    pre-filter candidates (when the file has it), the paired difference and the chance level."""
    from retrievegan.eval.samples import read_json_object

    rows = []
    for path in compat_files:
        rec = read_json_object(path, "compatibility file")
        m = rec.get("metrics", {})
        if "compat_single_theme" not in m:
            raise InputError(path, "not a compatibility file (no compat_single_theme)")

        def cell(name: str) -> str:
            if name not in m:
                return "n/a"
            return f"{m[name]:.3f} [{m[name + '_low']:.3f}, {m[name + '_high']:.3f}]"

        rows.append(
            {
                "method": rec["method"],
                "setting": rec["setting"],
                "sets": rec["num_sets"],
                "single_theme": cell("compat_single_theme"),
                "random_candidates_single_theme": cell("compat_random_candidates_single_theme"),
                "single_theme_minus_random": cell("compat_single_theme_minus_random_candidates"),
                "pairwise_same_theme": cell("compat_pairwise_same_theme"),
                "random_candidates_pairwise": cell("compat_random_candidates_pairwise_same_theme"),
                "chance_pairwise": f"{m['compat_chance_pairwise_same_theme']:.3f}",
                "k": str(rec.get("random_candidates", {}).get("k", "n/a")),
            }
        )
    frame = pd.DataFrame(rows).sort_values(["setting", "method"], kind="stable")
    conf = {read_json_object(p, "compatibility file")["bootstrap"]["confidence"] for p in compat_files}
    header = [
        "method",
        "setting",
        "sets",
        "single_theme",
        "random_candidates_single_theme",
        "single_theme_minus_random",
        "pairwise_same_theme",
        "random_candidates_pairwise",
        "chance_pairwise",
        "k",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in frame.to_dict("records")]
    lines.append("")
    lines.append(
        f"Values: mean [{', '.join(f'{c:.0%}' for c in sorted(conf))} scene-graph bootstrap interval]. "
        "random_candidates: one patch per object drawn uniformly among the first k pre-filter candidates "
        "(same scene graphs, same sample index); single_theme_minus_random: paired difference."
    )
    text = "\n".join(lines)
    if out is not None:
        if str(out).endswith(".csv"):
            io.write_text(out, frame[header].to_csv(index=False))
        else:
            io.write_text(out, text + "\n")
    return text
