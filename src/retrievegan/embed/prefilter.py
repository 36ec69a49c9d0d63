"""Patch pre-filtering (`retrievegan prefilter`), paper §3.2 "Patch pre-filtering".

For every object of every split (every row of ``patches.csv``), the ``k`` nearest *training* patches of
the same category by L2 distance between sg2im GCN features (``gcn_features.npy``, ``(P, D)``, row-aligned
with ``patches.csv``: a bank patch's feature is the GCN feature of the object it was cut from). The
differentiable retrieval then runs over these candidates only.

* Exact k-NN: the first ``k`` training patches of the category sorted by ``(distance, patch_id)``, the
  same as :func:`brute_force_candidates`. The search ranks by ``|q|^2 + |c|^2 - 2 q.c`` in float64
  (matrix products); the ``k`` kept are then re-scored with the direct ``sum((q - c)^2)`` (the reported
  distances) and re-ordered by it. Only candidates whose distances differ by float64 rounding
  (~1e-12 relative) could swap in or out at the k-th place.
* Bounded memory (the paper's bank has 600K patches): queries in blocks of ``query_block`` rows, the
  category's candidates in blocks of ``candidate_block`` rows, a running top-k per query. A block keeps
  its exact k smallest (``topk`` for the k-th value, then ties at that value by column order) and is
  merged into the running list by a stable sort, which keeps the ``(distance, patch_id)`` order because
  candidate blocks come in increasing patch id. Peak memory: one ``query_block x candidate_block`` float64
  matrix plus one category's candidate features.
* Same-image exclusion: a training object never gets patches of its own image (with
  ``exclude_same_image``; key = (split, image_index)). The ground-truth-selection loss adds the
  ground-truth patches back on purpose at training time: :func:`add_ground_truth`.
* Fewer than ``k`` candidates (a rare category): the row is padded with ``-1`` (distance ``inf``); the
  retrieval masks them (``gather_candidates`` returns the mask). A category with no training patch at all
  gives a row of ``-1``.

Outputs (``out_dir``): ``candidates.npy`` ``(P, k)`` int64 bank patch ids (rows of patches.csv), sorted by
distance; ``distances.npy`` ``(P, k)`` float32 L2 distances (``inf`` for padding); ``run.json`` with counts
and, on the synthetic benchmark, the share of objects whose candidates include a patch of the object's
own hidden theme (evaluation only: how much room for compatible choices the retrieval has).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from retrievegan import io, runinfo
from retrievegan.data.patches import load_patch_table
from retrievegan.device import pick_device
from retrievegan.embed.bank import check_patch_ids, image_keys
from retrievegan.errors import ConfigError, InputError
from retrievegan.progressbar import progress_bar


@dataclasses.dataclass(frozen=True)
class PrefilterConfig:
    k: int = 32  # candidates per object (ours; PasteGAN used top-10, the paper is silent)
    query_block: int = 512
    candidate_block: int = 4096
    exclude_same_image: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        for name in ("k", "query_block", "candidate_block"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


def _block_topk(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest entries of every row of ``d`` ``(Q, C)`` (``C >= k``), ties -> smaller column first.

    Returns ``(values, columns)``, both ``(Q, k)``, with the columns in increasing order (not sorted by value).
    """
    kth = torch.topk(d, k, dim=1, largest=False).values[:, -1:]  # (Q, 1) the k-th smallest value
    less = d < kth
    equal = d == kth
    need = k - less.sum(1, keepdim=True)  # how many of the tied entries make it (>= 1)
    take = less | (equal & (equal.cumsum(1) <= need))
    cols = take.nonzero()[:, 1].view(d.shape[0], k)  # exactly k per row, row-major: columns ascending
    return d.gather(1, cols), cols


def _merge(
    best_d: torch.Tensor, best_i: torch.Tensor, new_d: torch.Tensor, new_i: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-k ``(Q, k)`` sorted by (distance, id) + a block's k ``(Q, k)`` with larger, ascending ids."""
    d = torch.cat([best_d, new_d], dim=1)
    i = torch.cat([best_i, new_i], dim=1)
    order = torch.sort(d, dim=1, stable=True).indices[:, :k]
    return d.gather(1, order), i.gather(1, order)


def knn_blocked(
    queries: torch.Tensor,
    query_keys: torch.Tensor,
    candidates: torch.Tensor,
    candidate_ids: torch.Tensor,
    candidate_keys: torch.Tensor,
    k: int,
    candidate_block: int,
    exclude_same_key: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest candidates of each query (squared L2, ties by smaller id), candidates in blocks.

    ``queries`` ``(Q, D)`` float64, ``query_keys`` ``(Q,)``; ``candidates`` ``(C, D)`` float64 with
    ``candidate_ids`` ``(C,)`` increasing and ``candidate_keys`` ``(C,)``. Candidates with the query's key
    are skipped when ``exclude_same_key``. Returns ``(squared distances (Q, k), ids (Q, k))`` sorted;
    missing entries are ``(inf, -1)``.
    """
    device = queries.device
    nq = queries.shape[0]
    best_d = torch.full((nq, k), float("inf"), dtype=torch.float64, device=device)
    best_i = torch.full((nq, k), -1, dtype=torch.int64, device=device)
    qn = (queries * queries).sum(1, keepdim=True)
    for cs in range(0, candidates.shape[0], candidate_block):
        cf = candidates[cs : cs + candidate_block]
        d = qn + (cf * cf).sum(1)[None, :] - 2.0 * (queries @ cf.T)
        d.clamp_(min=0.0)
        if exclude_same_key:
            d.masked_fill_(query_keys[:, None] == candidate_keys[None, cs : cs + candidate_block], float("inf"))
        ids = candidate_ids[cs : cs + candidate_block]
        if d.shape[1] < k:  # pad a short block with (inf, -1)
            pad = k - d.shape[1]
            d = torch.cat([d, torch.full((nq, pad), float("inf"), dtype=d.dtype, device=device)], dim=1)
            ids = torch.cat([ids, torch.full((pad,), -1, dtype=ids.dtype, device=device)])
        block_d, cols = _block_topk(d, k)
        best_d, best_i = _merge(best_d, best_i, block_d, ids[cols], k)
    missing = torch.isinf(best_d)
    best_i = best_i.masked_fill(missing, -1)
    # report direct distances sum((q - c)^2) of the k kept (the expanded form loses ~1e-8 near 0 after the
    # square root) and order them by (direct distance, id), as the brute-force reference does
    local = torch.searchsorted(candidate_ids, best_i.clamp(min=0))
    direct = ((queries[:, None, :] - candidates[local]) ** 2).sum(-1)
    direct = direct.masked_fill(missing, float("inf"))
    by_id = torch.sort(best_i.masked_fill(missing, torch.iinfo(torch.int64).max), dim=1).indices
    direct, best_i = direct.gather(1, by_id), best_i.gather(1, by_id)
    order = torch.sort(direct, dim=1, stable=True).indices
    return direct.gather(1, order), best_i.gather(1, order)


def _check_features(features: np.ndarray, path: str | Path, num_rows: int) -> None:
    if features.ndim != 2:
        raise InputError(path, f"expected a (P, D) array, got shape {features.shape}")
    if len(features) != num_rows:
        raise InputError(path, f"{len(features)} rows but patches.csv has {num_rows}")
    for s in range(0, len(features), 65536):
        block = np.asarray(features[s : s + 65536])
        if not np.isfinite(block).all():
            bad = s + int(np.flatnonzero(~np.isfinite(block).all(1))[0])
            raise InputError(path, "non-finite feature values", f"row {bad}")


def prefilter_candidates(
    features: np.ndarray, table: pd.DataFrame, cfg: PrefilterConfig, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(candidates (P, k) int64, distances (P, k) float32)`` for every row of ``table`` (see module doc)."""
    device = pick_device(cfg.device, "prefilter.device")
    k = cfg.k
    num = len(table)
    cats = table["category"].to_numpy()
    train = table["split"].to_numpy() == "train"
    keys = torch.as_tensor(image_keys(table), device=device)
    out_i = np.full((num, k), -1, dtype=np.int64)
    out_d = np.full((num, k), np.inf, dtype=np.float32)
    categories = np.unique(cats)
    for c in progress_bar(categories, desc="prefilter", disable=not progress, unit="category"):
        cand_rows = np.flatnonzero(train & (cats == c))
        query_rows = np.flatnonzero(cats == c)
        if len(cand_rows) == 0:
            continue
        cf = torch.as_tensor(np.asarray(features[cand_rows], dtype=np.float64), device=device)
        cid = torch.as_tensor(cand_rows, device=device)
        ckey = keys[cid]
        for qs in range(0, len(query_rows), cfg.query_block):
            qr = query_rows[qs : qs + cfg.query_block]
            qf = torch.as_tensor(np.asarray(features[qr], dtype=np.float64), device=device)
            sq, ids = knn_blocked(
                qf,
                keys[torch.as_tensor(qr, device=device)],
                cf,
                cid,
                ckey,
                k,
                cfg.candidate_block,
                cfg.exclude_same_image,
            )
            out_i[qr] = ids.cpu().numpy()
            out_d[qr] = sq.sqrt().cpu().numpy().astype(np.float32)
    return out_i, out_d


def brute_force_candidates(
    features: np.ndarray,
    table: pd.DataFrame,
    k: int,
    exclude_same_image: bool = True,
    query_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference: one query at a time, all its candidates at once, direct ``sum((q - c)^2)``, lexsort.

    Slow by design (tests, ``benchmarks/bench_prefilter.py``). ``query_rows``: only these rows (default
    all); the outputs have one row per query.
    """
    feats = np.asarray(features, dtype=np.float64)
    cats = table["category"].to_numpy()
    train = table["split"].to_numpy() == "train"
    keys = image_keys(table)
    queries = np.arange(len(table)) if query_rows is None else np.asarray(query_rows)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    out_d = np.full((len(queries), k), np.inf, dtype=np.float32)
    for j, q in enumerate(queries):
        ok = train & (cats == cats[q])
        if exclude_same_image:
            ok &= keys != keys[q]
        rows = np.flatnonzero(ok)
        d = ((feats[rows] - feats[q]) ** 2).sum(1)
        order = np.lexsort((rows, d))[:k]
        out_i[j, : len(order)] = rows[order]
        out_d[j, : len(order)] = np.sqrt(d[order])
    return out_i, out_d


def load_gcn_features(path: str | Path, num_rows: int) -> np.ndarray:
    feats = io.load_array(path, "GCN features not found (run `retrievegan gcn-features`)")
    if not np.issubdtype(feats.dtype, np.floating):
        raise InputError(path, f"expected floating-point features, got {feats.dtype}")
    _check_features(feats, path, num_rows)
    return feats


def theme_coverage(candidates: np.ndarray, table: pd.DataFrame) -> dict[str, float]:
    """Evaluation only: per split, share of objects with >= 1 candidate from an image of their own theme."""
    theme = table["theme"]
    if not theme.notna().all():
        return {}
    th = theme.to_numpy(dtype=np.int64)
    cand_theme = np.where(candidates >= 0, th[np.maximum(candidates, 0)], -1)
    covered = (cand_theme == th[:, None]).any(1)
    split = table["split"].to_numpy()
    return {s: float(covered[split == s].mean()) for s in ("train", "val", "test") if (split == s).any()}


def run_prefilter(
    features_path: str | Path, patches_csv: str | Path, cfg: PrefilterConfig, out_dir: str | Path, progress: bool = True
) -> dict[str, Any]:
    """Write ``candidates.npy``, ``distances.npy`` and ``run.json`` into ``out_dir``; return the summary."""
    t0 = time.perf_counter()
    table = load_patch_table(patches_csv)
    check_patch_ids(table, patches_csv)
    feats = load_gcn_features(features_path, len(table))
    cand, dist = prefilter_candidates(feats, table, cfg, progress=progress)
    out_dir = Path(out_dir)
    io.save_npy(out_dir / "candidates.npy", cand)
    io.save_npy(out_dir / "distances.npy", dist)
    valid = (cand >= 0).sum(1)
    train = table["split"].to_numpy() == "train"
    per_cat = table.loc[train, "category_name"].value_counts()
    summary = {
        "rows": int(len(table)),
        "k": cfg.k,
        "feature_dim": int(feats.shape[1]),
        "rows_with_padding": int((valid < cfg.k).sum()),
        "rows_without_candidates": int((valid == 0).sum()),
        "categories_with_fewer_than_k_train_patches": {str(n): int(c) for n, c in per_cat.items() if c < cfg.k},
        "mean_distance_1nn": float(np.mean(dist[valid > 0, 0])) if (valid > 0).any() else None,
        "theme_coverage": theme_coverage(cand, table),
    }
    seconds = time.perf_counter() - t0
    runinfo.write_run_json(
        out_dir,
        "prefilter",
        cfg,
        None,
        {"features": str(features_path), "patches_csv": str(patches_csv), **summary},
        measured={"seconds": round(seconds, 3)},
    )
    return {**summary, "seconds": seconds}


# --------------------------------------------------------------------------------------------------
# Training-time helpers


def load_candidates(path: str | Path, k: int | None = None, num_rows: int | None = None) -> np.ndarray:
    """``(P, k)`` int64 candidates (the first ``k`` columns: the k nearest); ``k`` larger than stored -> error."""
    cand = io.load_table_array(path, np.int64, num_rows, "candidates not found (run `retrievegan prefilter`)")
    if k is not None:
        if k > cand.shape[1]:
            raise ConfigError(
                f"retrieval k = {k} but {path} holds only {cand.shape[1]} candidates per object (raise prefilter.k)"
            )
        cand = cand[:, :k]
    return cand


def gather_candidates(candidates: torch.Tensor, object_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates of a padded batch of objects.

    ``candidates`` ``(P, K)`` int64 (``-1`` padding); ``object_rows`` ``(B, N)`` int64 patch rows of the
    objects (``-1`` for padding objects). Returns ``ids`` ``(B, N, K)`` (``-1`` where missing) and
    ``mask`` ``(B, N, K)`` bool (a real candidate of a real object).
    """
    safe = object_rows.clamp(min=0)
    ids = candidates[safe]  # (B, N, K)
    ids = ids.masked_fill((object_rows < 0)[..., None], -1)
    return ids, ids >= 0


def add_ground_truth(ids: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Append each object's ground-truth patch to its candidates (GT-selection loss, paper §3.3).

    ``ids`` ``(..., K)`` int64 candidates (``-1`` padding), ``gt`` ``(...)`` int64 ground-truth patch ids
    (``-1``: none). Returns ``(ids (..., K + 1), position (...))``: the GT patch is the last column unless
    it already is a candidate (then that column is its position and the new column is ``-1``);
    ``position`` is ``-1`` where ``gt`` is ``-1``. Combine with ``mask = ids >= 0``.
    """
    present = (ids == gt[..., None]) & (gt[..., None] >= 0)
    already = present.any(-1)
    extra = torch.where(already, torch.full_like(gt, -1), gt)
    out = torch.cat([ids, extra[..., None]], dim=-1)
    position = torch.where(already, present.int().argmax(-1), torch.full_like(gt, ids.shape[-1]))
    position = torch.where(gt >= 0, position, torch.full_like(gt, -1))
    return out, position
